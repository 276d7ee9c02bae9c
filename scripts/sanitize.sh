#!/usr/bin/env bash
# Runs the whole ctest suite under AddressSanitizer + UndefinedBehaviorSanitizer (issue 14): builds the project (the
# engine, the `cdm` command line, the ITK filters, the examples and every test) into build-sanitize/ with GCC's
# -fsanitize=address,undefined, then runs ctest there. Any sanitizer report fails its test (UBSan halts on the
# first error; ASan aborts). LibTorch and ITK come as installed (not instrumented): ASan still checks every access our
# code makes, also into their buffers, and every allocation passes through its interceptors. Leaks are checked, with
# only the third-party libraries' own start-up allocations suppressed (test/sanitizer/lsan.supp). Not part of the
# README's test command (it takes a while on two cores).
#
#   scripts/sanitize.sh [ctest options, e.g. -R Streaming]
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh >/dev/null
BUILD_DIR=build-sanitize
launcher=()
command -v ccache >/dev/null 2>&1 && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
sanitize="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=ON -DCDM_LINK_TCMALLOC=OFF \
  -DCMAKE_C_FLAGS="$sanitize" -DCMAKE_CXX_FLAGS="$sanitize" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" \
  -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined" "${launcher[@]}" >/dev/null
start=$(date +%s)
cmake --build "$BUILD_DIR" >"$BUILD_DIR/build.log" 2>&1 || { tail -n 40 "$BUILD_DIR/build.log" >&2; exit 1; }
echo "scripts/sanitize.sh: built in $(($(date +%s) - start)) s"

root=$(pwd)
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:strict_string_checks=1:check_initialization_order=1:detect_stack_use_after_return=1"
export LSAN_OPTIONS="suppressions=$root/test/sanitizer/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:suppressions=$root/test/sanitizer/ubsan.supp"
start=$(date +%s)
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "${CDM_TEST_JOBS:-2}" --timeout 1800 "$@"
echo "scripts/sanitize.sh: ctest under ASan + UBSan in $(($(date +%s) - start)) s"
