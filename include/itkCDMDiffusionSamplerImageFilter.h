/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#ifndef itkCDMDiffusionSamplerImageFilter_h
#define itkCDMDiffusionSamplerImageFilter_h

#include "itkCDMSourceImageFilter.h"
#include "itkVectorImage.h"

namespace itk
{

/** \class CDMDiffusionSamplerImageFilter
 * \brief The source encoder and the MDN sampler: the source modalities in, the sampled representation z_hat out.
 *
 * Inputs are named by modality (`SetSource("t1n", image)`, ...). The output is an itk::VectorImage<float, Dim>
 * spanning the sources' physical extent (see itkCDMRepresentation.h) holding the mean of NumberOfSamples samples
 * (OutputSamples off) or all samples one after another (OutputSamples on: K * D components; the synthesizer then
 * also gives a voxel-wise uncertainty). Its MetaDataDictionary carries each source's normalisation scale, computed
 * on the whole image, so that a streamed synthesis normalises every tile alike.
 *
 * The sampler needs its whole inputs once (it asks for the largest possible region); the pipeline keeps its result
 * until an input or a parameter changes. The same Seed gives the same output; Eta > 0 adds seeded noise per step.
 *
 * \ingroup CDM
 */
template <typename TInputImage>
class CDMDiffusionSamplerImageFilter
    : public CDMSourceImageFilter<TInputImage, VectorImage<float, TInputImage::ImageDimension>>
{
public:
  ITK_DISALLOW_COPY_AND_MOVE(CDMDiffusionSamplerImageFilter);

  using Self = CDMDiffusionSamplerImageFilter;
  using RepresentationImageType = VectorImage<float, TInputImage::ImageDimension>;
  using Superclass = CDMSourceImageFilter<TInputImage, RepresentationImageType>;
  using Pointer = SmartPointer<Self>;
  using ConstPointer = SmartPointer<const Self>;

  itkNewMacro(Self);
  itkTypeMacro(CDMDiffusionSamplerImageFilter, CDMSourceImageFilter);

  /** K samples of z_hat (default 1). */
  itkSetClampMacro(NumberOfSamples, unsigned int, 1, 1024);
  itkGetConstMacro(NumberOfSamples, unsigned int);
  /** Seed of the starting noise (default 0). */
  itkSetMacro(Seed, uint64_t);
  itkGetConstMacro(Seed, uint64_t);
  /** DDIM eta; negative (default) uses the model's. */
  itkSetMacro(Eta, double);
  itkGetConstMacro(Eta, double);
  /** Output every sample (K * D components) instead of their mean (D components). */
  itkSetMacro(OutputSamples, bool);
  itkGetConstMacro(OutputSamples, bool);
  itkBooleanMacro(OutputSamples);

protected:
  CDMDiffusionSamplerImageFilter() = default;
  ~CDMDiffusionSamplerImageFilter() override = default;

  void
  GenerateOutputInformation() override;
  void
  GenerateInputRequestedRegion() override;
  void
  EnlargeOutputRequestedRegion(DataObject * output) override;
  void
  GenerateData() override;
  void
  PrintSelf(std::ostream & os, Indent indent) const override;

private:
  unsigned int m_NumberOfSamples{ 1 };
  uint64_t     m_Seed{ 0 };
  double       m_Eta{ -1.0 };
  bool         m_OutputSamples{ false };
};

} // namespace itk

#ifndef ITK_MANUAL_INSTANTIATION
#  include "itkCDMDiffusionSamplerImageFilter.hxx"
#endif

#endif
