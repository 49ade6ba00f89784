#!/bin/sh
# `make demo` builds only the program the demo runs (issue 14: it built every test and benchmark first,
# 13 minutes on a loaded 2-core machine), and `make sanitize` is a documented target. Dry runs only.
set -u
src=${LQ_SOURCE_DIR:?}
command -v make >/dev/null || { echo "make not installed; skipping"; exit 77; }
fail=0
plan=$(make -n -C "$src" demo BUILD=/nonexistent-build 2>&1)
echo "$plan" | grep -q -- "--build /nonexistent-build .*--target lance-quant" || { echo "FAIL: demo does not build only lance-quant:"; echo "$plan"; fail=1; }
if echo "$plan" | grep -- "cmake --build" | grep -v -- "--target lance-quant" | grep -q .; then
  echo "FAIL: demo runs an unrestricted build:"; echo "$plan"; fail=1
fi
make -n -C "$src" sanitize 2>&1 | grep -q "tools/sanitize.sh build-asan" || { echo "FAIL: no sanitize target"; fail=1; }
exit $fail
