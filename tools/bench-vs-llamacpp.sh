#!/bin/sh
# Decode speed of the synthetic Lance 3B against llama.cpp (issue 21), prepared: interleaved rounds of
#   llama-bench on a Q4_0 GGUF of the same checkpoint's understanding path (llama-quantize's default
#   mix: Q4_0 linears, Q6_K output tensor), 2 threads, OMP_WAIT_POLICY=PASSIVE, and
#   lance-quant bench decode of the bf16 synth vs its rtn-int4 checkpoint with the lm_head stored
#   (bf16), INT8 and INT4 (the 4-bit kernels are the same for rtn-int4 and awq-int4 of one group size),
# then the tokens/s table and our / llama.cpp ratios; and the KL of each lm_head option on lance-mini
# (lance-quant eval; llama.cpp Q4_0's KL on lance-mini comes from the GGUF evaluation of issue 15).
#
#   LLAMA_BIN=/path/to/llama.cpp/build/bin sh tools/bench-vs-llamacpp.sh
# Needs llama-bench and llama-quantize in LLAMA_BIN (default /work/scratch/llama.cpp/build/bin), ~20 GB
# of scratch in LQ_VS_DIR (default /tmp/lq-vs-llamacpp: bf16 synth 6.2 GB, f16 GGUF, Q4_0 GGUF, our
# checkpoint), and ~40 minutes on 2 cores (synth + quantize + export dominate; kept for reruns).
# LQ_VS_ROUNDS (default 3), LQ_VS_TOKENS (decoded tokens per round, default 64), LQ_VS_THREADS (2).
set -eu
cd "$(dirname "$0")/.."
SRC=$(pwd)
LQ=${LQ_EXE:-$SRC/build/lance-quant}
LLAMA_BIN=${LLAMA_BIN:-/work/scratch/llama.cpp/build/bin}
DIR=${LQ_VS_DIR:-/tmp/lq-vs-llamacpp}
ROUNDS=${LQ_VS_ROUNDS:-3}
TOKENS=${LQ_VS_TOKENS:-64}
THREADS=${LQ_VS_THREADS:-2}
for b in llama-bench llama-quantize; do
  if [ ! -x "$LLAMA_BIN/$b" ]; then
    echo "bench-vs-llamacpp: $LLAMA_BIN/$b not found (build llama.cpp for the benchmark, set LLAMA_BIN)" >&2
    exit 77
  fi
done
[ -x "$LQ" ] || { echo "bench-vs-llamacpp: $LQ not built" >&2; exit 1; }
mkdir -p "$DIR"
M=$DIR/synth3b Q=$DIR/synth3b-rtn4 F16=$DIR/synth3b-und-f16 Q40=$DIR/synth3b-und-q4_0.gguf
[ -d "$M" ] || "$LQ" synth --preset lance-3b --dtype bf16 --out "$M"
[ -d "$Q" ] || "$LQ" quantize "$M" --scheme rtn-int4 --group-size 128 --out "$Q"
[ -d "$F16" ] || "$LQ" export "$M" --to gguf --path und --type f16 --out "$F16"
if [ ! -f "$Q40" ]; then
  "$LLAMA_BIN/llama-quantize" "$(ls "$F16"/*.gguf | head -n1)" "$Q40" Q4_0 >/dev/null
fi

printf '%-6s %-22s %12s\n' round case tokens/s
for r in $(seq "$ROUNDS"); do
  t=$(OMP_WAIT_POLICY=PASSIVE "$LLAMA_BIN/llama-bench" -m "$Q40" -t "$THREADS" -p 0 -n "$TOKENS" -r 1 -o json 2>/dev/null |
      sed -n 's/.*"avg_ts": \([0-9.e+-]*\).*/\1/p' | head -n1)
  printf '%-6s %-22s %12s\n' "$r" "llama.cpp Q4_0" "$t"
  "$LQ" bench decode "$M" "$Q" --quant-head stored,int8,int4 --decode-tokens "$TOKENS" --threads "$THREADS" --rounds 1 --json |
    python3 -c 'import json, sys
j = json.load(sys.stdin)
print("%-6s %-22s %12.2f" % (sys.argv[1], "lance-quant bf16 model", j["base"]["decode_tokens_per_s"]))
for q in j["quantized_runs"]:
    print("%-6s %-22s %12.2f" % (sys.argv[1], "lance-quant head " + q["head"], q["decode_tokens_per_s"]))' "$r"
done

SHARED=${LQ_SHARED_DIR:-$SRC/../shared}
MINI=$SHARED/fixtures/lance-mini
if [ -d "$MINI" ]; then
  echo "KL on lance-mini (rtn-int4 g128 checkpoint; lm_head stored / int8 / int4):"
  [ -d "$DIR/mini-rtn4" ] || "$LQ" quantize "$MINI" --scheme rtn-int4 --group-size 128 --out "$DIR/mini-rtn4" >/dev/null
  for h in stored int8 int4; do
    "$LQ" eval "$MINI" "$DIR/mini-rtn4" --head "$h" --no-chat --no-t2i --text "$MINI/val_tinystories.txt" \
      --text "$MINI/val_brown.txt" --out "$DIR/eval-$h" --quiet | sed "s/^/  head $h: /" | head -n1
  done
fi
