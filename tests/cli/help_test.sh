#!/bin/sh
# Help texts say what the commands do (issue 14): no printf escapes left in them, the top-level help
# lists only bench subcommands that exist, quantize gives its default group size, calibrate's shard
# rule reads "k % N == I". Runs the built executable ($LQ_EXE).
set -u
LQ=${LQ_EXE:?}
fail=0
check() {  # check DESCRIPTION COMMAND...: fails the test when COMMAND fails
  desc=$1; shift
  if ! "$@"; then echo "FAIL: $desc"; fail=1; fi
}
for c in inspect synth tokenize calibrate merge-stats quantize demo eval export run bench; do
  out=$("$LQ" $c --help 2>&1) || { echo "FAIL: $c --help exits non-zero"; fail=1; }
  case "$out" in *%%*) echo "FAIL: $c --help prints a doubled %%"; fail=1 ;; esac
done
check "calibrate --help: shard rule" sh -c "'$LQ' calibrate --help | grep -q 'k % N == I'"
check "quantize --help: default group size" sh -c "'$LQ' quantize --help | grep -q 'default 128'"
# Every subcommand the top-level help names on its bench line exists.
line=$("$LQ" --help | grep '^  bench ')
subs=$(echo "$line" | sed 's/.*benchmarks: //; s/,//g')
[ -n "$subs" ] || { echo "FAIL: no bench subcommands listed: $line"; fail=1; }
for s in $subs; do
  check "bench $s (listed in --help) exists" sh -c "'$LQ' bench $s --help >/dev/null 2>&1"
done
exit $fail
