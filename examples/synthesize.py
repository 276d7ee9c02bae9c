#!/usr/bin/env python3
"""Synthesize a missing contrast of one BraTS-layout case with itk_cdm (the common use from Python).

    python examples/synthesize.py MODEL.cdm CASE_FOLDER OUTPUT.nii.gz [--samples K] [--device auto|cpu|cuda]

CASE_FOLDER holds <case>-<modality>.nii.gz files (BraTS 2023 names). With --samples K > 1 it also writes the
uncertainty (standard deviation over the K samples) beside the output. When the case has the target too, it prints
how close the synthesis is (PSNR inside the brain, both images scaled by their 99.5th percentile).
"""
import argparse
import os
import time

import itk
import numpy as np

import itk_cdm


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("case_folder")
    parser.add_argument("output")
    parser.add_argument("--samples", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    a = parser.parse_args()

    model = itk_cdm.load_model(a.model, device=a.device)
    print(model)
    case = os.path.join(a.case_folder, os.path.basename(os.path.normpath(a.case_folder)))
    sources = {m: itk.imread("{}-{}.nii.gz".format(case, m), itk.F) for m in model.sources}
    start = time.perf_counter()
    result = itk_cdm.synthesize(model, sources, samples=a.samples, seed=a.seed, uncertainty=a.samples > 1)
    image, spread = result if a.samples > 1 else (result, None)
    print("synthesized {} in {:.1f} s".format(model.target, time.perf_counter() - start))
    itk.imwrite(image, a.output)
    if spread is not None:
        itk.imwrite(spread, a.output.replace(".nii", "-uncertainty.nii"))

    reference_path = "{}-{}.nii.gz".format(case, model.target)
    if os.path.exists(reference_path):
        reference = itk.array_from_image(itk.imread(reference_path, itk.F))
        synthesized = itk.array_view_from_image(image)
        brain = reference > 0
        scale = lambda v: v / np.percentile(v[brain], 99.5)  # noqa: E731
        mse = np.mean((scale(reference)[brain] - scale(synthesized)[brain]) ** 2)
        print("PSNR inside the brain: {:.2f} dB".format(10 * np.log10(1.0 / mse)))


if __name__ == "__main__":
    main()
