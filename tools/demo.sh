#!/bin/sh
# The main job on the embedded default model: calibrate both paths, quantize with rtn-int4, awq-int4
# and nvfp4, evaluate each against the original and print a comparison table (see `lance-quant demo --help`).
# The default model is lance-mini from ../shared when present, else a synthetic `small` checkpoint.
set -e
LQ=${1:-build/lance-quant}
OUT=${DEMO_OUT:-demo-out}
exec "$LQ" demo --out "$OUT" ${DEMO_ARGS:-}
