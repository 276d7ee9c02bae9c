#!/usr/bin/env bash
# The README's demo: build `cdm`, generate one BraTS-like phantom case (Colin27 anatomy, a seed the bundled model
# never saw), synthesize its t1c from t1n, t2w and t2f with the bundled `small` model (examples/models/t1c-small.cdm,
# trained by bench/run.sh) as the mean of 4 samples with their voxel-wise spread, print PSNR/SSIM against the case's
# reference t1c inside the brain and inside the tumour beside the copy-the-input floor (t1n under its best gain), and
# write the output, the reference, the error map, the uncertainty and a PNG montage to the folder it names
# (default: demo-output/).
# Safe to run twice: installs are skipped when present and the build is incremental.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${CDM_DEMO_DIR:-demo-output}"
MODEL="${CDM_DEMO_MODEL:-examples/models/t1c-small.cdm}"
BUILD_DIR="${CDM_BUILD_DIR:-build}"

./scripts/install-deps.sh
launcher=()
if command -v ccache >/dev/null 2>&1; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=ON "${launcher[@]}" >/dev/null
cmake --build "$BUILD_DIR" --target cdm
CDM="$BUILD_DIR/apps/cdm"
mkdir -p "$OUT"

# The grid the model was trained on (bench/run.sh): 128x128x96 at 1.5 mm.
"$CDM" phantom --out "$OUT" --cases 1 --seed 2024 --prefix DEMO --size 128,128,96 --spacing 1.5
"$CDM" info "$MODEL"
CASE="$OUT/DEMO-00000/DEMO-00000"
"$CDM" synthesize --model "$MODEL" --source t1n="$CASE-t1n.nii.gz" --source t2w="$CASE-t2w.nii.gz" \
  --source t2f="$CASE-t2f.nii.gz" --output "$OUT/t1c-synthesized.nii.gz" --seed 0 --samples 4 \
  --uncertainty "$OUT/t1c-uncertainty.nii.gz"
cp "$CASE-t1c.nii.gz" "$OUT/t1c-reference.nii.gz"
echo "== t1c synthesized by CDM (mean of 4 samples) vs the reference, inside the brain, the tumour (label > 0), the"
echo "   enhancing tumour (label 3) and the rest of the brain (the reference normalised by a fixed robust rule, the"
echo "   synthesis by its best global gain, as in bench/RESULTS.md); the uncertainty judged against the errors =="
"$CDM" evaluate --reference "$OUT/t1c-reference.nii.gz" --prediction "$OUT/t1c-synthesized.nii.gz" --normalize gain \
  --mask "$CASE-t1n.nii.gz" --segmentation "$CASE-seg.nii.gz" --uncertainty "$OUT/t1c-uncertainty.nii.gz" \
  --error-map "$OUT/t1c-error.nii.gz"
echo "== the floor: t1n itself under its best global gain (no model) =="
"$CDM" evaluate --reference "$OUT/t1c-reference.nii.gz" --prediction "$CASE-t1n.nii.gz" --normalize gain \
  --mask "$CASE-t1n.nii.gz" --segmentation "$CASE-seg.nii.gz"
"$CDM" montage "$CASE-t1n.nii.gz" "$CASE-t2w.nii.gz" "$CASE-t2f.nii.gz" "$OUT/t1c-reference.nii.gz" \
  "$OUT/t1c-synthesized.nii.gz" --error "$OUT/t1c-error.nii.gz" --uncertainty "$OUT/t1c-uncertainty.nii.gz" \
  --focus "$CASE-seg.nii.gz" --out "$OUT/montage.png"
echo "montage columns: t1n | t2w | t2f | t1c reference | t1c CDM | |error| (0-0.5) | uncertainty (std of 4 samples)"
echo "outputs in $OUT/: t1c-synthesized.nii.gz, t1c-reference.nii.gz, t1c-error.nii.gz, t1c-uncertainty.nii.gz,"
echo "montage.png"
