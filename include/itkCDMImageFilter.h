/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#ifndef itkCDMImageFilter_h
#define itkCDMImageFilter_h

#include "itkCDMDiffusionSamplerImageFilter.h"
#include "itkCDMSynthesisImageFilter.h"

namespace itk
{

/** \class CDMImageFilter
 * \brief Synthesizes a missing MRI contrast with the Cross-conditioned Diffusion Model: sources in, target out.
 *
 * The one-call face of the module: it runs CDMDiffusionSamplerImageFilter (source encoder + MDN, on the whole
 * sources) and CDMSynthesisImageFilter (C-UNet, on the requested region) as a mini-pipeline of member filters, so
 * that when the output is streamed the sampler runs once per change of sources, model, seed or sampling settings,
 * not once per piece (ITK's composite-filter idiom). Streamed end to end (a streaming reader, this filter, a writer
 * with stream divisions), it never holds a whole image: the sampler pulls the sources slab by slab, and each piece
 * reads only the sources its synthesis needs. The output keeps the sources' spacing, origin and direction;
 * the second output is the voxel-wise uncertainty (standard deviation over NumberOfSamples representation samples;
 * zero for one sample).
 *
 * \code
 * auto model = itk::CDMModel::New();
 * model->Load("t1c.cdm");
 * auto cdmFilter = itk::CDMImageFilter<ImageType>::New();
 * cdmFilter->SetModel(model);
 * cdmFilter->SetSource("t1n", t1n);
 * cdmFilter->SetSource("t2w", t2w);
 * cdmFilter->SetSource("t2f", t2f);
 * cdmFilter->Update(); // cdmFilter->GetOutput() is the synthesized t1c
 * \endcode
 *
 * \ingroup CDM
 */
template <typename TInputImage, typename TOutputImage = Image<float, TInputImage::ImageDimension>>
class CDMImageFilter : public CDMSourceImageFilter<TInputImage, TOutputImage>
{
public:
  ITK_DISALLOW_COPY_AND_MOVE(CDMImageFilter);

  using Self = CDMImageFilter;
  using Superclass = CDMSourceImageFilter<TInputImage, TOutputImage>;
  using Pointer = SmartPointer<Self>;
  using ConstPointer = SmartPointer<const Self>;
  using SamplerType = CDMDiffusionSamplerImageFilter<TInputImage>;
  using SynthesisType = CDMSynthesisImageFilter<TInputImage, TOutputImage>;
  using SizeType = typename TInputImage::SizeType;

  itkNewMacro(Self);
  itkTypeMacro(CDMImageFilter, CDMSourceImageFilter);

  itkSetClampMacro(NumberOfSamples, unsigned int, 1, 1024);
  itkGetConstMacro(NumberOfSamples, unsigned int);
  itkSetMacro(Seed, uint64_t);
  itkGetConstMacro(Seed, uint64_t);
  /** DDIM eta; negative (default) uses the model's. */
  itkSetMacro(Eta, double);
  itkGetConstMacro(Eta, double);
  /** C-UNet tile edge per axis in voxels (zero: the whole requested region). */
  itkSetMacro(TileSize, SizeType);
  itkGetConstMacro(TileSize, SizeType);
  /** On (default): the sampler pulls the sources through the pipeline window by window and each streamed piece asks
   *  only for the sources its synthesis reads, so that with a streaming reader and writer (uncompressed MetaImage) no
   * whole image is ever held (CDMDiffusionSamplerImageFilter::SetStreamSources). Off: the whole sources are asked for.
   */
  itkSetMacro(StreamSources, bool);
  itkGetConstMacro(StreamSources, bool);
  itkBooleanMacro(StreamSources);
  /** Voxels one window of the streamed sources holds; 0 (default) = 2^20 (CDMDiffusionSamplerImageFilter). */
  itkSetMacro(VoxelsPerRead, SizeValueType);
  itkGetConstMacro(VoxelsPerRead, SizeValueType);

  /** The voxel-wise standard deviation over the samples (zero for one sample). Each update fills it for the same region
   *  as the image: two writers, one per output, would synthesize every piece twice (cdm synthesize writes both from
   *  one pass: apps/cdmStreamedSynthesis.cxx). */
  TOutputImage *
  GetUncertaintyOutput();

  /** The internal sampler, for observers (e.g. to count how often the representation is sampled); its settings are
   *  overwritten from this filter's on every update. */
  SamplerType *
  GetSampler()
  {
    return m_Sampler;
  }

  /** Pieces of the last streamed update that carried the C-UNet on from the piece before (3D models; see
   *  CDMSynthesisImageFilter::GetContinuedPieces). */
  SizeValueType
  GetContinuedPieces() const
  {
    return m_Synthesis->GetContinuedPieces();
  }

protected:
  CDMImageFilter();
  ~CDMImageFilter() override = default;

  void
  GenerateOutputInformation() override;
  void
  GenerateInputRequestedRegion() override;
  void
  GenerateData() override;
  void
  PrintSelf(std::ostream & os, Indent indent) const override;

private:
  unsigned int  m_NumberOfSamples{ 1 };
  uint64_t      m_Seed{ 0 };
  double        m_Eta{ -1.0 };
  SizeType      m_TileSize;
  bool          m_StreamSources{ true };
  SizeValueType m_VoxelsPerRead{ 0 };

  typename SamplerType::Pointer   m_Sampler;
  typename SynthesisType::Pointer m_Synthesis;
};

} // namespace itk

#ifndef ITK_MANUAL_INSTANTIATION
#  include "itkCDMImageFilter.hxx"
#endif

#endif
