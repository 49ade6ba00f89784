#!/bin/sh
# A model file truncated while a command runs: "input changed during the run", exit status 1 (not
# SIGBUS, 135) and no partial output left (issue 14). Uses a copy of lance-mini from $LQ_SHARED_DIR.
set -u
LQ=${LQ_EXE:?}
M=${LQ_SHARED_DIR:-}/fixtures/lance-mini
[ -f "$M/model.safetensors" ] || { echo "lance-mini fixture not found; skipping"; exit 77; }
work=$(mktemp -d "${LQ_BINARY_DIR:-/tmp}/truncated-input.XXXXXX")
trap 'rm -rf "$work"' EXIT
fail=0

copy() { rm -rf "$work/M"; mkdir -p "$work/M"; cp "$M"/*.json "$M"/merges.txt "$M"/model.safetensors "$M"/calib_prompts.txt "$work/M/"; }

# run --task t2i reads the mapped weights at every step (f32 storage borrows the map).
copy
"$LQ" run "$work/M" --task t2i --prompt "a red circle" --seed 1 --steps 100000 --out "$work/lat.safetensors" >"$work/run.log" 2>&1 &
pid=$!
sleep 3
truncate -s 100000 "$work/M/model.safetensors"
wait $pid
rc=$?
[ $rc -eq 1 ] || { echo "FAIL: run exit status $rc (expected 1)"; cat "$work/run.log"; fail=1; }
grep -q "model.safetensors\] input changed during the run" "$work/run.log" || { echo "FAIL: run message:"; cat "$work/run.log"; fail=1; }
[ ! -e "$work/lat.safetensors" ] || { echo "FAIL: latents written"; fail=1; }

# quantize: its partial output directory is removed.
copy
"$LQ" quantize "$work/M" --scheme awq-int4 --calib "t2i:$work/M/calib_prompts.txt" --calib "text:$work/M/calib_prompts.txt" \
  --out "$work/q" >"$work/q.log" 2>&1 &
pid=$!
i=0
while [ $i -lt 200 ] && ! ls -d "$work"/q.lq-partial-* >/dev/null 2>&1; do sleep 0.1; i=$((i + 1)); done
sleep 1
truncate -s 100000 "$work/M/model.safetensors"
wait $pid
rc=$?
[ $rc -eq 1 ] || { echo "FAIL: quantize exit status $rc (expected 1)"; cat "$work/q.log"; fail=1; }
grep -q "input changed during the run" "$work/q.log" || { echo "FAIL: quantize message:"; cat "$work/q.log"; fail=1; }
if ls -d "$work"/q.lq-partial-* "$work/q" >/dev/null 2>&1; then echo "FAIL: output left behind"; ls "$work"; fail=1; fi
exit $fail
