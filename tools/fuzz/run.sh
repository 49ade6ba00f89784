#!/bin/sh
# Builds the libFuzzer targets with clang (ASan + UBSan) and fuzzes the safetensors header parser for
# SECONDS seconds (default 60) on a scratch copy of the committed seed corpus, in one process; then the
# torch.save reader for the same time, seeded with tests/io/data/torch_save_small.pth.
# Prints libFuzzer's final statistics and the number of crash artifacts; exits 1 if any.
# Usage: tools/fuzz/run.sh [SECONDS]   (env: LQ_FUZZ_BUILD = build dir, default build-fuzz)
set -eu
seconds=${1:-60}
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${LQ_FUZZ_BUILD:-$src/build-fuzz}
work=$src/tools/fuzz/corpus-work   # git-ignored: the grown corpus and any crash artifacts

cmake -S "$src" -B "$build" -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DLQ_BUILD_FUZZ=ON -DLQ_BUILD_TESTS=OFF -DLQ_BUILD_BENCH=OFF >/dev/null
ninja -C "$build" -j2 fuzz_safetensors fuzz_torch_checkpoint

rm -rf "$work"
mkdir -p "$work/corpus" "$work/artifacts"
cp "$src"/tools/fuzz/corpus/* "$work/corpus/"

status=0
"$build/tools/fuzz/fuzz_safetensors" "$work/corpus" \
  -dict="$src/tools/fuzz/safetensors.dict" -max_total_time="$seconds" -max_len=4096 \
  -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$work/artifacts/" || status=$?

crashes=$(find "$work/artifacts" -type f | wc -l)
echo "fuzz_safetensors: ran ${seconds}s, exit status $status, crash artifacts: $crashes (in $work/artifacts)"

mkdir -p "$work/torch-corpus" "$work/torch-artifacts"
cp "$src"/tests/io/data/torch_save_small.pth "$work/torch-corpus/"
tstatus=0
"$build/tools/fuzz/fuzz_torch_checkpoint" "$work/torch-corpus" -max_total_time="$seconds" -max_len=8192 \
  -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$work/torch-artifacts/" || tstatus=$?
tcrashes=$(find "$work/torch-artifacts" -type f | wc -l)
echo "fuzz_torch_checkpoint: ran ${seconds}s, exit status $tstatus, crash artifacts: $tcrashes (in $work/torch-artifacts)"
[ "$tstatus" -eq 0 ] && [ "$tcrashes" -eq 0 ] || status=1
crashes=$((crashes + tcrashes))
[ "$status" -eq 0 ] && [ "$crashes" -eq 0 ]
