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
 * The sampler reads every voxel of its inputs once per run, but with StreamSources on (the default) never holds them
 * whole: it pulls them through the pipeline window by window (slabs of about 2^20 voxels along the last axis, one
 * pass for the normalisation scales and one for the source encoder), as ITK's streaming writers pull their input, so
 * a streaming reader upstream (uncompressed MetaImage) keeps only a slab in memory. An upstream that cannot stream
 * gives its whole image at once and is not re-run. StreamSources off asks for the whole inputs in one request (for an
 * upstream that is costly to re-run per window). The pipeline keeps the result until an input or a parameter changes.
 * The same Seed gives the same output, streamed or not; Eta > 0 adds seeded noise per step.
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
  /** Pull the sources window by window (default On) instead of whole. */
  itkSetMacro(StreamSources, bool);
  itkGetConstMacro(StreamSources, bool);
  itkBooleanMacro(StreamSources);
  /** Voxels one window of the streamed sources holds (whole planes along the last axis); 0 (default) = 2^20. */
  itkSetMacro(VoxelsPerRead, SizeValueType);
  itkGetConstMacro(VoxelsPerRead, SizeValueType);

  /** The Superclass's, except that re-reads of streamed sources are not a change: pulling the sources window by
   *  window re-runs their readers, which marks the images modified though nothing upstream changed. When neither
   *  this filter, its model, nor any filter or unsourced image upstream of the sources changed since the last run,
   *  the representation stays valid and the filter does not run again. (So Modified() on an image that a filter
   *  generates is not seen: modify the filter.) */
  void
  UpdateOutputInformation() override;

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
  /** The latest modification of this filter, its model, or anything upstream of its sources other than the data
   *  their filters generate (a re-read is not a change). */
  ModifiedTimeType
  SourcesContentTime() const;

  bool             m_StreamSources{ true };
  SizeValueType    m_VoxelsPerRead{ 0 };
  ModifiedTimeType m_SampledContentTime{ 0 }; ///< SourcesContentTime() of the last run
};

} // namespace itk

#ifndef ITK_MANUAL_INSTANTIATION
#  include "itkCDMDiffusionSamplerImageFilter.hxx"
#endif

#endif
