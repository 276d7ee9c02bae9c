/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#ifndef itkCDMSynthesisImageFilter_h
#define itkCDMSynthesisImageFilter_h

#include "itkCDMSourceImageFilter.h"
#include "itkVectorImage.h"

namespace itk
{

/** \class CDMSynthesisImageFilter
 * \brief The C-UNet: the source modalities and the representation z in, the target modality out. It streams.
 *
 * Its input requested region is the output requested region padded by the network's receptive-field halo, widened
 * to the network's downsampling factor and cropped to the image (as itk::BoxImageFilter pads by its radius), and it
 * computes only the requested output region, in tiles of TileSize voxels (zero: the whole region), one device call
 * per tile batch, in GenerateData. Because the C-UNet is local and its tiles are aligned, a streamed output equals
 * the unstreamed one up to float rounding. A 3D model's C-UNet runs slab by slab along z, and the pieces of one
 * streamed update carry it from one piece to the next, so that streaming along z recomputes no halo
 * (GetContinuedPieces()). The representation (from CDMDiffusionSamplerImageFilter) is read whole;
 * when it holds several samples, the output is their mean and the second output their voxel-wise standard
 * deviation (zero for one sample).
 *
 * \ingroup CDM
 */
template <typename TInputImage, typename TOutputImage = Image<float, TInputImage::ImageDimension>>
class CDMSynthesisImageFilter : public CDMSourceImageFilter<TInputImage, TOutputImage>
{
public:
  ITK_DISALLOW_COPY_AND_MOVE(CDMSynthesisImageFilter);

  using Self = CDMSynthesisImageFilter;
  using Superclass = CDMSourceImageFilter<TInputImage, TOutputImage>;
  using Pointer = SmartPointer<Self>;
  using ConstPointer = SmartPointer<const Self>;
  using RepresentationImageType = VectorImage<float, TInputImage::ImageDimension>;
  using SizeType = typename TInputImage::SizeType;
  using OutputImageType = TOutputImage;

  itkNewMacro(Self);
  itkTypeMacro(CDMSynthesisImageFilter, CDMSourceImageFilter);

  /** The representation z (output of CDMDiffusionSamplerImageFilter or CDMModalityEncoderImageFilter). */
  void
  SetRepresentation(const RepresentationImageType * representation);
  const RepresentationImageType *
  GetRepresentation() const;

  /** Tile edge per axis in voxels; zero (default) computes each requested region in one tile. */
  itkSetMacro(TileSize, SizeType);
  itkGetConstMacro(TileSize, SizeType);

  /** The voxel-wise standard deviation over representation samples. */
  TOutputImage *
  GetUncertaintyOutput();

  /** The pieces of one streamed update (along z, in order) carry a 3D model's C-UNet from one to the next
   *  (cdm::SynthesisContinuation), so that streaming recomputes no halo. One update is told from the next by this
   *  time stamp: zero (default) takes this output's pipeline time; a composite filter that runs this one as its
   *  mini-pipeline, updated once per piece, passes its own output's. */
  itkSetMacro(StreamedUpdateTime, ModifiedTimeType);
  itkGetConstMacro(StreamedUpdateTime, ModifiedTimeType);

  /** Pieces of the last streamed update that carried on from the piece before (for tests and benchmarks). */
  SizeValueType
  GetContinuedPieces() const
  {
    return static_cast<SizeValueType>(m_Continuation.Continuations() - m_ContinuationsBeforeUpdate);
  }

protected:
  CDMSynthesisImageFilter();
  ~CDMSynthesisImageFilter() override = default;

  void
  VerifyPreconditions() ITKv5_CONST override;
  void
  GenerateOutputInformation() override;
  void
  GenerateInputRequestedRegion() override;
  void
  GenerateData() override;
  void
  PrintSelf(std::ostream & os, Indent indent) const override;

private:
  using InputRegionType = typename Superclass::InputRegionType;
  using OutputImageRegionType = typename TOutputImage::RegionType;

  /** The sources' region the synthesis of `outputRegion` reads: the engine's required region, or the whole sources
   *  when the representation cannot carry their normalisation scales. */
  InputRegionType
  SourceRegionFor(const OutputImageRegionType & outputRegion) const;

  SizeType                   m_TileSize;
  ModifiedTimeType           m_StreamedUpdateTime{ 0 };
  ModifiedTimeType           m_ContinuationTime{ 0 };
  cdm::SynthesisContinuation m_Continuation;
  int64_t                    m_ContinuationsBeforeUpdate{ 0 };
};

} // namespace itk

#ifndef ITK_MANUAL_INSTANTIATION
#  include "itkCDMSynthesisImageFilter.hxx"
#endif

#endif
