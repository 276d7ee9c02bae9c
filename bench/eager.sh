#!/usr/bin/env bash
# The C++ engine against the obvious alternative (issue 12, part 3): the same networks and inference in PyTorch eager
# (bench/cdm_eager.py), timed beside the engine (bench/cdmComponentTiming.cxx) on the same phantom inputs, model,
# seed and thread count. Per model, three components, each the median of --repeats runs after --warmup runs:
#   unet_forward  one C-UNet pass (2D: the slices the engine puts in one call, 1 of 240x240; 3D: the whole volume)
#   encoder_mdn   source encoder + MDN sampling of the whole image
#   synthesis     the whole synthesis (normalise, sample z, C-UNet, denormalise)
# and the largest difference of each eager result from the engine's, relative to the engine result's range.
# Prints a Markdown table and writes <work>/results.json. Exit code 3 when a difference exceeds --tolerance.
#
#   bench/eager.sh [--build DIR] [--work DIR] [--threads 2] [--repeats 3] [--warmup 1] [--models 2d,3d]
#                  [--size-2d 240,240,16] [--size-3d 128,128,128] [--model-3d FILE] [--preset-3d small]
#                  [--seed 0] [--tolerance 1e-4]
#
# 2d is the bundled examples/models/t1c-small.cdm on a 240x240x16 phantom slab (16 axial slices of BraTS's in-plane
# grid); 3d is a `small` 3D CDM trained for one step per stage unless --model-3d gives one (a pass costs the same
# whatever the weights), on a 128x128x128 phantom.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=""
WORK=bench/work/eager
THREADS=2
REPEATS=3
WARMUP=1
MODELS=2d,3d
SIZE_2D=240,240,16
SIZE_3D=128,128,128
MODEL_3D=""
PRESET_3D=small
SEED=0
TOLERANCE=1e-4
while (($#)); do
  case "$1" in
    --build) BUILD_DIR="$2"; shift ;;
    --work) WORK="$2"; shift ;;
    --threads) THREADS="$2"; shift ;;
    --repeats) REPEATS="$2"; shift ;;
    --warmup) WARMUP="$2"; shift ;;
    --models) MODELS="$2"; shift ;;
    --size-2d) SIZE_2D="$2"; shift ;;
    --size-3d) SIZE_3D="$2"; shift ;;
    --model-3d) MODEL_3D="$2"; shift ;;
    --preset-3d) PRESET_3D="$2"; shift ;;
    --seed) SEED="$2"; shift ;;
    --tolerance) TOLERANCE="$2"; shift ;;
    -h|--help) sed -n 2,17p "$0"; exit 0 ;;
    *) echo "bench/eager.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
  shift
done

if [[ -z "$BUILD_DIR" ]]; then
  source scripts/build-targets.sh
  build_targets cdm cdmComponentTiming
fi
CDM="$(cd "$BUILD_DIR" && pwd)/apps/cdm"
TIMING="$(cd "$BUILD_DIR" && pwd)/bench/cdmComponentTiming"
for program in "$CDM" "$TIMING"; do
  [[ -x "$program" ]] || { echo "bench/eager.sh: $program is not built" >&2; exit 2; }
done
mkdir -p "$WORK"

# Phantom cases: one per size (the 2D slab at 1 mm, the 3D volume at 1.5 mm as bench/run.sh's cases).
phantom() { # name size spacing; leaves the case's file prefix in $case
  local folder="$WORK/data/$1"
  if [[ ! -f "$folder/$1-00000/$1-00000-t2f.nii.gz" || "$(cat "$folder/size" 2>/dev/null)" != "$2" ]]; then
    rm -rf "$folder"
    "$CDM" phantom --out "$folder" --cases 1 --seed 31 --size "$2" --spacing "$3" --prefix "$1" >/dev/null
    echo "$2" >"$folder/size"
  fi
  case="$folder/$1-00000/$1-00000"
}

runs=()
if [[ ",$MODELS," == *",2d,"* ]]; then
  phantom EAGER2D "$SIZE_2D" 1
  runs+=("2d|examples/models/t1c-small.cdm|$case")
fi
if [[ ",$MODELS," == *",3d,"* ]]; then
  if [[ -z "$MODEL_3D" ]]; then
    MODEL_3D="$WORK/t1c-$PRESET_3D-3d.cdm"
    if [[ ! -f "$MODEL_3D" ]]; then
      echo "[eager] training a $PRESET_3D 3D model for one step per stage (minutes)" >&2
      "$CDM" phantom --out "$WORK/train" --cases 2 --seed 22 --size 64,64,64 --spacing 3 >/dev/null
      "$CDM" train --model-kind cdm --dim 3 --preset "$PRESET_3D" --data "$WORK/train" --target t1c \
        --sources t1n,t2w,t2f --iterations 1 --validation-interval 1 --seed 1 --threads "$THREADS" \
        --out "$MODEL_3D" >/dev/null
    fi
  fi
  phantom EAGER3D "$SIZE_3D" 1.5
  runs+=("3d|$MODEL_3D|$case")
fi

# Two OpenMP threads on two cores stall whenever anything else runs (bench/EAGER.md): the table says what the load was.
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
for entry in "${runs[@]}"; do
  IFS='|' read -r name model case <<<"$entry"
  sources=()
  for m in t1n t2w t2f; do sources+=(--source "$m=$case-$m.nii.gz"); done
  common=(--model "$model" "${sources[@]}" --threads "$THREADS" --repeats "$REPEATS" --warmup "$WARMUP"
          --seed "$SEED")
  echo "[eager] $name: engine ($model)" >&2
  "$TIMING" "${common[@]}" --outputs "$WORK/$name-engine.safetensors" --json "$WORK/$name-engine.json" >/dev/null
  echo "[eager] $name: PyTorch eager" >&2
  python3 bench/cdm_eager.py time "${common[@]}" --engine-outputs "$WORK/$name-engine.safetensors" \
    --json "$WORK/$name-eager.json" >/dev/null
done

python3 - "$WORK" "$MODELS" "$TOLERANCE" "$LOAD_BEFORE" <<'EOF'
import json, os, platform, sys
work, tolerance, load = sys.argv[1], float(sys.argv[3]), sys.argv[4]
models = [m for m in ("2d", "3d") if m in sys.argv[2].split(",")]
cpu = platform.processor() or platform.machine()
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
reports = {(m, side): json.load(open(os.path.join(work, "{}-{}.json".format(m, side))))
           for m in models for side in ("engine", "eager")}
rows, worst = [], 0.0
for model in models:
    engine, eager = reports[model, "engine"], reports[model, "eager"]
    volume = "x".join(str(s) for s in engine["size"])
    unet = engine["unet_input_shape"]
    unet_size = "x".join(str(s) for s in unet[2:])
    if len(unet) == 4:
        unet_size = "{} x {}".format(unet[0], unet_size)  # slices x slice
    for component in [c for c in ("unet_forward", "encoder_mdn", "synthesis") if c in engine["seconds"]]:
        e, p = engine["seconds"][component], eager["seconds"][component]
        difference = eager.get("max_difference_over_range", {}).get(component)
        worst = max(worst, difference if difference is not None else 0.0)
        rows.append({"model": model, "component": component,
                     "size": unet_size if component == "unet_forward" else volume,
                     "engine_seconds": e, "eager_seconds": p, "speedup": p / e, "max_difference_over_range": difference,
                     "engine_all_seconds": engine["all_seconds"][component],
                     "eager_all_seconds": eager["all_seconds"][component]})
threads = sorted({r["threads"] for r in reports.values()})
print("C++ engine vs PyTorch eager, CPU ({}, {} cores, load average {} before), {} thread(s) each, torch {}, "
      "median of {} after {} warm-up:\n".format(cpu, os.cpu_count(), load, "/".join(map(str, threads)), eager["torch"],
                                               eager["repeats"], eager["warmup"]))
print("| model | component | size | engine s | eager s | speed-up (eager s / engine s) | max rel diff |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for r in rows:
    difference = "n/a" if r["max_difference_over_range"] is None else "{:.2g}".format(r["max_difference_over_range"])
    print("| {model} | {component} | {size} | {engine_seconds:.3f} | {eager_seconds:.3f} | {speedup:.2f} | {d} |"
          .format(d=difference, **r))
json.dump({"cpu": cpu, "cores": os.cpu_count(), "load_average_before": load, "torch": eager["torch"],
           "threads": threads, "rows": rows},
          open(os.path.join(work, "results.json"), "w"), indent=1)
if worst > tolerance:
    print("\nbench/eager.sh: the eager reference differs from the engine by {:.3g} of the range; expected at most {:g}"
          .format(worst, tolerance), file=sys.stderr)
    sys.exit(3)
EOF
