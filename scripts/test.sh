#!/usr/bin/env bash
# The README's test command: install dependencies, configure (Ninja + ccache), build, run every test (C++ with
# ctest, then the Python package with pytest).
# Safe to run twice: installs are skipped when present and the build is incremental.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
BUILD_DIR="${CDM_BUILD_DIR:-build}"
launcher=()
if command -v ccache >/dev/null 2>&1; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=ON "${launcher[@]}" "$@"
cmake --build "$BUILD_DIR"
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "${CDM_TEST_JOBS:-2}"
# The Python package: built from this tree (SWIG over the same engine, CMake in build-python/), installed, tested.
python3 -m pip install --no-build-isolation -q .
CDM_EXECUTABLE="$(cd "$BUILD_DIR" && pwd)/apps/cdm" python3 -m pytest -q test/python
