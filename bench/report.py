#!/usr/bin/env python3
"""Aggregates bench/run.sh's per-case JSON files into RESULTS.md and results.json (tables of quality and speed)."""
import argparse
import glob
import json
import os
import platform
import statistics
import subprocess

METHODS = ["cdm", "unet", "ddim"]


def mean_std(values):
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


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


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ["work", "out", "tasks", "preset", "iterations", "train-cases", "test-cases", "size", "spacing", "slab",
                 "stages", "quick"]:
        parser.add_argument("--" + name, required=True)
    a = parser.parse_args()
    results = {"machine": machine(), "setup": {k: getattr(a, k) for k in
                                               ["preset", "iterations", "train_cases", "test_cases", "size", "spacing",
                                                "slab", "stages", "quick"]},
               "tasks": {}, "volume": {}}
    for method in METHODS:
        path = os.path.join(a.work, "results", "volume-{}-timing.json".format(method))
        if os.path.exists(path):
            t = json.load(open(path))
            results["volume"][method] = {"size": t["size"], "total_seconds": t["total_seconds"] - t["load_seconds"],
                                         "sampling_seconds": t["sampling_seconds"],
                                         "synthesis_seconds": t["synthesis_seconds"]}
    for task in a.tasks.split(","):
        per_method = {}
        for method in METHODS:
            folder = os.path.join(a.work, "results", task, method)
            metrics = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(folder, "*-metrics.json")))]
            timing = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(folder, "*-timing.json")))]
            train = json.load(open(os.path.join(folder, "train.json"))) if os.path.exists(os.path.join(folder, "train.json")) else {}
            entry = {"cases": len(metrics)}
            for key in ["psnr", "ssim", "mae"]:
                entry[key] = mean_std([m[key] for m in metrics])
            for key in ["sampling_seconds", "synthesis_seconds", "total_seconds"]:
                entry[key] = mean_std([t[key] - (t["load_seconds"] if key == "total_seconds" else 0.0) for t in timing])
            slices = [t["slices"] for t in timing]
            entry["seconds_per_slice"] = mean_std([(t["sampling_seconds"] + t["synthesis_seconds"]) / t["slices"] for t in timing])
            entry["slices_per_volume"] = slices[0] if slices else 0
            entry["train_seconds"] = train.get("milliseconds", float("nan")) / 1000.0
            entry["train_iterations"] = train.get("iterations")
            per_method[method] = entry
        results["tasks"][task] = per_method

    lines = ["# itk-cdm benchmark" + (" (quick smoke run)" if a.quick == "1" else ""), "",
             "Produced by `bench/run.sh" + (" --quick" if a.quick == "1" else "") + "` on phantom data (`cdm phantom`, Colin27 anatomy).", "",
             "Machine: {cpu}, {cores} cores, torch {torch} ({torch_threads} threads), CPU.".format(**results["machine"]),
             "Setup: preset `{preset}`; {train_cases} training cases of {size} voxels at {spacing} mm; {test_cases} held-out "
             "cases (other seeds), each a {slab}-slice axial slab about its tumour. Every method gets {iterations} gradient "
             "steps (batch 8, whole 2D slices); CDM splits them over its stages ({stages}).".format(**results["setup"]),
             "Quality inside the brain, mean +- std over held-out cases: the reference normalised by the engine's robust "
             "rule (99.5th percentile of the foreground = 1, data range 1), each synthesis scaled by its least-squares gain "
             "against it (`cdm evaluate --normalize gain`: MR intensity units are arbitrary, so only the best global scale "
             "is granted).", ""]
    for task, per_method in results["tasks"].items():
        lines += ["## Task: " + task, "", "| method | PSNR (dB) | SSIM | MAE | training (s) |", "| --- | --- | --- | --- | --- |"]
        for method, e in per_method.items():
            lines.append("| {} | {:.2f} +- {:.2f} | {:.4f} +- {:.4f} | {:.4f} +- {:.4f} | {:.0f} |".format(
                method, *e["psnr"], *e["ssim"], *e["mae"], e["train_seconds"]))
        floor = per_method["unet"]["seconds_per_slice"][0]
        lines += ["", "| method | s / slice (held-out slabs) | x unet (same run) |", "| --- | --- | --- |"]
        for method, e in per_method.items():
            lines.append("| {} | {:.4f} +- {:.4f} | {:.2f} |".format(
                method, *e["seconds_per_slice"], e["seconds_per_slice"][0] / floor if floor > 0 else float("nan")))
        lines += ["", "![montage](montage-{}.png)".format(task),
                  "Montage columns: sources | reference | CDM | unet | ddim | |error| of CDM, unet, ddim (0 to 0.5).", ""]
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
