#!/usr/bin/env python3
"""Aggregates bench/segmentation.sh's per-case Dice files into SEGMENTATION.md and segmentation.json: Dice of the
enhancing tumour, tumour core and whole tumour with all four real modalities and with each task's modality replaced
(unified CDM, per-target CDM, UNet, identity, zeros)."""
import argparse
import glob
import json
import os

from report import mean_std

REGIONS = [("enhancing_tumour", "ET"), ("tumour_core", "TC"), ("whole_tumour", "WT")]
REPLACEMENTS = [("cdm-unified", "unified CDM"), ("cdm", "per-target CDM"), ("unet", "UNet"),
                ("identity", "identity"), ("zeros", "zeros (modality absent)")]


def dice_of(folder):
    cases = [json.load(open(p))["dice"] for p in sorted(glob.glob(os.path.join(folder, "*.json")))]
    return {"cases": len(cases), **{region: mean_std([c[region] for c in cases]) for region, _ in REGIONS}}


def cell(pair):
    return "{:.3f} +- {:.3f}".format(*pair)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--segmentation", required=True)
    parser.add_argument("--tasks", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--iterations", type=int, required=True)
    a = parser.parse_args()
    dice_root = os.path.join(a.segmentation, "dice")
    results = {"real": dice_of(os.path.join(dice_root, "real")), "tasks": {}}
    training = {}
    if os.path.exists(os.path.join(a.segmentation, "train.json")):
        training = json.load(open(os.path.join(a.segmentation, "train.json")))
    results["training"] = training
    header = "| modalities | " + " | ".join("Dice {}".format(short) for _, short in REGIONS) + " | cases |"
    lines = ["# Segmentation with synthesized modalities (BraSyn's second score)", "",
             "Produced by `bench/segmentation.sh`: a `small` 2D segmenter (`cdm train --model-kind segmenter`, {} "
             "steps, {} s) trained on the benchmark's training cases with all four real modalities labels each "
             "held-out case (mean +- std over cases) with all four real, and with one modality replaced by each "
             "method's synthesis from bench/run.sh (`identity`: the best single source copied into the gap; "
             "`zeros`: the modality absent, its channels zero). Dice: `cdm evaluate --segmentation-reference` "
             "(ET label 3, TC labels 1+3, WT labels 1-3).".format(a.iterations, training.get("seconds", "?")), ""]
    lines += [header, "| --- | --- | --- | --- | --- |",
              "| all four real | " + " | ".join(cell(results["real"][r]) for r, _ in REGIONS)
              + " | {} |".format(results["real"]["cases"])]
    for task in a.tasks.split(","):
        results["tasks"][task] = {}
        for method, label in REPLACEMENTS:
            folder = os.path.join(dice_root, "{}-{}".format(task, method))
            if not os.path.isdir(folder):
                continue
            entry = dice_of(folder)
            if method == "identity" and os.path.exists(os.path.join(folder, "source")):
                entry["source"] = open(os.path.join(folder, "source")).read().strip()
                label = "identity ({})".format(entry["source"])
            results["tasks"][task][method] = entry
            lines.append("| {} by {} | ".format(task, label) + " | ".join(cell(entry[r]) for r, _ in REGIONS)
                         + " | {} |".format(entry["cases"]))
    lines.append("")
    with open(os.path.join(a.out, "SEGMENTATION.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(a.out, "segmentation.json"), "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
