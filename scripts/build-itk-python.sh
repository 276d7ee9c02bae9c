#!/usr/bin/env bash
# Builds ITK 5.2 with Python wrapping from Debian's source package (102 min measured on 2 busy cores: ITKTestKernel
# pulls in GDCM and the other IO modules; the Python wrappers are the slow part), then this module
# against that ITK build tree through the remote-module path (ITKModuleExternal; 8 min), and runs the wrapping
# test (ctest CDMImageFilterPythonTest). Not part of the test command. A configured ITK tree is kept.
#
#   scripts/build-itk-python.sh [WORK_DIR]        (default: /tmp/itk-python)
#
# Configuration from shared/REFERENCES.md (measured 2026-11-25): Release, Ninja, only the IO modules we use,
# Python wrapping with Debian's swig and castxml, float, signed short and unsigned char pixels, 2D and 3D.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
WORK="${1:-/tmp/itk-python}"
mkdir -p "$WORK"
SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"

if ! grep -rqs "^Types: deb deb-src\|^deb-src" /etc/apt/sources.list /etc/apt/sources.list.d/; then
  echo "deb-src http://deb.debian.org/debian bookworm main" | $SUDO tee /etc/apt/sources.list.d/cdm-deb-src.list >/dev/null
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends castxml swig dpkg-dev xz-utils >/dev/null
cd "$WORK"
# ITK 5.2's Python layer uses np.bool (removed in NumPy 1.24): its own virtual environment with an older NumPy,
# so the machine's Python keeps its packages.
[[ -x venv/bin/python ]] || python3 -m venv venv
venv/bin/python -m pip install -q "numpy<1.24"

if [[ ! -d src ]]; then
  apt-get source --download-only insighttoolkit5
  mkdir -p src && tar -xf insighttoolkit5_*.orig.tar.xz -C src --strip-components=1
fi
[[ -f itk-build/build.ninja ]] || cmake -S src -B itk-build -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF -DBUILD_EXAMPLES=OFF \
  -DITK_BUILD_DEFAULT_MODULES=OFF -DModule_ITKIONIFTI=ON -DModule_ITKIONRRD=ON -DModule_ITKIOMeta=ON \
  -DModule_ITKIOPNG=ON -DModule_ITKBridgeNumPy=ON -DModule_ITKSmoothing=ON -DModule_ITKImageGrid=ON \
  -DModule_ITKThresholding=ON -DModule_ITKImageStatistics=ON -DModule_ITKTestKernel=ON -DModule_ITKGoogleTest=ON \
  -DITK_WRAP_PYTHON=ON -DITK_USE_SYSTEM_SWIG=ON -DITK_USE_SYSTEM_CASTXML=ON \
  -DITK_WRAP_unsigned_char=ON -DITK_WRAP_unsigned_short=OFF -DITK_WRAP_signed_short=ON -DITK_WRAP_float=ON \
  -DITK_WRAP_double=OFF "-DITK_WRAP_IMAGE_DIMS=2;3" -DITK_WRAP_rgb_unsigned_char=OFF \
  -DITK_WRAP_rgba_unsigned_char=OFF -DITK_WRAP_complex_float=OFF -DPython3_EXECUTABLE="$WORK/venv/bin/python"
time cmake --build itk-build

# The module against the ITK build tree: the remote-module path (ITKModuleExternal).
# (ITK's style tools would be downloaded at build time: off, as nothing may download here.)
cmake -S "$ROOT" -B cdm-module-build -G Ninja -DCMAKE_BUILD_TYPE=Release -DITK_DIR="$WORK/itk-build" -DBUILD_TESTING=ON \
  -DITK_USE_KWSTYLE=OFF -DITK_USE_CLANG_FORMAT=OFF -DITK_WRAP_PYTHON=ON \
  -DITK_USE_SYSTEM_SWIG=ON -DITK_USE_SYSTEM_CASTXML=ON \
  -DPython3_EXECUTABLE="$WORK/venv/bin/python" \
  -DTorch_DIR="$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')/Torch" # torch: the machine's Python
time cmake --build cdm-module-build
# ITK's wrapping of the filters (wrapping/*.wrap): itk.CDMImageFilter from Python, against `cdm synthesize`.
(cd cdm-module-build && ctest -R PythonTest --output-on-failure)
echo "ITK with Python: $WORK/itk-build; CDM as a remote module: $WORK/cdm-module-build"
