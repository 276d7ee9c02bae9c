#!/usr/bin/env bash
# The streaming benchmark (issue 12): peak memory, wall time, updates of the filter and runs of the sampler when
# itk::CDMImageFilter's output is streamed in 1, 3 and 8 divisions, for a 2D and a 3D `small` model, on one
# BraTS-sized phantom case (240x240x155 at 1 mm), through four pipelines (the first two run
# examples/cdmStreamingExample.cxx):
#   gather: the sources read whole (itk::ReadImage), the pieces gathered whole by itk::StreamingImageFilter;
#   files:  MetaImage readers -> the filter -> a MetaImage writer in stream divisions (no image is ever whole);
#   cli:    `cdm synthesize` on the MetaImage files: 1 division is its whole-image path (the engine on whole images),
#           more are `--stream-divisions N` (the files pipeline inside the command line). Its base (libraries and
#           model before any image) is not measured from outside, so its pipeline columns are left empty.
#   brats:  `cdm synthesize` as cli, on BraTS's layout: the .nii.gz sources and a .nii.gz output (ITK reads NIfTI in
#           pieces and writes it whole: with divisions the command gathers the pieces, then writes the file).
# Each run is its own process, so each peak resident memory is its own; every output is checked against the
# gathered unstreamed one. Prints a Markdown table and writes <work>/results.json.
#
#   bench/memory.sh [--work DIR] [--divisions 1,3,8] [--models 2d,3d] [--pipelines gather,files,cli,brats]
#                   [--size 240,240,155] [--tile N] [--malloc heap,tcmalloc]
#
# --malloc, the allocators the gather and files pipelines run under, each configuration under each in turn (a second
# table compares them): heap (the example as it is: cdm::KeepWorkingMemoryInTheHeap), glibc (CDM_KEEP_MALLOC_DEFAULTS=1:
# glibc's dynamic thresholds), tcmalloc (LD_PRELOAD of libtcmalloc_minimal.so.4). The cli and brats pipelines run
# `cdm` as built (linked with tcmalloc when the build found it), once per configuration, under that name.
#
# The 2D model is the bundled examples/models/t1c-small.cdm; the 3D model is a `small` 3D CDM trained for one step
# per stage (its weights do not change what a pass costs). --tile N passes a C-UNet tile edge to the filter.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=bench/work/memory
DIVISIONS=1,3,8
MODELS=2d,3d
SIZE=240,240,155
TILE=""
PIPELINES=gather,files,cli
MALLOC=heap,tcmalloc
while (($#)); do
  case "$1" in
    --work) WORK="$2"; shift ;;
    --divisions) DIVISIONS="$2"; shift ;;
    --models) MODELS="$2"; shift ;;
    --size) SIZE="$2"; shift ;;
    --tile) TILE="$2"; shift ;;
    --pipelines) PIPELINES="$2"; shift ;;
    --malloc) MALLOC="$2"; shift ;;
    -h|--help) sed -n 2,25p "$0"; exit 0 ;;
    *) echo "bench/memory.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
  shift
done

source scripts/build-targets.sh
build_targets cdm cdmStreamingExample
CDM="$BUILD_DIR/apps/cdm"
STREAM="$BUILD_DIR/examples/cdmStreamingExample"
mkdir -p "$WORK"

# One case at BraTS's grid, and (for the 3D model) two small training cases.
case_dir="$WORK/data/MEMORY-00000"
if [[ ! -f "$case_dir/MEMORY-00000-t2f.nii.gz" ]]; then
  "$CDM" phantom --out "$WORK/data" --cases 1 --seed 21 --size "$SIZE" --spacing 1 --prefix MEMORY >/dev/null
fi
# The files pipeline reads MetaImage, which ITK reads piece by piece (it reads a .nii.gz in pieces too, but decompresses
# each from the file's start: slower).
# The geometry is left out (unit direction, zero origin): the filter's arithmetic does not depend on it.
for m in t1n t2w t2f; do
  mha="$case_dir/MEMORY-00000-$m.mha"
  [[ -f "$mha" ]] || python3 bench/nifti_to_mha.py "$case_dir/MEMORY-00000-$m.nii.gz" "$mha"
done
models=()
[[ ",$MODELS," == *",2d,"* ]] && models+=("2d:examples/models/t1c-small.cdm")
if [[ ",$MODELS," == *",3d,"* ]]; then
  if [[ ! -f "$WORK/t1c-small-3d.cdm" ]]; then
    "$CDM" phantom --out "$WORK/train" --cases 2 --seed 22 --size 64,64,64 --spacing 3 >/dev/null
    "$CDM" train --model-kind cdm --dim 3 --preset small --data "$WORK/train" --target t1c --sources t1n,t2w,t2f \
      --iterations 1 --validation-interval 1 --seed 1 --out "$WORK/t1c-small-3d.cdm" >/dev/null
  fi
  models+=("3d:$WORK/t1c-small-3d.cdm")
fi

IFS=, read -r -a division_list <<<"$DIVISIONS"
IFS=, read -r -a pipeline_list <<<"$PIPELINES"
IFS=, read -r -a malloc_list <<<"$MALLOC"
TCMALLOC=$(ldconfig -p | awk '/libtcmalloc_minimal\.so\.4 /{found = $NF} END {print found}')
cli_allocator=heap
ldd "$CDM" | grep -q tcmalloc && cli_allocator=tcmalloc
results="$WORK/results.jsonl"
: >"$results"
# One untimed run first: the first process after a build or a phantom found the libraries and files cold (measured:
# 13.7 s instead of 9.5-10.2 s for the same 2D configuration), and it is the row every ratio divides by.
first="${models[0]#*:}"
"$STREAM" "$first" "$case_dir/MEMORY-00000-t1n.mha" "$case_dir/MEMORY-00000-t2w.mha" "$case_dir/MEMORY-00000-t2f.mha" \
  "$WORK/warm-up.mha" 1 cpu "${TILE:-0}" files >/dev/null
for entry in "${models[@]}"; do
  name="${entry%%:*}" model="${entry#*:}"
  for pipeline in "${pipeline_list[@]}"; do
    extension=nii.gz
    [[ "$pipeline" != gather && "$pipeline" != brats ]] && extension=mha
    for d in "${division_list[@]}"; do
     for allocator in "${malloc_list[@]}"; do
      case "$allocator" in
        heap) environment=() ;;
        glibc) environment=(CDM_KEEP_MALLOC_DEFAULTS=1) ;;
        tcmalloc)
          [[ -n "$TCMALLOC" ]] || { echo "bench/memory.sh: --malloc tcmalloc: libtcmalloc_minimal.so.4 not found (apt-get install libtcmalloc-minimal4)" >&2; exit 2; }
          environment=(LD_PRELOAD="$TCMALLOC") ;;
        *) echo "bench/memory.sh: --malloc $allocator: expected heap, glibc or tcmalloc" >&2; exit 2 ;;
      esac
      if [[ "$pipeline" == cli || "$pipeline" == brats ]]; then
        # Once per configuration, under the allocator it was built with (whatever --malloc lists).
        [[ "$allocator" == "${malloc_list[0]}" ]] || continue
        allocator=$cli_allocator
        environment=()
      fi
      out="$WORK/$name-$pipeline-$d-$allocator.mha"
      [[ "$pipeline" == brats ]] && out="$WORK/$name-$pipeline-$d-$allocator.nii.gz"
      if [[ "$pipeline" == cli || "$pipeline" == brats ]]; then
        line=$(env "${environment[@]}" python3 bench/peak_rss.py --pipeline "$pipeline" "$WORK/cli.json" "$d" "$CDM" \
          synthesize --quiet --device cpu \
          --model "$model" --source t1n="$case_dir/MEMORY-00000-t1n.$extension" \
          --source t2w="$case_dir/MEMORY-00000-t2w.$extension" --source t2f="$case_dir/MEMORY-00000-t2f.$extension" \
          --output "$out" --tile "${TILE:-0}" --timing "$WORK/cli.json" $( ((d > 1)) && echo --stream-divisions "$d"))
      else
        line=$(env "${environment[@]}" "$STREAM" "$model" "$case_dir/MEMORY-00000-t1n.$extension" "$case_dir/MEMORY-00000-t2w.$extension" \
          "$case_dir/MEMORY-00000-t2f.$extension" "$out" "$d" cpu "${TILE:-0}" "$pipeline" | tail -n 1)
      fi
      echo "{\"model\": \"$name\", \"malloc\": \"$allocator\", \"result\": $line}" >>"$results"
      echo "$name, $pipeline, $d divisions, $allocator: $line" >&2
     done
    done
  done
done

python3 - "$results" "$WORK" "$SIZE" "$(nproc)" <<'EOF'
import array, gzip, json, os, struct, sys, zlib
rows = [json.loads(l) for l in open(sys.argv[1])]
work, size, cores = sys.argv[2], sys.argv[3], sys.argv[4]

def read_nifti(path):
    """The voxels of a float .nii.gz written by ITK (the header's vox_offset, then little-endian floats)."""
    data = gzip.open(path).read()
    voxels = array.array("f")
    voxels.frombytes(data[int(struct.unpack("<f", data[108:112])[0]):])
    return voxels


def read_mha(path):
    """The voxels of a float .mha written by ITK (header lines, then little-endian floats, zlib-compressed or raw)."""
    data = open(path, "rb").read()
    end = data.index(b"ElementDataFile = LOCAL\n") + len(b"ElementDataFile = LOCAL\n")
    voxels = array.array("f")
    compressed = b"CompressedData = True" in data[:end]
    voxels.frombytes(zlib.decompress(data[end:]) if compressed else data[end:])
    return voxels

print(f"itk::CDMImageFilter streamed, {size} voxels, CPU ({cores} cores). Ratios are to the model's unstreamed gather "
      "run (whole sources, one piece) with the first allocator setting given:\n")
print("| model | pipeline | divisions | malloc | updates | sampler runs | continued pieces | wall s | peak RSS MB | peak vs unstreamed | pipeline MB (peak - base) | pipeline vs unstreamed | wall vs unstreamed | max diff vs unstreamed / its range |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
shown = lambda value, form: format(value, form) if value is not None else ""
summary = []
for model in dict.fromkeys(r["model"] for r in rows):
    mine = [dict(r["result"], malloc=r.get("malloc", "heap")) for r in rows if r["model"] == model]
    base = next((r for r in mine if r["divisions"] == 1 and r.get("pipeline") == "gather" and r["malloc"] == "heap"),
                next((r for r in mine if r["divisions"] == 1 and r.get("pipeline") == "gather"), mine[0]))
    output = lambda r: os.path.join(work, f"{model}-{r.get('pipeline', 'gather')}-{r['divisions']}-{r['malloc']}" +
                                    (".nii.gz" if r.get("pipeline") == "brats" else ".mha"))
    read = lambda r: read_nifti(output(r)) if r.get("pipeline") == "brats" else read_mha(output(r))
    base_voxels = read(base)
    base_range = (max(base_voxels) - min(base_voxels)) or 1.0
    for r in mine:
        voxels = read(r)
        assert len(voxels) == len(base_voxels), output(r)
        diff = max(abs(a - b) for a, b in zip(voxels, base_voxels)) / base_range if r is not base else 0.0
        pipeline = r["peak_rss_mb"] - r["base_rss_mb"] if r.get("base_rss_mb") is not None else None
        r.update(model=model, peak_ratio=r["peak_rss_mb"] / base["peak_rss_mb"], wall_ratio=r["seconds"] / base["seconds"],
                 pipeline_mb=pipeline, max_difference_over_range=diff,
                 pipeline_ratio=pipeline / (base["peak_rss_mb"] - base["base_rss_mb"]) if pipeline is not None else None)
        summary.append(r)
        print(f"| {model} | {r.get('pipeline', 'gather')} | {r['divisions']} | {r['malloc']} | {r['updates']} | "
              f"{r['sampler_runs']} | {r.get('continued_pieces', 0)} | {r['seconds']:.1f} | "
              f"{r['peak_rss_mb']:.0f} | {r['peak_ratio']:.2f} | {shown(pipeline, '.0f')} | "
              f"{shown(r['pipeline_ratio'], '.2f')} | "
              f"{r['wall_ratio']:.2f} | {diff:.2g} |")
others = [a for a in dict.fromkeys(r["malloc"] for r in summary) if a != "heap"]
pairs = [(h, {a: next((o for o in summary if o["malloc"] == a and all(o.get(k) == h.get(k)
                                                                       for k in ("model", "pipeline", "divisions"))),
                      None) for a in others})
         for h in summary if h["malloc"] == "heap"]
pairs = [(h, found) for h, found in pairs if any(found.values())]
if pairs:
    print("\nThe allocators side by side, against heap (the examples' cdm::KeepWorkingMemoryInTheHeap); glibc: "
          "CDM_KEEP_MALLOC_DEFAULTS=1 (glibc's dynamic thresholds); tcmalloc: LD_PRELOAD of libtcmalloc_minimal. "
          "Each configuration ran under each allocator in turn:\n")
    print("| model | pipeline | divisions | allocator | wall s | wall vs heap | peak MB | peak vs heap |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for h, found in pairs:
        print(f"| {h['model']} | {h.get('pipeline', 'gather')} | {h['divisions']} | heap | {h['seconds']:.1f} | 1.00 | "
              f"{h['peak_rss_mb']:.0f} | 1.00 |")
        for name, o in found.items():
            if o is not None:
                print(f"| {h['model']} | {h.get('pipeline', 'gather')} | {h['divisions']} | {name} | "
                      f"{o['seconds']:.1f} | {o['seconds'] / h['seconds']:.2f} | {o['peak_rss_mb']:.0f} | "
                      f"{o['peak_rss_mb'] / h['peak_rss_mb']:.2f} |")
EOF
