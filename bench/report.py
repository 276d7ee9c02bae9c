#!/usr/bin/env python3
"""Aggregates bench/run.sh's per-case JSON files into RESULTS.md and results.json: quality per region (whole brain,
tumour, enhancing tumour, non-tumour brain) beside the copy-the-input floor, BraSyn's SSIM, CDM's representation
ablation and uncertainty, and speed."""
import argparse
import glob
import json
import math
import os
import platform
import statistics
import subprocess

TRAINED = ["cdm", "cdm-unified", "unet", "unet-time", "ddim"]
REGIONS = ["brain", "tumour", "enhancing", "non_tumour"]
ABLATIONS = [("sampled", "cdm"), ("oracle", "cdm-oracle"), ("zero", "cdm-zero"), ("shuffled", "cdm-shuffled")]


def mean_std(values):
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def best_identity(task_results):
    """The copy-the-input floor of a task (its results folder): the source whose gain-scaled copy scores best on the
    whole brain, as quality() with its name under "source"; None when no identity-* folder is there."""
    identities = {os.path.basename(f)[len("identity-"):]: quality(f)
                  for f in sorted(glob.glob(os.path.join(task_results, "identity-*")))}
    if not identities:
        return None
    best = max(identities, key=lambda m: identities[m]["regions"]["brain"]["psnr"][0])
    return dict(identities[best], source=best)


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        torch = subprocess.run(["python3", "-c", "import torch; print(torch.__version__, torch.get_num_threads())"],
                               capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        torch = ["unknown", "unknown"]
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch[0], "torch_threads": torch[1]}


def load_all(pattern):
    return [json.load(open(p)) for p in sorted(glob.glob(pattern))]


def quality(folder):
    """Per-region figures of one method's held-out cases (mean, std), BraSyn SSIM, uncertainty when present."""
    metrics = load_all(os.path.join(folder, "*-metrics.json"))
    brasyn = load_all(os.path.join(folder, "*-brasyn.json"))
    entry = {"cases": len(metrics), "regions": {}, "brasyn": {}}
    for region in REGIONS:
        entry["regions"][region] = {key: mean_std([m.get("regions", {}).get(region, {}).get(key) for m in metrics])
                                    for key in ["psnr", "ssim", "mae"]}
        entry["brasyn"][region] = mean_std([b.get("regions", {}).get(region, {}).get("ssim") for b in brasyn])
    if any("uncertainty" in m for m in metrics):
        entry["uncertainty"] = {key: mean_std([m["uncertainty"][key] for m in metrics if "uncertainty" in m])
                                for key in ["spearman", "auroc_worst"]}
    return entry


def timing(folder):
    runs = load_all(os.path.join(folder, "*-timing.json"))
    train_path = os.path.join(folder, "train.json")
    train = json.load(open(train_path)) if os.path.exists(train_path) else {}
    return {"seconds_per_slice": mean_std([(t["sampling_seconds"] + t["synthesis_seconds"]) / t["slices"] for t in runs]),
            "train_seconds": train.get("milliseconds", float("nan")) / 1000.0,
            "train_iterations": train.get("iterations")}


def fmt(pair, digits=2):
    return "{:.{d}f} +- {:.{d}f}".format(pair[0], pair[1], d=digits)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ["work", "out", "tasks", "preset", "iterations", "train-cases", "test-cases", "size", "spacing", "slab",
                 "stages", "quick", "methods"]:
        parser.add_argument("--" + name, required=True)
    a = parser.parse_args()
    results = {"machine": machine(), "setup": {k: getattr(a, k) for k in
                                               ["preset", "iterations", "train_cases", "test_cases", "size", "spacing",
                                                "slab", "stages", "quick", "methods"]},
               "tasks": {}, "volume": {}}
    for method in TRAINED:
        path = os.path.join(a.work, "results", "volume-{}-timing.json".format(method))
        if os.path.exists(path):
            t = json.load(open(path))
            results["volume"][method] = {"size": t["size"], "total_seconds": t["total_seconds"] - t["load_seconds"],
                                         "sampling_seconds": t["sampling_seconds"],
                                         "synthesis_seconds": t["synthesis_seconds"]}
    for task in a.tasks.split(","):
        root = os.path.join(a.work, "results", task)
        methods = {}
        identity = best_identity(root)
        if identity:
            methods["identity"] = identity
        for method in TRAINED:
            folder = os.path.join(root, method)
            if os.path.isdir(folder) and glob.glob(os.path.join(folder, "*-metrics.json")):
                methods[method] = dict(quality(folder), **timing(folder))
        ablation = {name: quality(os.path.join(root, folder)) for name, folder in ABLATIONS
                    if glob.glob(os.path.join(root, folder, "*-metrics.json"))}
        k8 = os.path.join(root, "cdm-k8")
        uncertainty = quality(k8) if glob.glob(os.path.join(k8, "*-metrics.json")) else None
        results["tasks"][task] = {"methods": methods, "ablation": ablation, "uncertainty": uncertainty}

    lines = ["# itk-cdm benchmark" + (" (quick smoke run)" if a.quick == "1" else ""), "",
             "Produced by `bench/run.sh" + (" --quick" if a.quick == "1" else "") + "` on phantom data (`cdm phantom`, "
             "Colin27 anatomy).", "",
             "Machine: {cpu}, {cores} cores, torch {torch} ({torch_threads} threads), CPU.".format(**results["machine"]),
             "Setup: preset `{preset}`; {train_cases} training cases of {size} voxels at {spacing} mm; {test_cases} "
             "held-out cases (other seeds), each a {slab}-slice axial slab about its tumour. Every trained method gets "
             "{iterations} gradient steps (batch 8, whole 2D slices) except `unet-time`, which gets CDM's training wall "
             "time; CDM splits its steps over its stages ({stages}). Methods: {methods}.".format(**results["setup"]),
             "",
             "Quality, mean +- std over held-out cases: the reference normalised by a fixed robust rule (99.5th "
             "percentile of the foreground = 1, clipped at 1.5, data range 1), each synthesis scaled by its "
             "least-squares gain against it (`cdm evaluate --normalize gain --segmentation`); regions: the brain, the "
             "tumour (label > 0), the enhancing tumour (label 3) and the brain outside the tumour. `identity` copies the "
             "best single source under the same gain: the floor any model must clear. BraSyn SSIM: `cdm evaluate "
             "--protocol brasyn` (each image clipped to its 0.5/99.5 brain percentiles, scaled to [0, 1]).", ""]
    for task, r in results["tasks"].items():
        methods = r["methods"]
        lines += ["## Task: " + task, "",
                  "| method | brain PSNR | brain SSIM | tumour PSNR | tumour SSIM | enhancing PSNR | non-tumour PSNR "
                  "| BraSyn SSIM tumour | BraSyn SSIM non-tumour | training (s) | steps |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for method, e in methods.items():
            g = e["regions"]
            label = method + (" ({})".format(e["source"]) if method == "identity" else "")
            lines.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
                label, fmt(g["brain"]["psnr"]), fmt(g["brain"]["ssim"], 4), fmt(g["tumour"]["psnr"]),
                fmt(g["tumour"]["ssim"], 4), fmt(g["enhancing"]["psnr"]), fmt(g["non_tumour"]["psnr"]),
                fmt(e["brasyn"]["tumour"], 4), fmt(e["brasyn"]["non_tumour"], 4),
                "{:.0f}".format(e["train_seconds"]) if "train_seconds" in e else "-",
                e.get("train_iterations") or "-"))
        if "identity" in methods and "cdm" in methods:
            lift = {region: methods["cdm"]["regions"][region]["psnr"][0] - methods["identity"]["regions"][region]["psnr"][0]
                    for region in REGIONS}
            lines += ["", "CDM over identity (PSNR, dB): " + ", ".join(
                "{} {:+.2f}".format(region, value) for region, value in lift.items()) + "."]
        if "cdm" in methods and "cdm-unified" in methods:
            gap = {region: methods["cdm-unified"]["regions"][region]["psnr"][0] - methods["cdm"]["regions"][region]["psnr"][0]
                   for region in REGIONS}
            lines += ["", "Unified CDM (one model for every task, the per-target models' total steps) against the "
                      "per-target CDM (PSNR, dB): " + ", ".join(
                          "{} {:+.2f}".format(region, value) for region, value in gap.items()) + "."]
        if r["ablation"]:
            lines += ["", "What z carries (CDM with its representation replaced; `shuffled` = the oracle z of another "
                      "held-out case):", "",
                      "| z | brain PSNR | tumour PSNR | enhancing PSNR | tumour SSIM |", "| --- | --- | --- | --- | --- |"]
            for name, e in r["ablation"].items():
                g = e["regions"]
                lines.append("| {} | {} | {} | {} | {} |".format(name, fmt(g["brain"]["psnr"]), fmt(g["tumour"]["psnr"]),
                                                                fmt(g["enhancing"]["psnr"]), fmt(g["tumour"]["ssim"], 4)))
        if r["uncertainty"] and "uncertainty" in r["uncertainty"]:
            u = r["uncertainty"]
            lines += ["", "Uncertainty from K = 8 samples of z (voxel-wise std) against |error| of their mean, inside "
                      "the brain: Spearman rho {}, AUROC for the worst 10 % of voxels {} (mean PSNR of the 8-sample mean: "
                      "brain {}, tumour {}).".format(fmt(u["uncertainty"]["spearman"], 3),
                                                     fmt(u["uncertainty"]["auroc_worst"], 3),
                                                     fmt(u["regions"]["brain"]["psnr"]), fmt(u["regions"]["tumour"]["psnr"]))]
        timed = {m: e for m, e in methods.items() if "seconds_per_slice" in e and m != "unet-time"}
        if "unet" in timed:
            floor = timed["unet"]["seconds_per_slice"][0]
            lines += ["", "| method | s / slice (held-out slabs) | x unet (same run) |", "| --- | --- | --- |"]
            for method, e in timed.items():
                lines.append("| {} | {} | {:.2f} |".format(method, fmt(e["seconds_per_slice"], 4),
                                                          e["seconds_per_slice"][0] / floor if floor > 0 else float("nan")))
        if os.path.exists(os.path.join(a.out, "montage-{}.png".format(task))):
            lines += ["", "![montage](montage-{}.png)".format(task),
                      "Montage columns: sources | reference | each trained method | |error| of each (0 to 0.5) | CDM's "
                      "uncertainty (K = 8).", ""]
        lines.append("")
    if results["volume"]:
        size = "x".join(str(v) for v in next(iter(results["volume"].values()))["size"])
        floor = results["volume"].get("unet", {}).get("total_seconds", float("nan"))
        lines += ["## Speed on one whole {} volume".format(size), "",
                  "One held-out volume per method, the first task's models, after loading; CDM's time split into its "
                  "source encoder + MDN sampling and its C-UNet.", "",
                  "| method | s / volume | source encoder + MDN (s) | C-UNet or sampler (s) | x unet (same run) |",
                  "| --- | --- | --- | --- | --- |"]
        for method, v in results["volume"].items():
            lines.append("| {} | {:.2f} | {:.3f} | {:.2f} | {:.2f} |".format(
                method, v["total_seconds"], v["sampling_seconds"], v["synthesis_seconds"], v["total_seconds"] / floor))
        lines.append("")
    open(os.path.join(a.out, "RESULTS.md"), "w").write("\n".join(lines) + "\n")
    json.dump(results, open(os.path.join(a.out, "results.json"), "w"), indent=2)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
