#!/usr/bin/env bash
# Data-parallel training on one machine (README.md, "torchrun"): iterations per second of one process with 2 threads
# against 2 ranks with 1 thread each (`torchrun --no-python --nproc-per-node 2 cdm train`, Gloo on 127.0.0.1), at
# the same global batch, and the share of a step the ranks spend in collectives. Writes <out>/DISTRIBUTED.md.
#
#   bench/distributed.sh [--out DIR] [--iterations N] [--kinds unet,cdm]
#
# Run it on an otherwise idle machine: it times. A `small` model on 128x128 slices, batch 8 (the benchmark's).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="bench"
ITERATIONS=40
KINDS="unet,cdm"
while (($#)); do
  case "$1" in
    --out) OUT="$2"; shift ;;
    --iterations) ITERATIONS="$2"; shift ;;
    --kinds) KINDS="$2"; shift ;;
    -h|--help) sed -n 2,8p "$0"; exit 0 ;;
    *) echo "bench/distributed.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
  shift
done
TORCHRUN=$(command -v torchrun || true)
if [[ -z $TORCHRUN ]]; then
  echo "bench/distributed.sh: torchrun (the torch wheel's launcher) is not on PATH" >&2
  exit 2
fi
source scripts/build-targets.sh
build_targets cdm
CDM="$BUILD_DIR/apps/cdm"
WORK=$(mktemp -d /tmp/cdm-distributed.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
"$CDM" phantom --out "$WORK/data" --cases 6 --seed 21 --size 128,128,32 --spacing 1.5 >/dev/null

# One run: prints "<iterations per second> <seconds in collectives> <stage seconds>" of rank 0's last stage.
#   measure LOG [launcher...] -- [cdm train options]
measure() {
  local log="$1"
  shift
  "$@" > "$log" 2>&1
  python3 - "$log" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
rates = re.findall(r"iter (\d+)/(\d+) .*? ([0-9.]+) it/s", text)
comm = re.findall(r"spent ([0-9hms.]+) in collectives", text)
def seconds(t):
    total = 0.0
    for value, unit in re.findall(r"([0-9.]+)([hms])", t):
        total += float(value) * {"h": 3600, "m": 60, "s": 1}[unit]
    return total
stage = re.findall(r"stage \S+: loss .*?\(iterations (\d+)-(\d+), ([0-9hms.]+)\)", text)
print(rates[-1][2] if rates else "nan", seconds(comm[-1]) if comm else 0.0,
      sum(seconds(s[2]) for s in stage) if stage else "nan")
EOF
}

declare -a rows
IFS=',' read -r -a kinds <<<"$KINDS"
for kind in "${kinds[@]}"; do
  case $kind in
    cdm) train=(--model-kind cdm --target t1c --stage-iterations "mrm=$ITERATIONS,cunet=$ITERATIONS,mdn=$ITERATIONS,finetune=$ITERATIONS") ;;
    *) train=(--model-kind "$kind" --target t1c --iterations "$ITERATIONS") ;;
  esac
  common=(train --data "$WORK/data" --preset small --batch-size 8 --validation-interval 100000
          --checkpoint-interval 100000 --device cpu "${train[@]}")
  read -r one_rate _ one_seconds < <(measure "$WORK/$kind-1.log" "$CDM" "${common[@]}" --threads 2 \
    --out "$WORK/$kind-1.cdm")
  read -r two_rate two_comm two_seconds < <(measure "$WORK/$kind-2.log" "$TORCHRUN" --no-python \
    --nproc-per-node 2 --master-port $((29600 + RANDOM % 1000)) "$CDM" "${common[@]}" --threads 1 \
    --out "$WORK/$kind-2.cdm")
  rows+=("$kind|$one_rate|$one_seconds|$two_rate|$two_seconds|$two_comm")
done

python3 - "$OUT/DISTRIBUTED.md" "$ITERATIONS" "${rows[@]}" <<'EOF'
import os, platform, subprocess, sys
out, iterations, rows = sys.argv[1], sys.argv[2], sys.argv[3:]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
lines = ["# Data-parallel training: 1 process x 2 threads against 2 ranks x 1 thread", "",
         "Produced by `bench/distributed.sh` on {} ({} cores): a `small` 2D model on 128x128 slices, global batch 8, "
         "{} iterations per stage, on 6 phantom cases; 2 ranks launched by `torchrun --no-python --nproc-per-node 2 "
         "cdm train` (Gloo on 127.0.0.1, one flattened all-reduce of the gradients per step). Iterations per second of "
         "the last stage (rank 0's); the communication share is rank 0's time in collectives (waiting for the other "
         "rank included) over its stages' time.".format(cpu, os.cpu_count(), iterations), "",
         "| model kind | 1 rank x 2 threads (it/s) | 2 ranks x 1 thread (it/s) | 2 ranks / 1 rank | communication share (2 ranks) |",
         "| --- | --- | --- | --- | --- |"]
for row in rows:
    kind, one_rate, one_seconds, two_rate, two_seconds, two_comm = row.split("|")
    ratio = float(two_rate) / float(one_rate)
    share = float(two_comm) / float(two_seconds) if float(two_seconds) > 0 else float("nan")
    lines.append("| {} | {:.3f} | {:.3f} | {:.2f} | {:.1%} |".format(kind, float(one_rate), float(two_rate), ratio, share))
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
