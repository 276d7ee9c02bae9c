#!/usr/bin/env bash
# The README's demo: build `cdm`, make BraTS-like phantom cases (Colin27 anatomy), train a `tiny` CDM model for
# t1c from t1n, t2w and t2f, synthesize t1c for a held-out case, print PSNR/SSIM against its reference and write
# the output, the reference and a PNG montage to the folder it names (default: demo-output/).
# Safe to run twice: installs are skipped when present, the build is incremental, a trained model is reused.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${CDM_DEMO_DIR:-demo-output}"
CASES="${CDM_DEMO_CASES:-10}"
ITERATIONS="${CDM_DEMO_ITERATIONS:-150}"
BUILD_DIR="${CDM_BUILD_DIR:-build}"

./scripts/install-deps.sh
launcher=()
if command -v ccache >/dev/null 2>&1; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=ON "${launcher[@]}" >/dev/null
cmake --build "$BUILD_DIR" --target cdm
CDM="$BUILD_DIR/apps/cdm"
mkdir -p "$OUT"

GRID=(--size 96,96,64 --spacing 2)
"$CDM" phantom --out "$OUT/train" --cases "$CASES" --seed 1 "${GRID[@]}"
"$CDM" phantom --out "$OUT/heldout" --cases 1 --seed 2 --prefix HELDOUT "${GRID[@]}"
MODEL="$OUT/t1c-tiny.cdm"
if [[ ! -f "$MODEL" ]]; then
  "$CDM" train --data "$OUT/train" --target t1c --preset tiny --iterations "$ITERATIONS" --seed 1 --out "$MODEL"
fi

CASE="$OUT/heldout/HELDOUT-00000/HELDOUT-00000"
"$CDM" synthesize --model "$MODEL" --source t1n="$CASE-t1n.nii.gz" --source t2w="$CASE-t2w.nii.gz" \
  --source t2f="$CASE-t2f.nii.gz" --output "$OUT/t1c-synthesized.nii.gz" --quiet
cp "$CASE-t1c.nii.gz" "$OUT/t1c-reference.nii.gz"
echo "== t1c synthesized by CDM vs the reference, inside the brain (images normalised by the robust rule) =="
"$CDM" evaluate --reference "$OUT/t1c-reference.nii.gz" --prediction "$OUT/t1c-synthesized.nii.gz" \
  --mask "$CASE-t1n.nii.gz" --error-map "$OUT/t1c-error.nii.gz"
"$CDM" montage "$CASE-t1n.nii.gz" "$CASE-t2w.nii.gz" "$CASE-t2f.nii.gz" "$OUT/t1c-reference.nii.gz" \
  "$OUT/t1c-synthesized.nii.gz" --error "$OUT/t1c-error.nii.gz" --focus "$CASE-seg.nii.gz" --out "$OUT/montage.png"
echo "montage columns: t1n | t2w | t2f | t1c reference | t1c CDM | |error| (0-0.5)"
echo "outputs in $OUT/: t1c-synthesized.nii.gz, t1c-reference.nii.gz, t1c-error.nii.gz, montage.png"
