"""ITK's wrapping of the CDM filters: itk.CDMImageFilter synthesizes from itk.Image inputs in a Python pipeline.

    itkCDMImageFilterTest.py CDM_EXECUTABLE WORK_DIR
"""
import os
import subprocess
import sys

import itk

cdm, work = sys.argv[1], sys.argv[2]
data = os.path.join(work, "wrapping-data")
model_path = os.path.join(work, "wrapping-tiny.cdm")
subprocess.run([cdm, "phantom", "--out", data, "--cases", "3", "--seed", "4", "--anatomy", "procedural", "--size",
                "40,40,8", "--spacing", "4"], check=True)
subprocess.run([cdm, "train", "--data", data, "--target", "t1c", "--preset", "tiny", "--iterations", "5",
                "--device", "cpu", "--out", model_path], check=True)

case = os.path.join(data, "PHANTOM-00000", "PHANTOM-00000-")
ImageType = itk.Image[itk.F, 3]
sources = {m: itk.imread(case + m + ".nii.gz", itk.F) for m in ("t1n", "t2w", "t2f")}
model = itk.CDMModel.New()
model.Load(model_path, "cpu")

synthesis = itk.CDMImageFilter[ImageType, ImageType].New()
synthesis.SetModel(model)
for name, image in sources.items():
    synthesis.SetSource(name, image)
synthesis.SetSeed(1)
synthesis.Update()
output = synthesis.GetOutput()

assert output.GetLargestPossibleRegion().GetSize() == sources["t1n"].GetLargestPossibleRegion().GetSize()
assert tuple(output.GetSpacing()) == tuple(sources["t1n"].GetSpacing())
values = itk.array_view_from_image(output)
assert values.std() > 0, "the synthesis is constant"

# The same model and seed through the command line give the same image.
reference = os.path.join(work, "wrapping-cli.nii.gz")
subprocess.run([cdm, "synthesize", "--quiet", "--model", model_path, "--seed", "1", "--device", "cpu", "--output",
                reference] + sum((["--source", "{}={}{}.nii.gz".format(m, case, m)] for m in sources), []), check=True)
difference = abs(itk.array_from_image(itk.imread(reference, itk.F)) - values).max()
assert difference == 0.0, difference
print("itk.CDMImageFilter: synthesized", tuple(values.shape), "equal to `cdm synthesize`")
