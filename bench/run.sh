#!/usr/bin/env bash
# The quality and speed benchmark (README.md, "Benchmark"): CDM against the copy-the-input floor (`identity`: the best
# single source under its least-squares gain), the `unet` and `ddim` baselines trained by the same code with the same
# number of gradient steps, and a `unet-time` trained for CDM's training wall time; on BraTS-like phantom cases,
# evaluated on held-out cases inside the brain, the tumour, the enhancing tumour and the non-tumour brain, with
# BraSyn's protocol beside; CDM's representation ablation (sampled, oracle, zero, shuffled z) and its uncertainty.
# Writes <out>/RESULTS.md, <out>/results.json and a PNG montage per task. Default <out>: bench/ (RESULTS.md there).
#
#   bench/run.sh [--quick] [--tasks t1c,t2f] [--methods identity,cdm,cdm-unified,unet,ddim,unet-time] [--out DIR]
#                [--iterations N]
#                [--train-seed S]
#
# --quick: a smoke run in minutes (tiny models, few small cases). --iterations N: gradient steps per method (default
# 600); CDM splits them over its stages (CDM_STAGES, default mrm 1/15, cunet 8/15, mdn 2/15, finetune 4/15).
# `cdm-unified` is one CDM for every task (`cdm train --target t1c,t2f`), trained once with the per-target models'
# total budget (N steps times the number of tasks, split alike) and evaluated on each task as the others are.
# Held-out cases are 16-slice axial slabs about the tumour (`cdm phantom --tumour-slab`), because `ddim` costs 50 UNet
# passes per slice (about 5.7 min per 128x128x96 volume here); one whole held-out volume per method times 3D cost.
# CDM_TRAIN_ARGS replaces the `cdm train` options given to every trained method (default below).
# The default run took 2 h 03 min on 2 CPU cores (2026-11-25, build included, without unet-time and the ablations).
# `small` on 128x128 slices (batch 8) costs per iteration about 0.5 s (mrm), 1.1 s (cunet), 0.3 s (mdn), 1.3 s
# (finetune), 1.0 s (unet), 1.1 s (ddim).
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=0
TASKS="t1c,t2f"
METHODS="identity,cdm,unet,ddim,unet-time"
OUT=""
ITERATIONS=""
TRAIN_SEED=1 # the seed of every training (`cdm train --seed`); another seed in another --out measures run-to-run noise
while (($#)); do
  case "$1" in
    --quick) QUICK=1 ;;
    --tasks) TASKS="$2"; shift ;;
    --methods) METHODS="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    --iterations) ITERATIONS="$2"; shift ;;
    --train-seed) TRAIN_SEED="$2"; shift ;;
    -h|--help) sed -n 2,19p "$0"; exit 0 ;;
    *) echo "bench/run.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
  shift
done
if ((QUICK)); then
  TRAIN=6; TEST=2; SIZE=64,64,48; SPACING=3; SLAB=8; PRESET=tiny; ITERATIONS="${ITERATIONS:-60}"; OUT="${OUT:-bench/quick}"
else
  TRAIN=40; TEST=10; SIZE=128,128,96; SPACING=1.5; SLAB=16; PRESET=small; ITERATIONS="${ITERATIONS:-600}"; OUT="${OUT:-bench}"
fi
# CDM's split of N steps over its stages.
stage_split() {
  local n="$1"
  echo "mrm=$((n * 1 / 15)),cunet=$((n * 8 / 15)),mdn=$((n * 2 / 15)),finetune=$((n - n * 1 / 15 - n * 8 / 15 - n * 2 / 15))"
}
STAGES="${CDM_STAGES:-$(stage_split "$ITERATIONS")}"
# Every trained method: the median intensity rule, L2 synthesis loss, tumour voxels weighted 11x, learning rate 1e-3
# (bench/EXPERIMENTS.md, 2026-11-27: with L1 no method learned the enhancing rim; with these a 300-step unet gained
# 4.4 dB in the tumour).
read -r -a extra_train_args <<<"${CDM_TRAIN_ARGS---intensity-rule median --synthesis-loss l2 --tumour-loss-weight 10 --learning-rate 1e-3 --teacher-encoder true}"
has_method() { [[ ",$METHODS," == *",$1,"* ]]; }

source scripts/build-targets.sh
build_targets cdm
CDM="$BUILD_DIR/apps/cdm"
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
if has_method cdm-unified && ((${#task_list[@]} < 2)); then
  echo "bench/run.sh: cdm-unified is one model for several tasks; give two or more with --tasks" >&2
  exit 2
fi
volume_case=$(ls -d "$WORK"/data/volume/*/ | head -n 1)
test_cases=("$WORK"/data/test/*/)

# Evaluates one synthesis of a held-out case: the benchmark's protocol (gain) per region, and BraSyn's.
#   evaluate_case RESULT_PREFIX CASE_PREFIX TASK FIRST_SOURCE PREDICTION [UNCERTAINTY]
evaluate_case() {
  local result="$1" prefix="$2" task="$3" first="$4" prediction="$5" uncertainty="${6:-}"
  local extra=()
  [[ -n $uncertainty ]] && extra=(--uncertainty "$uncertainty")
  if [[ ! -f "$result-metrics.json" ]]; then
    # MR intensity units are arbitrary: the reference by the fixed robust rule, each synthesis by its best gain.
    "$CDM" evaluate --reference "$prefix-$task.nii.gz" --prediction "$prediction" --normalize gain \
      --mask "$prefix-$first.nii.gz" --segmentation "$prefix-seg.nii.gz" --error-map "$result-error.nii.gz" \
      "${extra[@]}" --json > "$result-metrics.json.part"
    mv "$result-metrics.json.part" "$result-metrics.json"
  fi
  if [[ ! -f "$result-brasyn.json" ]]; then
    "$CDM" evaluate --reference "$prefix-$task.nii.gz" --prediction "$prediction" --protocol brasyn \
      --mask "$prefix-$first.nii.gz" --segmentation "$prefix-seg.nii.gz" --json > "$result-brasyn.json.part"
    mv "$result-brasyn.json.part" "$result-brasyn.json"
  fi
}

# Trains one model (skipped when it exists) and records its wall time.
#   train_model TASK METHOD KIND SOURCES ITERATIONS [stage args...]
train_model() {
  local task="$1" method="$2" kind="$3" sources="$4" iterations="$5"
  shift 5
  local model="$WORK/models/$task-$method.cdm"
  mkdir -p "$WORK/models" "$WORK/results/$task/$method"
  if [[ ! -f "$model" ]]; then
    local start
    start=$(now_ms)
    "$CDM" train --model-kind "$kind" --data "$WORK/data/train" --target "$task" --sources "$sources" \
      --preset "$PRESET" --iterations "$iterations" "$@" "${extra_train_args[@]}" --seed "$TRAIN_SEED" \
      --validation-interval "$iterations" --out "$model" | tail -n 8 > "$WORK/results/$task/$method/train.log"
    echo "{\"milliseconds\": $(($(now_ms) - start)), \"iterations\": $iterations}" \
      > "$WORK/results/$task/$method/train.json"
  fi
}

for task in "${task_list[@]}"; do
  sources=()
  for m in t1n t1c t2w t2f; do [[ $m != "$task" ]] && sources+=("$m"); done
  source_list=$(IFS=,; echo "${sources[*]}")
  first_source="${sources[0]}"

  # The floor: each source itself, under its least-squares gain (report.py keeps the best source).
  if has_method identity; then
    for m in "${sources[@]}"; do
      mkdir -p "$WORK/results/$task/identity-$m"
      for case_dir in "${test_cases[@]}"; do
        name=$(basename "$case_dir")
        evaluate_case "$WORK/results/$task/identity-$m/$name" "$case_dir$name" "$task" "$first_source" \
          "$case_dir$name-$m.nii.gz"
      done
    done
  fi

  for method in cdm cdm-unified unet ddim unet-time; do
    has_method "$method" || continue
    model="$WORK/models/$task-$method.cdm"
    target_args=()
    case $method in
      cdm) train_model "$task" cdm cdm "$source_list" "$ITERATIONS" --stage-iterations "$STAGES" ;;
      cdm-unified)
        # One model for every task (trained with the first), from all four modalities, at the total budget.
        model="$WORK/models/$TASKS-cdm-unified.cdm"
        total=$((ITERATIONS * ${#task_list[@]}))
        train_model "$TASKS" cdm-unified cdm t1n,t1c,t2w,t2f "$total" --stage-iterations "$(stage_split "$total")"
        mkdir -p "$WORK/results/$task/cdm-unified"
        cp "$WORK/results/$TASKS/cdm-unified/train.json" "$WORK/results/$task/cdm-unified/train.json"
        target_args=(--target "$task") ;;
      unet-time)
        # The UNet at CDM's training wall time: its step count scaled by the measured ms per step of both.
        cdm_ms=$(python3 -c "import json;print(json.load(open('$WORK/results/$task/cdm/train.json'))['milliseconds'])")
        unet_ms=$(python3 -c "import json;print(json.load(open('$WORK/results/$task/unet/train.json'))['milliseconds'])")
        train_model "$task" unet-time unet "$source_list" $((ITERATIONS * cdm_ms / unet_ms)) ;;
      *) train_model "$task" "$method" "$method" "$source_list" "$ITERATIONS" ;;
    esac
    # 3D cost: one whole held-out volume, for the first task only (the cost does not depend on the target).
    if [[ $method != unet-time && $task == "${task_list[0]}" && ! -f "$WORK/results/volume-$method-timing.json" ]]; then
      vname=$(basename "$volume_case")
      args=()
      for m in "${sources[@]}"; do args+=(--source "$m=$volume_case$vname-$m.nii.gz"); done
      "$CDM" synthesize --quiet --model "$model" "${args[@]}" "${target_args[@]}" \
        --output "$WORK/results/volume-$method.nii.gz" --seed 1 \
        --timing "$WORK/results/volume-$method-timing.json" >/dev/null
    fi
    for index in "${!test_cases[@]}"; do
      case_dir="${test_cases[$index]}"
      name=$(basename "$case_dir")
      prefix="$case_dir$name"
      args=()
      for m in "${sources[@]}"; do args+=(--source "$m=$prefix-$m.nii.gz"); done
      result="$WORK/results/$task/$method/$name"
      if [[ ! -f "$result-timing.json" ]]; then
        "$CDM" synthesize --quiet --model "$model" "${args[@]}" "${target_args[@]}" --output "$result.nii.gz" --seed 1 \
          --timing "$result-timing.json" >/dev/null
      fi
      evaluate_case "$result" "$prefix" "$task" "$first_source" "$result.nii.gz"
      [[ $method == cdm ]] || continue
      # What z carries: the oracle z (MRM encoding of the true target), zero z, and z of another case (the next
      # held-out case's true target: "shuffled"); and K = 8 samples with their voxel-wise spread.
      other="${test_cases[$(((index + 1) % ${#test_cases[@]}))]}"
      other_name=$(basename "$other")
      for variant in oracle zero shuffled k8; do
        mkdir -p "$WORK/results/$task/cdm-$variant"
        vresult="$WORK/results/$task/cdm-$variant/$name"
        case $variant in
          oracle) vargs=(--representation oracle --reference "$prefix-$task.nii.gz") ;;
          zero) vargs=(--representation zero) ;;
          shuffled) vargs=(--representation oracle --reference "$other$other_name-$task.nii.gz") ;;
          k8) vargs=(--samples 8 --uncertainty "$vresult-uncertainty.nii.gz") ;;
        esac
        if [[ ! -f "$vresult.nii.gz" ]]; then
          "$CDM" synthesize --quiet --model "$model" "${args[@]}" --output "$vresult.nii.gz" --seed 1 "${vargs[@]}" \
            >/dev/null
        fi
        if [[ $variant == k8 ]]; then
          evaluate_case "$vresult" "$prefix" "$task" "$first_source" "$vresult.nii.gz" "$vresult-uncertainty.nii.gz"
        else
          evaluate_case "$vresult" "$prefix" "$task" "$first_source" "$vresult.nii.gz"
        fi
      done
    done
  done
  # A montage of the first held-out case: sources | reference | each method | |error| of each (| CDM uncertainty).
  first="${test_cases[0]}"
  name=$(basename "$first")
  images=()
  for m in "${sources[@]}"; do images+=("$first$name-$m.nii.gz"); done
  images+=("$first$name-$task.nii.gz")
  errors=()
  shown=()
  for method in cdm cdm-unified unet ddim; do
    [[ -f "$WORK/results/$task/$method/$name.nii.gz" ]] || continue
    images+=("$WORK/results/$task/$method/$name.nii.gz")
    errors+=(--error "$WORK/results/$task/$method/$name-error.nii.gz")
    shown+=("$method")
  done
  uncertainty_panel=()
  if [[ -f "$WORK/results/$task/cdm-k8/$name-uncertainty.nii.gz" ]]; then
    uncertainty_panel=(--uncertainty "$WORK/results/$task/cdm-k8/$name-uncertainty.nii.gz")
  fi
  if ((${#shown[@]})); then
    "$CDM" montage "${images[@]}" "${errors[@]}" "${uncertainty_panel[@]}" --focus "$first$name-seg.nii.gz" \
      --out "$OUT/montage-$task.png" >/dev/null
  fi
done

python3 bench/report.py --work "$WORK" --out "$OUT" --tasks "$TASKS" --preset "$PRESET" --iterations "$ITERATIONS" \
  --train-cases "$TRAIN" --test-cases "$TEST" --size "$SIZE" --spacing "$SPACING" --slab "$SLAB" --stages "$STAGES" \
  --quick "$QUICK" --methods "$METHODS"
echo "bench: wrote $OUT/RESULTS.md and $OUT/results.json"
