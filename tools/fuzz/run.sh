#!/bin/sh
# Builds the libFuzzer targets with clang (ASan + UBSan) and fuzzes each for SECONDS seconds (default
# 60) on a scratch copy of its seed corpus, one process per target, JOBS targets at a time (default 2).
# Prints libFuzzer's final statistics (executions, corpus size) per target and the number of crash
# artifacts; exits 1 if any target crashed.
# Usage: tools/fuzz/run.sh [SECONDS] [TARGET...]
#   targets: safetensors torch_checkpoint lance_quant_v1 autoawq compressed_tensors modelopt config tokenizer
#            vision_config (default all)
#   env: LQ_FUZZ_BUILD = build dir (default build-fuzz), LQ_FUZZ_JOBS = targets at a time (default 2),
#        LQ_FUZZ_PREBUILT=1 = use the binaries already in LQ_FUZZ_BUILD/tools/fuzz (no configure/build)
set -eu
seconds=${1:-60}
[ $# -gt 0 ] && shift
targets=${*:-"safetensors torch_checkpoint lance_quant_v1 autoawq compressed_tensors modelopt config tokenizer vision_config"}
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${LQ_FUZZ_BUILD:-$src/build-fuzz}
jobs=${LQ_FUZZ_JOBS:-2}
work=$src/tools/fuzz/corpus-work   # git-ignored: the grown corpora and any crash artifacts

if [ -z "${LQ_FUZZ_PREBUILT:-}" ]; then
  cmake -S "$src" -B "$build" -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DLQ_BUILD_FUZZ=ON -DLQ_BUILD_TESTS=OFF -DLQ_BUILD_BENCH=OFF >/dev/null
  names=""
  for t in $targets; do names="$names fuzz_$t"; done
  ninja -C "$build" -j2 $names make_seeds
fi

mkdir -p "$work"
"$build/tools/fuzz/make_seeds" "$work/seeds" >/dev/null

run_one() {
  t=$1
  dir="$work/$t"
  rm -rf "$dir"
  mkdir -p "$dir/corpus" "$dir/artifacts"
  if [ "$t" = safetensors ]; then
    cp "$src"/tools/fuzz/corpus/* "$dir/corpus/"
    extra="-dict=$src/tools/fuzz/safetensors.dict -max_len=4096"
  elif [ "$t" = torch_checkpoint ]; then
    cp "$src"/tests/io/data/torch_save_small.pth "$dir/corpus/"
    extra="-max_len=8192"
  else
    cp "$work/seeds/$(echo "$t" | tr _ -)"/* "$dir/corpus/" 2>/dev/null || cp "$work/seeds/$t"/* "$dir/corpus/"
    extra="-max_len=65536"
  fi
  status=0
  "$build/tools/fuzz/fuzz_$t" "$dir/corpus" $extra -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$dir/artifacts/" >"$dir/log.txt" 2>&1 || status=$?
  crashes=$(find "$dir/artifacts" -type f | wc -l)
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$dir/log.txt" | grep -o '[0-9]*$' || echo "?")
  corpus=$(find "$dir/corpus" -type f | wc -l)
  echo "fuzz_$t: ${seconds}s, exit status $status, executions $execs, corpus $corpus files, crash artifacts $crashes" \
    "(log $dir/log.txt)" | tee "$dir/summary.txt"
}

pids=""
n=0
for t in $targets; do
  run_one "$t" &
  pids="$pids $!"
  n=$((n + 1))
  if [ "$n" -ge "$jobs" ]; then
    for p in $pids; do wait "$p" || true; done
    pids=""
    n=0
  fi
done
for p in $pids; do wait "$p" || true; done

failed=0
for t in $targets; do
  grep -q "crash artifacts 0" "$work/$t/summary.txt" && grep -q "exit status 0" "$work/$t/summary.txt" || failed=1
done
exit $failed
