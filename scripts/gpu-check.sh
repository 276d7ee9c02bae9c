#!/usr/bin/env bash
# The GPU check (issue 12): on a machine with CUDA and LibTorch (pip's torch wheel) but no ITK, build the core
# engine and its tests, run the tests on the CUDA device, compare one synthesis on CPU and CUDA (and bf16 with fp32),
# and time CDM, the UNet and DDIM-50 on a 240x240x155 volume in fp32 and bf16; everything lands in one JSON file (and
# the logs) under OUT.
#
#   scripts/gpu-check.sh --prepare      # here, on the development machine: copy what the GPU box lacks
#                                       # (nlohmann-json and GoogleTest from Debian) into .gpu-deps/
#   scripts/gpu-check.sh [OUT]          # there: build (ITK off), test, check; OUT defaults to gpu-check/
#
# With the device tool: `echo /.gpu-deps/ >> .git/info/exclude`, run --prepare here, then run
# `scripts/gpu-check.sh $OUT` there with carry [".gpu-deps"] (about 3 MB). Without CUDA it runs the same on the CPU
# (CDM_CHECK_DEVICE=cpu), which is how it is tested here.
set -euo pipefail
cd "$(dirname "$0")/.."
DEPS="$PWD/.gpu-deps"
if [[ "${1:-}" == "--prepare" ]]; then
  rm -rf "$DEPS"
  mkdir -p "$DEPS/include" "$DEPS/share/cmake" "$DEPS/lib/x86_64-linux-gnu/cmake"
  cp -r /usr/include/nlohmann /usr/include/gtest /usr/include/gmock "$DEPS/include/"
  cp -r /usr/share/cmake/nlohmann_json "$DEPS/share/cmake/"
  cp -r /usr/lib/x86_64-linux-gnu/cmake/GTest "$DEPS/lib/x86_64-linux-gnu/cmake/"
  cp /usr/lib/x86_64-linux-gnu/libgtest*.a /usr/lib/x86_64-linux-gnu/libgmock*.a "$DEPS/lib/x86_64-linux-gnu/"
  du -sh "$DEPS"
  exit 0
fi
OUT="${1:-gpu-check}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
DEVICE="${CDM_CHECK_DEVICE:-cuda}"
BUILD="${CDM_GPU_BUILD_DIR:-build-gpu}"
start=$(date +%s)
prefix="$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')"
[[ -d "$DEPS" ]] && prefix="$prefix;$DEPS"
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())' | tee "$OUT/environment.txt"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >> "$OUT/environment.txt"

# 1. Build the core engine and its tests (no ITK).
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=ON -DCDM_USE_ITK=OFF \
  -DCMAKE_PREFIX_PATH="$prefix" > "$OUT/configure.log" 2>&1
cmake --build "$BUILD" -j "$(nproc)" > "$OUT/build.log" 2>&1
build_seconds=$(($(date +%s) - start))

# 2. The core tests on the device (CDM_TEST_DEVICE: the device every core test loads its models on).
test_start=$(date +%s)
set +e
CDM_TEST_DEVICE="$DEVICE" ctest --test-dir "$BUILD" -L core -j 4 --output-on-failure > "$OUT/ctest.log" 2>&1
test_status=$?
set -e
test_seconds=$(($(date +%s) - test_start))
summary=$(grep -E "tests passed|tests failed" "$OUT/ctest.log" | tail -n 1 || true)

# 3. CPU against the device on one synthesis, and device timings on 240x240x155.
"$BUILD/test/cdmDeviceCheck" --model examples/models/t1c-small.cdm --device "$DEVICE" --size "${CDM_CHECK_SIZE:-240,240,155}" \
  --out "$OUT/device-check.json" | tee "$OUT/device-check.log"

python3 - "$OUT" "$build_seconds" "$test_seconds" "$test_status" "$summary" <<'PY'
import json, sys
out, build, tests, status, summary = sys.argv[1:6]
check = json.load(open(f"{out}/device-check.json"))
check.update({"build_seconds": int(build), "ctest_seconds": int(tests), "ctest_exit": int(status),
              "ctest_summary": summary})
json.dump(check, open(f"{out}/gpu-check.json", "w"), indent=2)
print(json.dumps(check, indent=2))
PY
exit "$test_status"
