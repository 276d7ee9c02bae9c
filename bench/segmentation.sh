#!/usr/bin/env bash
# BraSyn's second score (README.md, "Benchmark"): does a synthesized modality keep the tumour segmentation right?
# Trains a segmenter (`cdm train --model-kind segmenter`) on the benchmark's training cases with all four real
# modalities, then labels each held-out case with all four real, and with each task's modality replaced by
# what bench/run.sh synthesized for it: the unified CDM, the per-target CDM, the UNet baseline, the identity floor
# (the best single source copied in its place, as in bench/run.sh's table), and nothing (`cdm segment
# --missing-as-zero`: the modality's channels zero). Dice of the enhancing tumour, tumour core and whole tumour
# (`cdm evaluate --segmentation-reference`). Writes <out>/SEGMENTATION.md and <out>/segmentation.json.
#
#   bench/segmentation.sh [--work DIR] [--tasks t1c,t2f] [--out DIR] [--iterations N] [--train-seed S]
#
# --work: a bench/run.sh work folder whose methods have run for the tasks (default bench/unified/work, from
# `bench/run.sh --tasks t1c,t2f --methods identity,cdm,cdm-unified,unet --out bench/unified`); its data and its
# held-out syntheses are read, never written; the segmenter and the labels go under <out>/segmentation/.
# --iterations: the segmenter's gradient steps (default 600, the synthesis models' per-target budget).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="bench/unified/work"
TASKS="t1c,t2f"
OUT=""
ITERATIONS=600
TRAIN_SEED=1
while (($#)); do
  case "$1" in
    --work) WORK="$2"; shift ;;
    --tasks) TASKS="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    --iterations) ITERATIONS="$2"; shift ;;
    --train-seed) TRAIN_SEED="$2"; shift ;;
    -h|--help) sed -n 2,16p "$0"; exit 0 ;;
    *) echo "bench/segmentation.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
  shift
done
OUT="${OUT:-$(dirname "$WORK")}"
if [[ ! -d "$WORK/data/train" || ! -d "$WORK/data/test" ]]; then
  echo "bench/segmentation.sh: '$WORK' holds no bench/run.sh data (data/train, data/test); run bench/run.sh first" >&2
  exit 2
fi
source scripts/build-targets.sh
build_targets cdm
CDM="$BUILD_DIR/apps/cdm"
SEG="$OUT/segmentation"
mkdir -p "$SEG/labels" "$SEG/dice"
IFS=',' read -r -a task_list <<<"$TASKS"
MODALITIES=(t1n t1c t2w t2f)

# The segmenter: the synthesis models' training options where they apply (batch, preset, intensity rule, rate).
model="$SEG/segmenter.cdm"
if [[ ! -f "$model" ]]; then
  start=$(date +%s)
  "$CDM" train --model-kind segmenter --data "$WORK/data/train" --preset small --iterations "$ITERATIONS" \
    --intensity-rule median --learning-rate 1e-3 --seed "$TRAIN_SEED" --validation-interval "$ITERATIONS" \
    --out "$model" | tail -n 4 > "$SEG/train.log"
  echo "{\"seconds\": $(($(date +%s) - start)), \"iterations\": $ITERATIONS}" > "$SEG/train.json"
fi

# Labels one held-out case and scores them.
#   score CONDITION CASE_DIR [segment args...]
score() {
  local condition="$1" case_dir="$2"
  shift 2
  local name
  name=$(basename "$case_dir")
  mkdir -p "$SEG/labels/$condition" "$SEG/dice/$condition"
  local labels="$SEG/labels/$condition/$name-seg.nii.gz" dice="$SEG/dice/$condition/$name.json"
  [[ -f "$dice" ]] && return
  "$CDM" segment --quiet --model "$model" "$@" --output "$labels" >/dev/null
  "$CDM" evaluate --segmentation-reference "$case_dir$name-seg.nii.gz" --segmentation "$labels" --json > "$dice.part"
  mv "$dice.part" "$dice"
}

for case_dir in "$WORK"/data/test/*/; do
  name=$(basename "$case_dir")
  real=()
  for m in "${MODALITIES[@]}"; do real+=(--source "$m=$case_dir$name-$m.nii.gz"); done
  score real "$case_dir" "${real[@]}"
  for task in "${task_list[@]}"; do
    others=()
    for m in "${MODALITIES[@]}"; do [[ $m != "$task" ]] && others+=(--source "$m=$case_dir$name-$m.nii.gz"); done
    for method in cdm-unified cdm unet; do
      synthesized="$WORK/results/$task/$method/$name.nii.gz"
      [[ -f $synthesized ]] || continue
      score "$task-$method" "$case_dir" "${others[@]}" --source "$task=$synthesized"
    done
    # The identity floor: bench/run.sh's best single source (report.py's rule), copied into the gap.
    source_modality=$(python3 -c "import sys; sys.path.insert(0, 'bench'); import report; \
b = report.best_identity('$WORK/results/$task'); print(b['source'] if b else '')")
    if [[ -n $source_modality ]]; then
      score "$task-identity" "$case_dir" "${others[@]}" --source "$task=$case_dir$name-$source_modality.nii.gz"
      echo "$source_modality" > "$SEG/dice/$task-identity/source"
    fi
    score "$task-zeros" "$case_dir" "${others[@]}" --missing-as-zero
  done
done

python3 bench/segmentation_report.py --segmentation "$SEG" --tasks "$TASKS" --out "$OUT" --iterations "$ITERATIONS"
echo "bench: wrote $OUT/SEGMENTATION.md and $OUT/segmentation.json"
