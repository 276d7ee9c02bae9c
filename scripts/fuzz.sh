#!/usr/bin/env bash
# Fuzzes what reads untrusted files (issue 14): the `.cdm` model-file reader (test/fuzz/cdmModelFileFuzzer.cxx) and
# the image input checks (test/fuzz/cdmImageInputFuzzer.cxx), with libFuzzer under AddressSanitizer +
# UndefinedBehaviorSanitizer (clang from Debian), starting from the seeds in test/fuzz/corpus. Builds into
# build-fuzz/ (the engine and the image reader instrumented; LibTorch and ITK as installed), runs each target for
# --runs inputs (default 10^6) and prints a table of runs, seconds, new corpus entries and crashes; a crash leaves
# its input in build-fuzz/<target>-crash-* and makes the exit code 1. Not part of the README's test command.
#
#   scripts/fuzz.sh [--runs N] [--max-seconds S] [--targets model-file,image-input] [--itk-dir ITK_BUILD_TREE]
#
# The image target needs ITK headers that clang can compile: Debian's ITK 5.2 refuses any compiler but GCC (its
# itk_compiler_detection.h), so it is built only with --itk-dir naming an ITK >= 5.4 build tree (for example the one
# scripts/build-itk-versions.sh makes); without it, only the model-file target is built and run.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=1000000
MAX_SECONDS=0 # libFuzzer's -max_total_time: stop a target after S seconds even before --runs (0: no limit)
TARGETS=model-file,image-input
ITK_DIR_OPTION=()
while (($#)); do
  case "$1" in
    --runs) RUNS="$2"; shift ;;
    --max-seconds) MAX_SECONDS="$2"; shift ;;
    --targets) TARGETS="$2"; shift ;;
    --itk-dir) ITK_DIR_OPTION=(-DCDM_USE_ITK=ON "-DITK_DIR=$2" -DCDM_STANDALONE=ON); shift ;;
    -h|--help) sed -n 2,13p "$0"; exit 0 ;;
    *) echo "scripts/fuzz.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
  shift
done
./scripts/install-deps.sh >/dev/null
command -v clang++ >/dev/null || { SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"; $SUDO apt-get install -y -qq clang >/dev/null; }
launcher=()
command -v ccache >/dev/null 2>&1 && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
sanitize="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g"
cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ -DCDM_LINK_TCMALLOC=OFF \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_FLAGS="$sanitize -fsanitize=fuzzer-no-link" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined" \
  -DBUILD_TESTING=OFF -DCDM_BUILD_FUZZERS=ON "${launcher[@]}" >/dev/null
fuzz_targets=(cdmModelFileFuzzer)
if ((${#ITK_DIR_OPTION[@]})); then
  cmake -S . -B build-fuzz "${ITK_DIR_OPTION[@]}" >/dev/null
  fuzz_targets+=(cdmImageInputFuzzer)
else
  cmake -S . -B build-fuzz -DCDM_USE_ITK=OFF >/dev/null
  TARGETS=$(echo ",$TARGETS," | sed 's/,image-input,/,/g; s/^,//; s/,$//')
  echo "scripts/fuzz.sh: no --itk-dir: the image-input target is skipped (see --help)" >&2
fi
cmake --build build-fuzz --target "${fuzz_targets[@]}" >build-fuzz/build.log 2>&1 ||
  { tail -n 30 build-fuzz/build.log >&2; exit 1; }

# LibTorch and ITK are not instrumented: their allocations and exceptions pass through ASan's interceptors, and a
# leak report at exit would blame their caches, so leaks are not checked.
export ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=0:abort_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export OMP_NUM_THREADS=1
status=0
rows=()
IFS=, read -r -a target_list <<<"$TARGETS"
for target in "${target_list[@]}"; do
  case "$target" in
    model-file) binary=cdmModelFileFuzzer ;;
    image-input) binary=cdmImageInputFuzzer ;;
    *) echo "scripts/fuzz.sh: unknown target '$target'" >&2; exit 2 ;;
  esac
  corpus="build-fuzz/corpus-$target"
  mkdir -p "$corpus"
  before=$(ls "$corpus" | wc -l)
  start=$(date +%s)
  log="build-fuzz/$target.log"
  # -rss_limit_mb: a header that made the reader allocate what the file only claims would show as a crash.
  if (cd build-fuzz && "./test/fuzz/$binary" -runs="$RUNS" -max_total_time="$MAX_SECONDS" -max_len=4096 -rss_limit_mb=2048 -timeout=20 \
        -artifact_prefix="$target-crash-" "corpus-$target" "../test/fuzz/corpus/$target") >"$log" 2>&1; then
    crashes=0
  else
    crashes=$(ls build-fuzz/"$target"-crash-* 2>/dev/null | wc -l)
    [[ "$crashes" -gt 0 ]] || crashes="error (see $log)"
    status=1
  fi
  seconds=$(( $(date +%s) - start ))
  done_runs=$(grep -a -oE "Done [0-9]+ runs" "$log" | grep -oE "[0-9]+" | tail -n 1 || true)
  rows+=("| $target | ${done_runs:-?} | $seconds | $(( $(ls "$corpus" | wc -l) - before )) | $crashes |")
done
echo "| target | runs | seconds | new corpus entries | crashes |"
echo "| --- | --- | --- | --- | --- |"
printf '%s\n' "${rows[@]}"
exit $status
