# The description of the CDM module, read by ITK's module system. PRIVATE_DEPENDS: the IO and filter modules of the
# `cdm` command line and the examples, which build with the module. (A short text: ITK parses it as CMake code, and
# the README's code blocks would break that parse.)
set(DOCUMENTATION "Synthesizes a missing MRI contrast (e.g. T1 post-contrast) from the acquired ones with the
Cross-conditioned Diffusion Model (Xing et al., MICCAI 2024) on LibTorch: a core engine, ITK filters
(CDMImageFilter, CDMModalityEncoderImageFilter, CDMDiffusionSamplerImageFilter, CDMSynthesisImageFilter) and
the cdm command line.")

itk_module(CDM
  DEPENDS
    ITKCommon
    ITKIOImageBase
  PRIVATE_DEPENDS
    ITKIONIFTI
    ITKIONRRD
    ITKIOMeta
    ITKIOPNG
    ITKImageIntensity
    ITKImageGrid
    ITKSmoothing
    ITKThresholding
    ITKImageStatistics
    ITKStatistics
    ITKTransform
  TEST_DEPENDS
    ITKTestKernel
    ITKGoogleTest
    ITKImageFilterBase
    ITKImageIntensity
    ITKIONIFTI
  DESCRIPTION
    "${DOCUMENTATION}"
  EXCLUDE_FROM_DEFAULT
  ENABLE_SHARED
)
