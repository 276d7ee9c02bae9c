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


def set_sources(source_filter, images):
    for name, image in images.items():
        source_filter.SetSource(name, image)


model = itk.CDMModel.New()
model.Load(model_path, "cpu")

synthesis = itk.CDMImageFilter[ImageType, ImageType].New()
synthesis.SetModel(model)
set_sources(synthesis, sources)
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

# The two stages by hand (MDN sampler, then the conditioned synthesis) are the composite filter.
sampler = itk.CDMDiffusionSamplerImageFilter[ImageType].New()
staged = itk.CDMSynthesisImageFilter[ImageType, ImageType].New()
for stage in (sampler, staged):
    stage.SetModel(model)
    set_sources(stage, sources)
sampler.SetSeed(1)
staged.SetRepresentation(sampler.GetOutput())
staged.Update()
assert abs(itk.array_view_from_image(staged.GetOutput()) - values).max() == 0.0

# The MRM encoder's representation of the true target: one vector per latent token.
encoder = itk.CDMModalityEncoderImageFilter[ImageType].New()
encoder.SetModel(model)
encoder.SetInput(itk.imread(case + "t1c.nii.gz", itk.F))
encoder.Update()
representation = encoder.GetOutput()
assert representation.GetNumberOfComponentsPerPixel() == sampler.GetOutput().GetNumberOfComponentsPerPixel() > 1

# Signed short inputs (as scanners write them) are wrapped too.
ShortImageType = itk.Image[itk.SS, 3]
from_short = itk.CDMImageFilter[ShortImageType, ImageType].New()
from_short.SetModel(model)
set_sources(from_short, {name: itk.cast_image_filter(image, ttype=(ImageType, ShortImageType))
                         for name, image in sources.items()})
from_short.Update()
short_values = itk.array_view_from_image(from_short.GetOutput())
assert short_values.shape == values.shape and short_values.std() > 0

# 2D images (one axial slice) through the 2D instantiation: the tiny model is a 2D one.
SliceType = itk.Image[itk.F, 2]
on_a_slice = itk.CDMImageFilter[SliceType, SliceType].New(Model=model, Seed=1)
set_sources(on_a_slice, {name: itk.image_from_array(itk.array_from_image(image)[4].copy())
                         for name, image in sources.items()})
on_a_slice.Update()
slice_values = itk.array_view_from_image(on_a_slice.GetOutput())
assert slice_values.shape == values.shape[1:] and slice_values.std() > 0

# A source the model does not know is refused with ITK's exception, naming it.
refusing = itk.CDMImageFilter[ImageType, ImageType].New()
refusing.SetModel(model)
set_sources(refusing, sources)
refusing.SetSource("adc", sources["t1n"])
try:
    refusing.Update()
    raise AssertionError("an unknown modality was accepted")
except RuntimeError as error:
    assert "adc" in str(error), error
print("itk.CDMDiffusionSamplerImageFilter + itk.CDMSynthesisImageFilter, itk.CDMModalityEncoderImageFilter, "
      "2D and signed short inputs and the refusal of an unknown modality: as in C++")
