#!/bin/sh
# The main job on the embedded default: synthesize a small Lance-shaped model and inspect it.
set -e
LQ=${1:-build/lance-quant}
OUT=${DEMO_OUT:-demo-out}
mkdir -p "$OUT"
"$LQ" synth --preset tiny --out "$OUT/tiny-lance" --force
"$LQ" inspect "$OUT/tiny-lance"
