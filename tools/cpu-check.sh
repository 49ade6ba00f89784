#!/bin/sh
# The CPU check of issue 21, prepared for a machine with AVX-512 / AMX (e.g. the GPU host's 16-core
# Xeon): builds Release, runs the kernel tests on every GEMM / 4-bit path this CPU has (each against
# its reference; the emulated AVX-512 and AMX paths run everywhere, the real ones where present),
# then prints the "done when" numbers as ratios measured side by side in one run:
#   1. bench kernels: bf16 and INT4 g64 / g128 / NVFP4 at 1, 64, 512, 4096 tokens on 2048->11008 and
#      11008->2048, every kernel on the avx2 GEMM path (today's kernels) and on avx512 and amx where the
#      CPU has them (amx is opt-in in the library: forced here with LQ_GEMM_PATH), interleaved; weights
#      cycle through >= 1 GiB.
#   2. a t2i denoising step (1x32x32 latents, CFG: cond + uncond) and a 512-token text prefill of the
#      synthetic Lance 3B (first LQ_CHECK_LAYERS layers, default 4) with rtn-int4 g128 weights and with
#      bf16 weights, on the avx2 path and the best path, interleaved.
#   3. thread scaling: the same at 1, 2 and all threads (INT4 g64 at 512 tokens; t2i step).
# "Today's" 4-bit kernels for many tokens dequantized 16-row blocks to f32 (0.8-0.95x bf16); the avx2
# rows here already decode 4-bit codes straight into the GEMM's panels. For the exact before/after,
# LQ_CHECK_BASE=<git ref> also builds that ref and times its t2i step and prefill next to this one.
#
#   sh tools/cpu-check.sh                 # ~6-8 minutes on a 16-core host (build ~3 min with ccache cold)
#   LQ_CHECK_QUICK=1 sh tools/cpu-check.sh   # a smoke run (small shapes, 1 round): checks the script
# Environment: LQ_CHECK_DIR (scratch, default /tmp/lq-cpu-check; the synthetic model ~2.6 GB, deleted at
# the end unless LQ_CHECK_KEEP=1), LQ_CHECK_LAYERS, LQ_CHECK_BASE, LQ_CHECK_THREADS (default: nproc),
# LQ_CHECK_BUILD (build directory, default build-cpucheck).
set -eu
cd "$(dirname "$0")/.."
SRC=$(pwd)
DIR=${LQ_CHECK_DIR:-/tmp/lq-cpu-check}
LAYERS=${LQ_CHECK_LAYERS:-4}
THREADS=${LQ_CHECK_THREADS:-$(nproc)}
QUICK=${LQ_CHECK_QUICK:-0}
BUILD=${LQ_CHECK_BUILD:-$SRC/build-cpucheck}
mkdir -p "$DIR"
log() { printf '\n== %s\n' "$*"; }

log "CPU"
grep -m1 'model name' /proc/cpuinfo || true
for f in avx2 fma f16c avx512f avx512bw avx512vl avx512_vnni avx512_bf16 amx_tile amx_bf16 amx_int8; do
  if grep -qw "$f" /proc/cpuinfo; then printf '%s ' "$f"; fi
done
printf '\n%s cores, using %s threads\n' "$(nproc)" "$THREADS"

log "build (Release)"
LAUNCHER=""
command -v ccache >/dev/null 2>&1 && LAUNCHER="-DCMAKE_CXX_COMPILER_LAUNCHER=ccache"
cmake -S "$SRC" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release $LAUNCHER >/dev/null
cmake --build "$BUILD" -j "$(nproc)" --target lance-quant test_kernels test_forward >/dev/null
LQ=$BUILD/lance-quant

log "kernel tests (every path this CPU has; see the 'path available' lines)"
"$BUILD/test_kernels" --gtest_brief=1 2>&1 | grep -E 'available|no AVX|no AMX|bit-identical|PASSED|FAILED|SKIPPED' || true
"$BUILD/test_forward" --gtest_brief=1 --gtest_filter='BlockedAttention*:VecMath*' 2>&1 | grep -E 'exp:|PASSED|FAILED' || true

PATHS=$(for p in amx avx512 avx2; do
  if LQ_GEMM_PATH=$p "$LQ" bench kernels --shapes 64x16 --batches 40 --kernels bf16 --rounds 1 --min-seconds 0 \
       --working-set-mb 1 >/dev/null 2>&1; then echo "$p"; fi; done)
BEST=$(echo "$PATHS" | head -n1)
CMP=$(echo "$PATHS" | tac | paste -sd, -)  # avx2 first (the reference of vs-bf16), then avx512, amx
printf 'GEMM paths: %s (best %s)\n' "$(echo $PATHS)" "$BEST"

log "1. bench kernels (vs-bf16: against bf16 on the avx2 path = today's dense kernel)"
if [ "$QUICK" = 1 ]; then
  "$LQ" bench kernels --threads "$THREADS" --shapes 256x1024 --batches 1,64 --kernels bf16,int4-g64 --gemm-paths "$CMP" \
    --rounds 1 --min-seconds 0.02 --working-set-mb 64
else
  "$LQ" bench kernels --threads "$THREADS" --shapes 2048x11008,11008x2048 --batches 1,64,512,4096 \
    --kernels bf16,int4-g64,int4-g128,nvfp4 --gemm-paths "$CMP" --rounds 2 --min-seconds 0.1 --working-set-mb 1024
fi

log "2. synthetic Lance 3B ($LAYERS layers): t2i step 1x32x32 and 512-token prefill"
M=$DIR/synth3b
Q=$DIR/synth3b-rtn4
GRID=1x32x32
PROMPT=512
if [ "$QUICK" = 1 ]; then
  [ -d "$DIR/tiny" ] || "$LQ" synth --preset small --layers 2 --dtype bf16 --out "$DIR/tiny" >/dev/null
  [ -d "$DIR/tiny-rtn4" ] || "$LQ" quantize "$DIR/tiny" --scheme rtn-int4 --group-size 128 --out "$DIR/tiny-rtn4" >/dev/null
  M=$DIR/tiny Q=$DIR/tiny-rtn4 GRID=1x8x8 PROMPT=64
else
  [ -d "$M" ] || "$LQ" synth --preset lance-3b --layers "$LAYERS" --dtype bf16 --out "$M" >/dev/null
  [ -d "$Q" ] || "$LQ" quantize "$M" --scheme rtn-int4 --group-size 128 --out "$Q" >/dev/null
fi
BASE_LQ=""
if [ -n "${LQ_CHECK_BASE:-}" ]; then
  # The base ref's own build: its t2i step / prefill next to this build's ("today" vs now).
  rm -rf "$DIR/base-src" && mkdir -p "$DIR/base-src"
  git -C "$SRC" archive "$LQ_CHECK_BASE" | tar -x -C "$DIR/base-src"
  cp "$SRC/src/cli/cmd_bench.cpp" "$DIR/base-src/src/cli/cmd_bench.cpp" 2>/dev/null || true
  sed -i 's/kernels::gemm_path()/kernels::simd_path()/g' "$DIR/base-src/src/cli/cmd_bench.cpp"
  if cmake -S "$DIR/base-src" -B "$DIR/base-build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLQ_BUILD_TESTS=OFF \
       -DLQ_BUILD_BENCH=OFF $LAUNCHER >/dev/null && cmake --build "$DIR/base-build" -j "$(nproc)" --target lance-quant >/dev/null; then
    BASE_LQ=$DIR/base-build/lance-quant
  else
    echo "(could not build $LQ_CHECK_BASE with this cmd_bench.cpp: no base columns)"
  fi
fi
step() {  # binary gemm-path model threads -> seconds per t2i step (best of 2)
  LQ_GEMM_PATH=$2 "$1" bench forward "$3" --task t2i --grid "$GRID" --steps 2 --threads "$4" --json 2>/dev/null |
    sed -n 's/.*"step_s_best": \([0-9.e+-]*\).*/\1/p'
}
prefill() {  # binary gemm-path model threads -> prefill seconds
  LQ_GEMM_PATH=$2 "$1" bench forward "$3" --prompt-tokens "$PROMPT" --decode-tokens 0 --threads "$4" --probe-mb 64 --json 2>/dev/null |
    sed -n 's/.*"prefill_s": \([0-9.e+-]*\).*/\1/p'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.2fx", a / b; else printf "-" }'; }
ROUNDS=2
[ "$QUICK" = 1 ] && ROUNDS=1
printf '%-26s %12s %12s %12s %10s\n' "case ($THREADS threads)" "avx2 s" "$BEST s" "base s" "best/avx2"
for what in "t2i-step int4:$Q" "t2i-step bf16:$M" "prefill int4:$Q" "prefill bf16:$M"; do
  kind=${what%% *}
  rest=${what#* }
  label=${rest%%:*}
  model=${rest#*:}
  a=""; b=""; c=""
  for r in $(seq $ROUNDS); do  # interleaved rounds, best kept
    if [ "$kind" = t2i-step ]; then
      x=$(step "$LQ" avx2 "$model" "$THREADS"); y=$(step "$LQ" "$BEST" "$model" "$THREADS")
      z=""; [ -n "$BASE_LQ" ] && z=$(step "$BASE_LQ" "" "$model" "$THREADS")
    else
      x=$(prefill "$LQ" avx2 "$model" "$THREADS"); y=$(prefill "$LQ" "$BEST" "$model" "$THREADS")
      z=""; [ -n "$BASE_LQ" ] && z=$(prefill "$BASE_LQ" "" "$model" "$THREADS")
    fi
    a=$(awk -v o="$a" -v n="$x" 'BEGIN { print (o == "" || n < o) ? n : o }')
    b=$(awk -v o="$b" -v n="$y" 'BEGIN { print (o == "" || n < o) ? n : o }')
    [ -n "$z" ] && c=$(awk -v o="$c" -v n="$z" 'BEGIN { print (o == "" || n < o) ? n : o }')
  done
  printf '%-26s %12s %12s %12s %10s\n' "$kind $label" "$a" "$b" "${c:--}" "$(ratio "$a" "$b")"
  [ -n "$c" ] && printf '%-26s %12s %12s %12s %10s\n' "" "" "" "base/best:" "$(ratio "$c" "$b")"
done

log "3. thread scaling (INT4 g64 at 512 tokens on $BEST; t2i step int4)"
for t in 1 2 "$THREADS"; do
  if [ "$QUICK" = 1 ]; then
    k=$("$LQ" bench kernels --threads "$t" --shapes 256x1024 --batches 64 --kernels int4-g64 --rounds 1 --min-seconds 0.02 \
         --working-set-mb 16 --json | sed -n 's/.*"seconds_per_call": \([0-9.e+-]*\).*/\1/p' | head -n1)
  else
    k=$(LQ_GEMM_PATH=$BEST "$LQ" bench kernels --threads "$t" --shapes 2048x11008 --batches 512 --kernels int4-g64 --rounds 1 \
         --min-seconds 0.1 --working-set-mb 256 --json | sed -n 's/.*"seconds_per_call": \([0-9.e+-]*\).*/\1/p' | head -n1)
  fi
  s=$(step "$LQ" "$BEST" "$Q" "$t")
  printf 'threads %-4s kernel %10s s   t2i step %10s s\n' "$t" "$k" "$s"
done

if [ "${LQ_CHECK_KEEP:-0}" != 1 ]; then rm -rf "$M" "$Q" "$DIR/tiny" "$DIR/tiny-rtn4" "$DIR/base-src" "$DIR/base-build"; fi
log "done"
