#!/usr/bin/env bash
# The quality and speed benchmark (DESIGN.md section 5): CDM against the `unet` and `ddim` baselines, trained by
# the same code with the same number of gradient steps, on BraTS-like phantom cases; evaluated on held-out cases.
# Writes <out>/RESULTS.md, <out>/results.json and a PNG montage per task. Default <out>: bench/ (RESULTS.md there).
#
#   bench/run.sh [--quick] [--tasks t1c,t2f] [--out DIR] [--iterations N]
#
# --quick: a smoke run in minutes (tiny models, few small cases). --iterations N: gradient steps per method (default
# 600); CDM splits them over its stages (mrm 2/15, cunet 7/15, mdn 3/20, finetune 1/4: the C-UNet gets most).
# Held-out cases are 16-slice axial slabs about the tumour (`cdm phantom --tumour-slab`), because `ddim` costs 50 UNet
# passes per slice (about 5.7 min per 128x128x96 volume here); one whole held-out volume per method times 3D cost.
# The default run took 2 h 03 min on 2 CPU cores (2026-11-25, build included). `small` on 128x128 slices (batch 8) costs
# per iteration about 0.5 s (mrm), 1.1 s (cunet), 0.3 s (mdn), 1.3 s (finetune), 1.0 s (unet), 1.1 s (ddim).
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=0
TASKS="t1c,t2f"
OUT=""
ITERATIONS=""
while (($#)); do
  case "$1" in
    --quick) QUICK=1 ;;
    --tasks) TASKS="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    --iterations) ITERATIONS="$2"; shift ;;
    -h|--help) sed -n 2,9p "$0"; exit 0 ;;
    *) echo "bench/run.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
  shift
done
if ((QUICK)); then
  TRAIN=6; TEST=2; SIZE=64,64,48; SPACING=3; SLAB=8; PRESET=tiny; ITERATIONS="${ITERATIONS:-60}"; OUT="${OUT:-bench/quick}"
else
  TRAIN=40; TEST=10; SIZE=128,128,96; SPACING=1.5; SLAB=16; PRESET=small; ITERATIONS="${ITERATIONS:-600}"; OUT="${OUT:-bench}"
fi
STAGES="mrm=$((ITERATIONS * 2 / 15)),cunet=$((ITERATIONS * 7 / 15)),mdn=$((ITERATIONS * 3 / 20))"
STAGES="$STAGES,finetune=$((ITERATIONS - ITERATIONS * 2 / 15 - ITERATIONS * 7 / 15 - ITERATIONS * 3 / 20))"

./scripts/install-deps.sh >/dev/null
BUILD_DIR="${CDM_BUILD_DIR:-build}"
launcher=()
if command -v ccache >/dev/null 2>&1; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=ON "${launcher[@]}" >/dev/null
cmake --build "$BUILD_DIR" --target cdm >/dev/null
CDM="$(cd "$BUILD_DIR" && pwd)/apps/cdm"
WORK="$OUT/work"
mkdir -p "$WORK"
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# Data: held-out cases from other seeds: tumour slabs for quality, one whole volume for 3D timing.
if [[ ! -d "$WORK/data/volume" ]]; then
  "$CDM" phantom --out "$WORK/data/train" --cases "$TRAIN" --seed 11 --size "$SIZE" --spacing "$SPACING"
  "$CDM" phantom --out "$WORK/data/test" --cases "$TEST" --seed 12 --size "$SIZE" --spacing "$SPACING" --prefix TEST \
    --tumour-slab "$SLAB"
  "$CDM" phantom --out "$WORK/data/volume" --cases 1 --seed 13 --size "$SIZE" --spacing "$SPACING" --prefix VOLUME
fi

IFS=',' read -r -a task_list <<<"$TASKS"
for task in "${task_list[@]}"; do
  sources=()
  for m in t1n t1c t2w t2f; do [[ $m != "$task" ]] && sources+=("$m"); done
  source_list=$(IFS=,; echo "${sources[*]}")
  for method in cdm unet ddim; do
    model="$WORK/models/$task-$method.cdm"
    mkdir -p "$WORK/models" "$WORK/results/$task/$method"
    # The same number of gradient steps: CDM's four stages share what a baseline spends in its one stage.
    stage_args=(--iterations "$ITERATIONS")
    [[ $method == cdm ]] && stage_args+=(--stage-iterations "$STAGES")
    if [[ ! -f "$model" ]]; then
      start=$(now_ms)
      "$CDM" train --model-kind "$method" --data "$WORK/data/train" --target "$task" --sources "$source_list" \
        --preset "$PRESET" "${stage_args[@]}" --seed 1 --validation-interval "$ITERATIONS" --out "$model" \
        | tail -n 6 > "$WORK/results/$task/$method/train.log"
      echo "{\"milliseconds\": $(($(now_ms) - start)), \"iterations\": $ITERATIONS}" > "$WORK/results/$task/$method/train.json"
    fi
    # 3D cost: one whole held-out volume, for the first task only (the cost does not depend on the target).
    volume_case=$(ls -d "$WORK"/data/volume/*/ | head -n 1)
    if [[ $task == "${task_list[0]}" && ! -f "$WORK/results/volume-$method-timing.json" ]]; then
      vname=$(basename "$volume_case")
      args=()
      for m in "${sources[@]}"; do args+=(--source "$m=$volume_case$vname-$m.nii.gz"); done
      "$CDM" synthesize --quiet --model "$model" "${args[@]}" --output "$WORK/results/volume-$method.nii.gz" --seed 1 \
        --timing "$WORK/results/volume-$method-timing.json" >/dev/null
    fi
    for case_dir in "$WORK"/data/test/*/; do
      name=$(basename "$case_dir")
      prefix="$case_dir$name"
      args=()
      for m in "${sources[@]}"; do args+=(--source "$m=$prefix-$m.nii.gz"); done
      result="$WORK/results/$task/$method/$name"
      if [[ ! -f "$result-timing.json" ]]; then
        "$CDM" synthesize --quiet --model "$model" "${args[@]}" --output "$result.nii.gz" --seed 1 \
          --timing "$result-timing.json" >/dev/null
      fi
      # MR intensity units are arbitrary: the reference by the robust rule, each synthesis by its best global gain.
      if [[ ! -f "$result-metrics.json" ]]; then
        "$CDM" evaluate --reference "$prefix-$task.nii.gz" --prediction "$result.nii.gz" --normalize gain \
          --mask "$prefix-${sources[0]}.nii.gz" --error-map "$result-error.nii.gz" --json > "$result-metrics.json.part"
        mv "$result-metrics.json.part" "$result-metrics.json"
      fi
    done
  done
  # A montage of the first held-out case: sources | reference | CDM | unet | ddim | |error| of each.
  first=$(ls -d "$WORK"/data/test/*/ | head -n 1)
  name=$(basename "$first")
  images=()
  for m in "${sources[@]}"; do images+=("$first$name-$m.nii.gz"); done
  images+=("$first$name-$task.nii.gz")
  errors=()
  for method in cdm unet ddim; do
    images+=("$WORK/results/$task/$method/$name.nii.gz")
    errors+=(--error "$WORK/results/$task/$method/$name-error.nii.gz")
  done
  "$CDM" montage "${images[@]}" "${errors[@]}" --focus "$first$name-seg.nii.gz" --out "$OUT/montage-$task.png" >/dev/null
done

python3 bench/report.py --work "$WORK" --out "$OUT" --tasks "$TASKS" --preset "$PRESET" --iterations "$ITERATIONS" \
  --train-cases "$TRAIN" --test-cases "$TEST" --size "$SIZE" --spacing "$SPACING" --slab "$SLAB" --stages "$STAGES" \
  --quick "$QUICK"
echo "bench: wrote $OUT/RESULTS.md and $OUT/results.json"
