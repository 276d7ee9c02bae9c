# Sourced by the demo and the benchmarks: installs what the build needs, configures the build folder as the test
# command does (Ninja, Release, tests on, ccache when present) and builds only the given targets.
#   source scripts/build-targets.sh; build_targets cdm [TARGET...]
# Sets BUILD_DIR to the build folder's absolute path ($CDM_BUILD_DIR, default build/). Run from the repository root.
build_targets() {
  ./scripts/install-deps.sh >/dev/null
  local dir="${CDM_BUILD_DIR:-build}" launcher=()
  if command -v ccache >/dev/null 2>&1; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=ON "${launcher[@]}" >/dev/null
  cmake --build "$dir" --target "$@" >/dev/null
  BUILD_DIR="$(cd "$dir" && pwd)"
}
