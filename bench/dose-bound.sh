#!/usr/bin/env bash
# How much can a representation z gain inside the tumour at best? On the phantom, t1c differs from what the sources
# determine by the case's gadolinium dose (drawn in 0.3..0.8 mM, independently of every source) and by its noise. This
# script regenerates the benchmark's held-out t1c slabs at three fixed doses with the same seed (same anatomy, tumour,
# sequences, bias and noise draws: a counterfactual dose), forms the dose-averaged image (Simpson's rule over the
# uniform dose: what an ideal predictor that knows everything except the dose outputs under an L2 loss), and scores it
# against the reference with the benchmark's protocol. Its error is the part that only the dose explains; removing it
# from a trained model's error bounds what the oracle z can gain over the sampled one.
#   bench/dose-bound.sh [WORK]   (WORK: the benchmark's work folder, default bench/work; writes WORK/dose-bound)
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="${1:-bench/work}"
CDM="${CDM:-build/apps/cdm}"
OUT="$WORK/dose-bound"
mkdir -p "$OUT"
cases=$(ls -d "$WORK"/data/test/*/ | wc -l)
for dose in 0.3 0.55 0.8; do
  if [[ ! -d "$OUT/dose-$dose" ]]; then
    # Same options as bench/run.sh's held-out cases (seed 12, 128x128x96 at 1.5 mm, 16-slice tumour slabs).
    "$CDM" phantom --out "$OUT/dose-$dose.part" --cases "$cases" --seed 12 --size 128,128,96 --spacing 1.5 \
      --prefix TEST --tumour-slab 16 --gadolinium "$dose" >/dev/null
    mv "$OUT/dose-$dose.part" "$OUT/dose-$dose"
  fi
done
python3 bench/dose_bound.py --work "$WORK" --cdm "$CDM"
