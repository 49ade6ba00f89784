#!/bin/sh
# The test suite under AddressSanitizer + UndefinedBehaviorSanitizer: configures BUILD (default
# build-asan) with -DLQ_SANITIZE=ON, builds and runs ctest. Any sanitizer report fails the test that
# triggered it (halt_on_error, no recovery from UBSan).
# Usage: sh tools/sanitize.sh [BUILD] [JOBS] [AREA...]
#   no AREA: every target and the whole suite. AREA (a tests/ folder: io, formats, model, tokenizer,
#   vit, vae, ...): only test_AREA and the tests labelled AREA, for a quicker check of the parsers on a
#   small machine. Tests that run the CLI use lance-quant built here too, unless LQ_TEST_EXE names
#   another binary (e.g. build/lance-quant: then only the in-process code runs under the sanitizers).
#   BUILD may be the fuzz build (build-fuzz): its libraries are instrumented already, so only the
#   test files are compiled.
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build-asan}
jobs=${2:-$(nproc)}
[ $# -gt 0 ] && shift
[ $# -gt 0 ] && shift
launcher=""
command -v ccache >/dev/null 2>&1 && launcher="-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache"
# A fuzz build (clang, -DLQ_BUILD_FUZZ=ON, see tools/fuzz/CMakeLists.txt) already instruments every
# library with ASan + UBSan: reuse it as it is (its objects, not a second instrumented copy).
sanitize="-DLQ_SANITIZE=ON"
if [ -f "$build/CMakeCache.txt" ] && grep -q '^LQ_BUILD_FUZZ:BOOL=ON' "$build/CMakeCache.txt"; then
  sanitize=""
fi
cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo $sanitize $launcher >/dev/null
# Excluded, with the reason:
#   (none: every test runs; tests that measure resident memory skip themselves under ASan, which
#    keeps freed memory in quarantine and maps shadow memory, see LQ_UNDER_ASAN in the tests)
export ASAN_OPTIONS="halt_on_error=1:abort_on_error=0:detect_leaks=1:allocator_may_return_null=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export LQ_UNDER_ASAN=1
if [ $# -eq 0 ]; then
  cmake -S "$src" -B "$build" -DLQ_TESTS_BUILD_EXE=ON >/dev/null
  cmake --build "$build" -j "$jobs"
  cd "$build" && ctest --output-on-failure -j "$jobs"
else
  targets=""
  if [ -n "${LQ_TEST_EXE:-}" ]; then
    cmake -S "$src" -B "$build" -DLQ_TESTS_BUILD_EXE=OFF >/dev/null
  else
    cmake -S "$src" -B "$build" -DLQ_TESTS_BUILD_EXE=ON >/dev/null
    targets="lance-quant"
  fi
  labels=""
  for a in "$@"; do
    targets="$targets test_$a"
    labels="${labels:+$labels|}$a"
  done
  cmake --build "$build" -j "$jobs" --target $targets
  cd "$build" && ctest --output-on-failure -j "$jobs" -L "^($labels)\$"
fi
