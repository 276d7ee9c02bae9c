#!/usr/bin/env bash
# Reduced precision (issue 12): what `cdm synthesize --precision fp32|bf16|fp16` gains in speed and costs in fidelity.
#   Speed: the bundled 2D model (examples/models/t1c-small.cdm) on one 240x240x155 phantom case (BraTS's grid), each
#          precision run side by side in this one script, `--repeats` times (the median is reported).
#   Fidelity: the same model on the benchmark's 10 held-out t1c slabs (bench/run.sh's test cases, regenerated from
#          their seed), scored as bench/run.sh scores them (`cdm evaluate --normalize gain`) over the brain and inside
#          the tumour, beside the copy-the-input floor (t1n) and each precision's largest difference from fp32.
# Prints a Markdown table and writes <work>/results.json.
#
#   bench/precision.sh [--work DIR] [--precisions fp32,bf16,fp16] [--repeats 2] [--threads 0] [--device cpu]
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=bench/work/precision
PRECISIONS=fp32,bf16,fp16
REPEATS=2
THREADS=0
DEVICE=cpu
while (($#)); do
  case "$1" in
    --work) WORK="$2"; shift ;;
    --precisions) PRECISIONS="$2"; shift ;;
    --repeats) REPEATS="$2"; shift ;;
    --threads) THREADS="$2"; shift ;;
    --device) DEVICE="$2"; shift ;;
    -h|--help) sed -n 2,11p "$0"; exit 0 ;;
    *) echo "bench/precision.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
  shift
done
source scripts/build-targets.sh
build_targets cdm
CDM="$BUILD_DIR/apps/cdm"
MODEL=examples/models/t1c-small.cdm
mkdir -p "$WORK"
threads=()
((THREADS > 0)) && threads=(--threads "$THREADS")

# The speed case (as bench/memory.sh's) and the benchmark's held-out slabs (bench/run.sh: seed 12).
if [[ ! -f "$WORK/volume/SPEED-00000/SPEED-00000-t2f.nii.gz" ]]; then
  "$CDM" phantom --out "$WORK/volume" --cases 1 --seed 21 --size 240,240,155 --spacing 1 --prefix SPEED >/dev/null
fi
if [[ ! -d "$WORK/test" ]]; then
  "$CDM" phantom --out "$WORK/test" --cases 10 --seed 12 --size 128,128,96 --spacing 1.5 --prefix TEST \
    --tumour-slab 16 >/dev/null
fi
sources() { echo --source "t1n=$1-t1n.nii.gz" --source "t2w=$1-t2w.nii.gz" --source "t2f=$1-t2f.nii.gz"; }

IFS=, read -r -a precision_list <<<"$PRECISIONS"
speed="$WORK/volume/SPEED-00000/SPEED-00000"
# Speed: the precisions interleaved, repeat by repeat, so that drift in the machine's load touches each alike.
# fp16 on a CPU without half-precision arithmetic is an order of magnitude slower: one run of it says so.
for ((r = 1; r <= REPEATS; ++r)); do
  for p in "${precision_list[@]}"; do
    [[ $p == fp16 && $DEVICE == cpu && $r -gt 1 ]] && continue
    # shellcheck disable=SC2046
    "$CDM" synthesize --model "$MODEL" $(sources "$speed") --output "$WORK/speed-$p.nii.gz" --precision "$p" \
      --device "$DEVICE" "${threads[@]}" --quiet --timing "$WORK/speed-$p-$r.json" >/dev/null
    echo "speed, $p, repeat $r: $(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['total_seconds'])" \
      "$WORK/speed-$p-$r.json") s" >&2
  done
done
# Fidelity on the held-out slabs, and the copy-the-input floor.
for case_dir in "$WORK"/test/*/; do
  name=$(basename "$case_dir") prefix="$case_dir$name"
  score() { # score PREDICTION RESULT_JSON
    [[ -f "$2" ]] || "$CDM" evaluate --reference "$prefix-t1c.nii.gz" --prediction "$1" --normalize gain \
      --mask "$prefix-t1n.nii.gz" --segmentation "$prefix-seg.nii.gz" --json >"$2"
  }
  score "$prefix-t1n.nii.gz" "$WORK/identity-$name.json"
  for p in "${precision_list[@]}"; do
    out="$WORK/slab-$p-$name.nii.gz"
    # shellcheck disable=SC2046
    [[ -f "$out" ]] || "$CDM" synthesize --model "$MODEL" $(sources "$prefix") --output "$out" --precision "$p" \
      --device "$DEVICE" "${threads[@]}" --quiet >/dev/null
    score "$out" "$WORK/$p-$name.json"
  done
done
python3 - "$WORK" "$PRECISIONS" "$REPEATS" "$(nproc)" <<'EOF'
import glob, json, os, statistics, sys
import numpy as np
import itk
work, precisions, repeats, cores = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3]), sys.argv[4]

def regions(pattern):
    rows = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(work, pattern)))]
    return {r: statistics.mean(m["regions"][r]["psnr"] for m in rows) for r in ["brain", "tumour"]}, len(rows)

def largest_difference(p):
    """The largest |synthesis - fp32| over the speed volume, over the fp32 image's range."""
    a = itk.array_from_image(itk.imread(os.path.join(work, "speed-fp32.nii.gz"), itk.F))
    b = itk.array_from_image(itk.imread(os.path.join(work, f"speed-{p}.nii.gz"), itk.F))
    return float(np.abs(a - b).max() / (a.max() - a.min()))

identity, cases = regions("identity-*.json")
rows = []
for p in precisions:
    timings = [json.load(open(path)) for r in range(1, repeats + 1)
               if os.path.exists(path := os.path.join(work, f"speed-{p}-{r}.json"))]
    quality, _ = regions(f"{p}-*.json")
    rows.append(dict(precision=p, seconds=statistics.median(t["total_seconds"] for t in timings),
                     sampling=statistics.median(t["sampling_seconds"] for t in timings),
                     synthesis=statistics.median(t["synthesis_seconds"] for t in timings),
                     brain=quality["brain"], tumour=quality["tumour"],
                     difference=largest_difference(p) if "fp32" in precisions else float("nan")))
base = next((r for r in rows if r["precision"] == "fp32"), rows[0])
print(f"Reduced precision, bundled 2D model, CPU ({cores} cores); speed: 240x240x155, median of {repeats}; "
      f"(fp16 on a CPU: 1); fidelity: {cases} held-out t1c slabs (PSNR dB, gain-normalised), identity (t1n) brain "
      f"{identity['brain']:.2f} / tumour {identity['tumour']:.2f}:\n")
print("| precision | total s | sampling s | C-UNet s | speed-up vs fp32 | brain PSNR | tumour PSNR | "
      "brain / tumour vs fp32 dB | largest diff vs fp32 / range |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for r in rows:
    r["speedup"] = base["seconds"] / r["seconds"]
    print(f"| {r['precision']} | {r['seconds']:.1f} | {r['sampling']:.1f} | {r['synthesis']:.1f} | {r['speedup']:.2f} | "
          f"{r['brain']:.2f} | {r['tumour']:.2f} | {r['brain'] - base['brain']:+.2f} / "
          f"{r['tumour'] - base['tumour']:+.2f} | {r['difference']:.2g} |")
json.dump({"identity": identity, "rows": rows}, open(os.path.join(work, "results.json"), "w"), indent=1)
EOF
