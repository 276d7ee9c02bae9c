#!/usr/bin/env bash
# Builds this module as an ITK remote module against ITK's own sources at the given tags (issue 14: ITK 5.4 and
# ITK 6), both ways ITK users build remote modules:
#   1. "external": ITK built alone (a minimal module set), then this module against that build tree
#      (ITKModuleExternal: cmake -DITK_DIR=<itk-build>);
#   2. "in-tree": this module placed in ITK's source tree as Modules/Remote/CDM and built with ITK
#      (-DModule_CDM=ON), the path the README names.
# Each is configured, built and its ctest suite run; a Markdown table of build times and test results per version
# and way is printed and written to <work>/results.md. Long (ITK alone takes tens of minutes per version on 2 cores):
# run it in the background; it is not part of the README's test command. Nothing is downloaded: ITK comes from a
# local git clone or mirror that holds the tags (for example one made with `git clone --mirror`).
#
#   scripts/build-itk-versions.sh --itk-git DIR [--work DIR] [--versions v5.4.7,v6.0b02] [--ways external,in-tree]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
ITK_GIT=""
WORK=/tmp/itk-versions
VERSIONS=v5.4.7,v6.0b02
WAYS=external,in-tree
while (($#)); do
  case "$1" in
    --itk-git) ITK_GIT="$2"; shift ;;
    --work) WORK="$2"; shift ;;
    --versions) VERSIONS="$2"; shift ;;
    --ways) WAYS="$2"; shift ;;
    -h|--help) sed -n 2,15p "$0"; exit 0 ;;
    *) echo "scripts/build-itk-versions.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
  shift
done
if [[ -z "$ITK_GIT" ]] || ! git --git-dir="$ITK_GIT" rev-parse --verify -q HEAD >/dev/null 2>&1; then
  [[ -n "$ITK_GIT" && -d "$ITK_GIT/.git" ]] && ITK_GIT="$ITK_GIT/.git"
  if [[ -z "$ITK_GIT" ]] || ! git --git-dir="$ITK_GIT" rev-parse --verify -q HEAD >/dev/null 2>&1; then
    echo "scripts/build-itk-versions.sh: --itk-git must name a git clone of ITK (got '${ITK_GIT}')" >&2
    exit 2
  fi
fi
./scripts/install-deps.sh >/dev/null
mkdir -p "$WORK"
TORCH_DIR="$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')/Torch"
launcher=()
command -v ccache >/dev/null 2>&1 && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
export CCACHE_BASEDIR="$WORK" # relative paths: the two ways' builds of one ITK share their objects
# The modules this one needs (itk-module.cmake and CMakeLists.txt's CDM_ITK_COMPONENTS), nothing else; no style
# tools, no test data (both would be downloaded).
itk_options=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=ON
  -DITK_BUILD_DEFAULT_MODULES=OFF -DModule_ITKIONIFTI=ON -DModule_ITKIONRRD=ON -DModule_ITKIOMeta=ON
  -DModule_ITKIOPNG=ON -DModule_ITKImageIntensity=ON -DModule_ITKImageGrid=ON -DModule_ITKSmoothing=ON
  -DModule_ITKThresholding=ON -DModule_ITKImageStatistics=ON -DModule_ITKTransform=ON -DModule_ITKGoogleTest=ON
  -DITK_USE_KWSTYLE=OFF -DITK_USE_CLANG_FORMAT=OFF -DITK_FORBID_DOWNLOADS=ON -DITK_SKIP_PATH_LENGTH_CHECKS=ON
  "${launcher[@]}")

results="$WORK/results.tsv"
: >"$results"
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$results"; }
seconds_of() { local start=$1; echo $(( $(date +%s) - start )); }

IFS=, read -r -a version_list <<<"$VERSIONS"
IFS=, read -r -a way_list <<<"$WAYS"
for version in "${version_list[@]}"; do
  src="$WORK/$version/itk-src"
  if [[ ! -f "$src/CMakeLists.txt" ]]; then
    mkdir -p "$src"
    git --git-dir="$ITK_GIT" archive "$version" | tar -x -C "$src"
  fi
  for way in "${way_list[@]}"; do
    log="$WORK/$version/$way.log"
    : >"$log"
    echo "== ITK $version, $way (log: $log)" >&2
    start=$(date +%s)
    status=ok
    if [[ "$way" == external ]]; then
      itk_build="$WORK/$version/itk-build"
      module_build="$WORK/$version/cdm-build"
      { cmake -S "$src" -B "$itk_build" "${itk_options[@]}" -DBUILD_TESTING=OFF &&
        cmake --build "$itk_build"; } >>"$log" 2>&1 || status="ITK build failed"
      itk_seconds=$(seconds_of "$start")
      start=$(date +%s)
      if [[ "$status" == ok ]]; then
        { cmake -S "$ROOT" -B "$module_build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DITK_DIR="$itk_build" \
            -DBUILD_TESTING=ON -DITK_USE_KWSTYLE=OFF -DITK_USE_CLANG_FORMAT=OFF -DTorch_DIR="$TORCH_DIR" \
            "${launcher[@]}" && cmake --build "$module_build"; } >>"$log" 2>&1 || status="module build failed"
      fi
      test_dir="$module_build"
    else
      # The module inside ITK's source tree, as a remote module's fetch script places it (the same tree as the
      # external way's ITK, whose build leaves Module_CDM off, so ccache serves ITK's own objects again).
      rm -rf "$src/Modules/Remote/CDM" && mkdir -p "$src/Modules/Remote/CDM"
      git -C "$ROOT" ls-files -z | (cd "$ROOT" && xargs -0 cp --parents -t "$src/Modules/Remote/CDM")
      itk_build="$WORK/$version/itk-with-cdm-build"
      # Only this module's targets (and the ITK libraries they need): with BUILD_TESTING on, ITK's own modules'
      # tests would fetch their test data, and nothing may be downloaded.
      { cmake -S "$src" -B "$itk_build" "${itk_options[@]}" -DBUILD_TESTING=ON -DModule_CDM=ON \
          -DTorch_DIR="$TORCH_DIR" &&
        cmake --build "$itk_build" --target CDM cdm cdmSynthesizeExample cdmFiltersByHandExample \
          cdmStreamingExample CDMCoreGTests CDMCommandLineGTests cdmDeviceCheck; } >>"$log" 2>&1 ||
        status="build failed"
      itk_seconds=0
      test_dir="$itk_build/Modules/Remote/CDM/test" # added from ITK's scope: not below the module's folder in ctest's tree
    fi
    module_seconds=$(seconds_of "$start")
    tests="not run"
    if [[ "$status" == ok ]]; then
      if (cd "$test_dir" && ctest --output-on-failure -j 2) >>"$log" 2>&1; then :; else status="tests failed"; fi
      tests=$(grep -E "tests passed|tests failed" "$log" | tail -n 1 || true)
    fi
    record "$version" "$way" "$itk_seconds" "$module_seconds" "$status: $tests"
  done
done

{
  echo "| ITK | way | ITK alone (s) | module (s) | result |"
  echo "| --- | --- | --- | --- | --- |"
  while IFS=$'\t' read -r version way itk module result; do
    echo "| $version | $way | $itk | $module | $result |"
  done <"$results"
} | tee "$WORK/results.md"
