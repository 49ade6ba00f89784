#!/bin/sh
# The whole test suite under AddressSanitizer + UndefinedBehaviorSanitizer: configures BUILD (default
# build-asan) with -DLQ_SANITIZE=ON, builds every target and runs ctest. Any sanitizer report fails
# the test that triggered it (halt_on_error, no recovery from UBSan).
# Usage: sh tools/sanitize.sh [BUILD] [JOBS]
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build-asan}
jobs=${2:-$(nproc)}
cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLQ_SANITIZE=ON >/dev/null
cmake --build "$build" -j "$jobs"
# Excluded, with the reason:
#   (none: every test runs; tests that measure resident memory skip themselves under ASan, which
#    keeps freed memory in quarantine and maps shadow memory, see LQ_UNDER_ASAN in the tests)
export ASAN_OPTIONS="halt_on_error=1:abort_on_error=0:detect_leaks=1:allocator_may_return_null=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export LQ_UNDER_ASAN=1
cd "$build" && ctest --output-on-failure -j "$jobs"
