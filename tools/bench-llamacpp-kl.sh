#!/bin/sh
# Our GGUF exports next to llama.cpp's own imatrix quantization of the same model, both measured by
# llama.cpp (llama-perplexity --kl-divergence on held-out text), and the same files measured by our
# engine (`lance-quant import` + `eval`): one evaluator per column, both sides through it.
#
#   sh tools/bench-llamacpp-kl.sh LLAMA_BUILD_DIR [OUT_DIR]
#
# LLAMA_BUILD_DIR holds bin/llama-imatrix, bin/llama-quantize, bin/llama-perplexity (a CPU build is
# enough; the benchmark is not part of CI). Environment:
#   LQ_EXE     lance-quant binary (default build/lance-quant)
#   LQ_MODEL   dense model (default ../shared/fixtures/lance-mini)
#   LQ_TYPES   file types (default "q4_0 q4_1 q4_k_s q4_k_m q5_k_m q6_k iq4_xs")
#   LQ_CTX     context of every llama.cpp run (default 256: lance-mini was trained on 256-token windows;
#              llama-perplexity scores the second half of each chunk)
#   LQ_THREADS threads (default 2)
#   LQ_VARIANTS our exports per type (default "gptq"): gptq = `export --stats S --gptq` (GPTQ codes with
#              the calibration X^T X), stats = `export --stats S` (importance-weighted searches only)
#   LQ_OURS_EVAL=1  also evaluate every file in our engine (slower)
#   LQ_EXTRA   extra rows for our engine: "name=DIR ..." quantized checkpoints of LQ_MODEL (eval only)
# Prints a Markdown table; every command runs from the repository root and is echoed to OUT/commands.log.
# Finished steps (files, KL logs) in OUT are reused: delete OUT/VARIANT-TYPE and OUT/kld-VARIANT-TYPE.log to redo one.
set -eu
LLAMA=${1:?usage: bench-llamacpp-kl.sh LLAMA_BUILD_DIR [OUT_DIR]}
OUT=${2:-bench-kl}
EXE=${LQ_EXE:-build/lance-quant}
M=${LQ_MODEL:-../shared/fixtures/lance-mini}
TYPES=${LQ_TYPES:-"q4_0 q4_1 q4_k_s q4_k_m q5_k_m q6_k iq4_xs"}
VARIANTS=${LQ_VARIANTS:-gptq}
CTX=${LQ_CTX:-256}
T=${LQ_THREADS:-2}
CALIB=data/calib/text.txt
for b in llama-imatrix llama-quantize llama-perplexity; do
  [ -x "$LLAMA/bin/$b" ] || { echo "missing $LLAMA/bin/$b" >&2; exit 2; }
done
[ -x "$EXE" ] || { echo "missing $EXE (build lance-quant first)" >&2; exit 2; }
mkdir -p "$OUT"
LOG="$OUT/commands.log"
run() { echo "+ $*" >> "$LOG"; "$@"; }

# Held-out text: lance-mini's two validation files, one after the other.
cat "$M/val_tinystories.txt" "$M/val_brown.txt" > "$OUT/heldout.txt"

# 1. The same calibration text for both: our statistics (und path; windows of CTX tokens, as the
#    imatrix run's chunks; with each linear's X^T X for --gptq) and llama.cpp's importance matrix on our
#    F32 export.
[ -f "$OUT/stats-h.safetensors" ] || run "$EXE" calibrate "$M" --calib "text:$CALIB" --seq-len "$CTX" --allow-partial \
  --hessian --threads "$T" --out "$OUT/stats-h.safetensors" > "$OUT/calibrate.log"
[ -f "$OUT/f32/model.gguf" ] || run "$EXE" export "$M" --to gguf --type f32 --out "$OUT/f32" > /dev/null
[ -f "$OUT/imatrix.gguf" ] || run "$LLAMA/bin/llama-imatrix" -m "$OUT/f32/model.gguf" -f "$CALIB" -c "$CTX" -b "$CTX" \
  -t "$T" -o "$OUT/imatrix.gguf" > "$OUT/imatrix.log" 2>&1

# 2. The base logits (F32 export) on the held-out text.
[ -f "$OUT/base.kld" ] || run "$LLAMA/bin/llama-perplexity" -m "$OUT/f32/model.gguf" -f "$OUT/heldout.txt" -c "$CTX" \
  -b "$CTX" -t "$T" --kl-divergence-base "$OUT/base.kld" > "$OUT/base.log" 2>&1

kld() {  # FILE.gguf NAME -> "mean_kl+-err top1" (a finished log is reused)
  grep -q '^Mean *KLD:' "$OUT/kld-$2.log" 2>/dev/null || \
    run "$LLAMA/bin/llama-perplexity" -m "$1" -f "$OUT/heldout.txt" -c "$CTX" -b "$CTX" -t "$T" \
      --kl-divergence-base "$OUT/base.kld" --kl-divergence > "$OUT/kld-$2.log" 2>&1 || true
  kl=$(awk '/^Mean +KLD:/ {print $3 "+-" $5; exit}' "$OUT/kld-$2.log")
  # Same top-1 from the summary, else from the last chunk's running value (a run that died while printing
  # its summary after the last chunk).
  top=$(awk '/^Same top p:/ {print $4; exit}' "$OUT/kld-$2.log")
  [ -n "$top" ] || top=$(awk '$3 == "±" && $15 ~ /^[0-9.]+$/ {t = $15} END {print t}' "$OUT/kld-$2.log")
  [ -n "$kl" ] || { echo "llama-perplexity gave no mean KLD: $OUT/kld-$2.log" >&2; exit 1; }
  echo "$kl $top"
}
bpw() {  # FILE.gguf NAME -> "layer-linear bpw, whole-file bpw" (all tensors: bytes * 8 / elements, as
         # llama.cpp's "file size (BPW)"), from `import --json`; leaves the dense import in OUT/imported-NAME
  rm -rf "$OUT/imported-$2"
  run "$EXE" import "$1" --base "$M" --out "$OUT/imported-$2" --json > "$OUT/import-$2.json"
  python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print('%.4f %.4f' % (j['linear_bpw'], j['file_bpw']))" \
    "$OUT/import-$2.json"
}
ours_eval() {  # DIR NAME -> "kl top1"
  if [ "${LQ_OURS_EVAL:-0}" != 1 ]; then echo "- -"; return; fi
  rm -rf "$OUT/report-$2"
  run "$EXE" eval "$M" "$1" --out "$OUT/report-$2" --text "$M/val_tinystories.txt" --text "$M/val_brown.txt" \
    --window "$CTX" --no-chat --no-t2i --threads "$T" --quiet > /dev/null
  python3 -c "import json,sys; u=json.load(open(sys.argv[1]))['und']; print('%.6f %.2f' % (u['kl_mean'], 100*u['top1_agreement']))" \
    "$OUT/report-$2/report.json"
}

echo "| file type | who | layer-linear bpw | whole-file bpw | KL (llama.cpp) | same top-1 (llama.cpp) | KL (our engine) | top-1 (our engine) |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
for t in $TYPES; do
  [ -f "$OUT/llama-$t.gguf" ] || run "$LLAMA/bin/llama-quantize" --imatrix "$OUT/imatrix.gguf" "$OUT/f32/model.gguf" \
    "$OUT/llama-$t.gguf" "$(echo "$t" | tr a-z A-Z)" "$T" > "$OUT/quantize-$t.log" 2>&1
  for v in $VARIANTS; do
    case $v in
      gptq) flags="--gptq" ;;
      stats) flags="" ;;
      *) echo "unknown variant $v" >&2; exit 2 ;;
    esac
    [ -f "$OUT/$v-$t/model.gguf" ] || run "$EXE" export "$M" --to gguf --type "$t" --stats "$OUT/stats-h.safetensors" \
      $flags --out "$OUT/$v-$t" > "$OUT/export-$v-$t.log"
  done
  for who in llama $VARIANTS; do
    f="$OUT/$who-$t/model.gguf"
    [ "$who" = llama ] && f="$OUT/llama-$t.gguf"
    set -- $(kld "$f" "$who-$t") $(bpw "$f" "$who-$t")
    set -- "$@" $(ours_eval "$OUT/imported-$who-$t" "$who-$t")
    rm -rf "$OUT/imported-$who-$t"
    case $who in
      llama) label="llama.cpp imatrix" ;;
      gptq) label="lance-quant --stats --gptq" ;;
      *) label="lance-quant --stats" ;;
    esac
    echo "| $t | $label | $3 | $4 | $1 | $2 | $5 | $6 |"
  done
done
# Our own schemes (checkpoints of LQ_MODEL), in our engine only.
for e in ${LQ_EXTRA:-}; do
  name=${e%%=*}
  dir=${e#*=}
  set -- $(LQ_OURS_EVAL=1 ours_eval "$dir" "extra-$name")
  echo "| $name | lance-quant checkpoint | - | - | - | - | $1 | $2 |"
done
