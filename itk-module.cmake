# The description of the CDM module, read by ITK's module system. (A short text: ITK parses it as CMake code, and
# the README's code blocks would break that parse.)
set(DOCUMENTATION "Synthesizes a missing MRI contrast (e.g. T1 post-contrast) from the acquired ones with the
Cross-conditioned Diffusion Model (Xing et al., MICCAI 2024) on LibTorch: a core engine, ITK filters
(CDMImageFilter, CDMModalityEncoderImageFilter, CDMDiffusionSamplerImageFilter, CDMSynthesisImageFilter) and
the cdm command line.")

itk_module(CDM
  DEPENDS
    ITKCommon
    ITKIOImageBase
  TEST_DEPENDS
    ITKTestKernel
    ITKGoogleTest
    ITKIONIFTI
  DESCRIPTION
    "${DOCUMENTATION}"
  EXCLUDE_FROM_DEFAULT
  ENABLE_SHARED
)
