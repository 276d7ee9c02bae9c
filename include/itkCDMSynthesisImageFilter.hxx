/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#ifndef itkCDMSynthesisImageFilter_hxx
#define itkCDMSynthesisImageFilter_hxx

#include "itkCDMDiffusionSamplerImageFilter.h"
#include "itkCDMImageConversion.h"
#include "itkCDMRepresentation.h"
#include "itkCDMSynthesisImageFilter.h"

namespace itk
{

template <typename TInputImage, typename TOutputImage>
CDMSynthesisImageFilter<TInputImage, TOutputImage>::CDMSynthesisImageFilter()
{
  m_TileSize.Fill(0);
  this->SetNumberOfRequiredOutputs(2);
  this->SetNthOutput(1, this->MakeOutput(1));
}

template <typename TInputImage, typename TOutputImage>
void
CDMSynthesisImageFilter<TInputImage, TOutputImage>::SetRepresentation(const RepresentationImageType * representation)
{
  this->ProcessObject::SetInput("Representation", const_cast<RepresentationImageType *>(representation));
}

template <typename TInputImage, typename TOutputImage>
auto
CDMSynthesisImageFilter<TInputImage, TOutputImage>::GetRepresentation() const -> const RepresentationImageType *
{
  return dynamic_cast<const RepresentationImageType *>(this->ProcessObject::GetInput("Representation"));
}

template <typename TInputImage, typename TOutputImage>
TOutputImage *
CDMSynthesisImageFilter<TInputImage, TOutputImage>::GetUncertaintyOutput()
{
  return dynamic_cast<TOutputImage *>(this->ProcessObject::GetOutput(1));
}

template <typename TInputImage, typename TOutputImage>
void
CDMSynthesisImageFilter<TInputImage, TOutputImage>::VerifyPreconditions() ITKv5_CONST
{
  Superclass::VerifyPreconditions();
  if (!this->GetRepresentation())
  {
    itkExceptionMacro(<< "no representation: call SetRepresentation() with the output of "
                      << "CDMDiffusionSamplerImageFilter or CDMModalityEncoderImageFilter");
  }
}

template <typename TInputImage, typename TOutputImage>
void
CDMSynthesisImageFilter<TInputImage, TOutputImage>::GenerateOutputInformation()
{
  this->CopySourceInformationToOutputs();
}

template <typename TInputImage, typename TOutputImage>
void
CDMSynthesisImageFilter<TInputImage, TOutputImage>::GenerateInputRequestedRegion()
{
  // Not the Superclass's: the representation lives on its own grid and is read whole.
  if (auto * representation = const_cast<RepresentationImageType *>(this->GetRepresentation()))
  {
    representation->SetRequestedRegionToLargestPossibleRegion();
  }
  const TInputImage * first = this->GetFirstSource();
  const auto *        model = this->GetModel();
  if (!first || !model || !model->IsLoaded())
  {
    return;
  }
  const auto region = this->SourceRegionFor(this->GetOutput()->GetRequestedRegion());
  for (const auto & name : this->GetSourceNames())
  {
    const_cast<TInputImage *>(this->GetSource(name))->SetRequestedRegion(region);
  }
}

template <typename TInputImage, typename TOutputImage>
auto
CDMSynthesisImageFilter<TInputImage, TOutputImage>::SourceRegionFor(const OutputImageRegionType & outputRegion) const
  -> InputRegionType
{
  const TInputImage * first = this->GetFirstSource();
  // A representation without the sources' normalisation scales (the encoder's) needs the whole sources to measure
  // them exactly. The sampler's output carries them, even before it has run.
  const auto * representation = this->GetRepresentation();
  const bool   fromSampler = representation && dynamic_cast<const CDMDiffusionSamplerImageFilter<TInputImage> *>(
                                               representation->GetSource().GetPointer());
  if (!representation || (!fromSampler && !CDMConversion::CarriesSourceScales(representation, this->GetSourceNames())))
  {
    return first->GetLargestPossibleRegion();
  }
  // The required source region comes from the core engine: one rule for the filters and the engine.
  InputRegionType region = this->RequiredSourceRegion(outputRegion);
  if (!region.Crop(first->GetLargestPossibleRegion()))
  {
    InvalidRequestedRegionError error(__FILE__, __LINE__);
    error.SetLocation(ITK_LOCATION);
    error.SetDescription("the requested region of the sources lies outside their largest possible region");
    error.SetDataObject(const_cast<TInputImage *>(first));
    throw error;
  }
  return region;
}

template <typename TInputImage, typename TOutputImage>
void
CDMSynthesisImageFilter<TInputImage, TOutputImage>::GenerateData()
{
  this->AllocateOutputs();
  TOutputImage *      output = this->GetOutput();
  TOutputImage *      uncertainty = this->GetUncertaintyOutput();
  const TInputImage * first = this->GetFirstSource();
  const auto &        largest = first->GetLargestPossibleRegion();
  const auto &        outputRegion = output->GetRequestedRegion();
  // A streaming sampler upstream may have left the sources' buffers on its last window: bring them back.
  const InputRegionType sourceRegion = this->SourceRegionFor(outputRegion);
  this->UpdateSources(sourceRegion);
  this->UpdateProgress(0.0f);
  this->CallEngine([&]() {
    const cdm::Model &       model = this->GetModel()->GetModel();
    const cdm::ModelConfig & config = model.Config();
    cdm::SourceExtent        extent;
    extent.ImageSize = CDMConversion::ToCDMSize(largest.GetSize());
    extent.Buffered = CDMConversion::ToCDMRegion(sourceRegion);
    cdm::Region region = CDMConversion::ToCDMRegion(outputRegion);
    for (unsigned int a = 0; a < TInputImage::ImageDimension; ++a)
    {
      extent.Buffered.Index[a] -= largest.GetIndex(a);
      region.Index[a] -= largest.GetIndex(a);
    }
    cdm::SynthesisOptions options = this->EngineOptions();
    for (unsigned int a = 0; a < TInputImage::ImageDimension; ++a)
    {
      options.TileSize[a] = static_cast<int64_t>(m_TileSize[a]);
    }
    cdm::Representation representation =
      CDMConversion::ReadRepresentation(this->GetRepresentation(), config.Network.RepresentationDim, config.Sources);
    if (representation.Target.empty())
    {
      representation.Target = options.Target; // an encoder's output names no target
    }
    else if (!options.Target.empty() && options.Target != representation.Target)
    {
      itkExceptionMacro(<< "the representation guides a synthesis of " << representation.Target
                        << " but TargetModality is " << options.Target);
    }
    const auto progress = [this](double fraction, const std::string &) {
      this->UpdateProgress(static_cast<float>(std::min(fraction, 0.999)));
    };
    // Float outputs are written in place: the engine never holds a second copy of the image.
    cdm::SynthesisDestination destination;
    destination.Image = CDMConversion::WritableBuffer(output, outputRegion);
    destination.Uncertainty = CDMConversion::WritableBuffer(uncertainty, outputRegion);
    // Another update (the sources, the model or a parameter changed) must not continue the last one's C-UNet.
    const ModifiedTimeType updateTime = m_StreamedUpdateTime > 0 ? m_StreamedUpdateTime : output->GetPipelineMTime();
    if (updateTime != m_ContinuationTime)
    {
      m_Continuation.Reset();
      m_ContinuationTime = updateTime;
      m_ContinuationsBeforeUpdate = m_Continuation.Continuations();
    }
    const cdm::SynthesisResult result = model.SynthesizeRegion(this->SourceVolumes(sourceRegion),
                                                               representation,
                                                               region,
                                                               options,
                                                               progress,
                                                               &extent,
                                                               destination,
                                                               &m_Continuation);
    CDMConversion::CopyToImage(result.Image, output, outputRegion);
    if (result.Uncertainty.StoredVoxels() == 0)
    {
      uncertainty->FillBuffer(0);
    }
    else
    {
      CDMConversion::CopyToImage(result.Uncertainty, uncertainty, outputRegion);
    }
  });
  this->UpdateProgress(1.0f);
}

template <typename TInputImage, typename TOutputImage>
void
CDMSynthesisImageFilter<TInputImage, TOutputImage>::PrintSelf(std::ostream & os, Indent indent) const
{
  Superclass::PrintSelf(os, indent);
  os << indent << "TileSize: " << m_TileSize << std::endl;
  os << indent << "StreamedUpdateTime: " << m_StreamedUpdateTime << std::endl;
  os << indent << "ContinuedPieces: " << this->GetContinuedPieces() << std::endl;
}

} // namespace itk

#endif
