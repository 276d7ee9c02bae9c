#!/usr/bin/env bash
# Installs every dependency of itk-cdm: Debian packages (apt-get) and the pinned torch wheel (pip).
# Idempotent: packages already present are skipped, so running it twice is cheap.
set -euo pipefail

TORCH_VERSION="${CDM_TORCH_VERSION:-2.11.0}"
APT_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config
  libinsighttoolkit5-dev libgtest-dev nlohmann-json3-dev libcli11-dev swig python3-dev
  mricron-data zlib1g-dev libgloo-dev libtcmalloc-minimal4
)

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "[install-deps] apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "[install-deps] Debian packages present"
fi

PYTHON="${PYTHON:-python3}"
if "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '${TORCH_VERSION}' else 1)" 2>/dev/null; then
  echo "[install-deps] torch ${TORCH_VERSION} present"
else
  echo "[install-deps] pip install torch==${TORCH_VERSION}"
  "$PYTHON" -m pip install -q "torch==${TORCH_VERSION}"
fi
# The Python package's build and test needs: the itk wheel (its images), tqdm (progress bars), pytest.
PIP_PACKAGES=(numpy pytest "itk==5.4.*" tqdm wheel "setuptools>=61")
if ! "$PYTHON" -c "import numpy, pytest, itk, tqdm, wheel, setuptools" 2>/dev/null; then
  echo "[install-deps] pip install ${PIP_PACKAGES[*]}"
  "$PYTHON" -m pip install -q "${PIP_PACKAGES[@]}"
else
  echo "[install-deps] Python packages present"
fi
