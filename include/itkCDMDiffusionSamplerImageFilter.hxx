/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#ifndef itkCDMDiffusionSamplerImageFilter_hxx
#define itkCDMDiffusionSamplerImageFilter_hxx

#include "itkCDMDiffusionSamplerImageFilter.h"
#include "itkCDMImageConversion.h"
#include "itkCDMRepresentation.h"

#include <algorithm>

namespace itk
{

template <typename TInputImage>
void
CDMDiffusionSamplerImageFilter<TInputImage>::GenerateOutputInformation()
{
  const TInputImage * first = this->GetFirstSource();
  const auto *        model = this->GetModel();
  if (!first || !model || !model->IsLoaded())
  {
    return;
  }
  const cdm::ModelConfig & config = model->GetModel().Config();
  const unsigned int       samples = m_OutputSamples ? m_NumberOfSamples : 1;
  CDMConversion::SetRepresentationInformation(
    first, config, samples * static_cast<unsigned int>(config.Network.RepresentationDim), this->GetOutput());
}

template <typename TInputImage>
void
CDMDiffusionSamplerImageFilter<TInputImage>::GenerateInputRequestedRegion()
{
  Superclass::GenerateInputRequestedRegion();
  for (const auto & name : this->GetSourceNames())
  {
    auto * source = const_cast<TInputImage *>(this->GetSource(name));
    source->SetRequestedRegionToLargestPossibleRegion();
    if (m_StreamSources)
    {
      // GenerateData pulls the windows itself: ask the pipeline for the first plane only.
      auto region = source->GetRequestedRegion();
      region.SetSize(TInputImage::ImageDimension - 1,
                     std::min<SizeValueType>(1, region.GetSize(TInputImage::ImageDimension - 1)));
      source->SetRequestedRegion(region);
    }
  }
}

template <typename TInputImage>
void
CDMDiffusionSamplerImageFilter<TInputImage>::EnlargeOutputRequestedRegion(DataObject * output)
{
  Superclass::EnlargeOutputRequestedRegion(output);
  output->SetRequestedRegionToLargestPossibleRegion();
}

template <typename TInputImage>
void
CDMDiffusionSamplerImageFilter<TInputImage>::GenerateData()
{
  this->AllocateOutputs();
  this->UpdateProgress(0.0f);
  this->CallEngine([&]() {
    cdm::SynthesisOptions options = this->EngineOptions();
    options.Samples = static_cast<int>(m_NumberOfSamples);
    options.Seed = m_Seed;
    options.Eta = m_Eta;
    options.VoxelsPerRead = static_cast<int64_t>(m_VoxelsPerRead);
    const TInputImage * first = this->GetFirstSource();
    const auto &        largest = first->GetLargestPossibleRegion();
    const cdm::Model &  model = this->GetModel()->GetModel();
    cdm::Representation representation;
    if (m_StreamSources)
    {
      // Each window is pulled through the pipeline and viewed, not copied; the engine uses it up before the next.
      const auto read = [this, &largest](const cdm::Region & window) {
        const auto region = CDMConversion::FromCDMRegion<TInputImage::ImageDimension>(window, largest.GetIndex());
        this->UpdateSources(region);
        return this->SourceVolumes(region);
      };
      representation = model.SampleRepresentation(read, CDMConversion::ToCDMSize(largest.GetSize()), options);
    }
    else
    {
      this->UpdateSources(largest);
      representation = model.SampleRepresentation(this->SourceVolumes(largest), options);
    }
    CDMConversion::FillRepresentation(representation, m_OutputSamples, this->GetOutput());
  });
  this->UpdateProgress(1.0f);
}

template <typename TInputImage>
void
CDMDiffusionSamplerImageFilter<TInputImage>::PrintSelf(std::ostream & os, Indent indent) const
{
  Superclass::PrintSelf(os, indent);
  os << indent << "NumberOfSamples: " << m_NumberOfSamples << std::endl;
  os << indent << "Seed: " << m_Seed << std::endl;
  os << indent << "Eta: " << m_Eta << std::endl;
  os << indent << "OutputSamples: " << (m_OutputSamples ? "On" : "Off") << std::endl;
  os << indent << "StreamSources: " << (m_StreamSources ? "On" : "Off") << std::endl;
  os << indent << "VoxelsPerRead: " << m_VoxelsPerRead << std::endl;
}

} // namespace itk

#endif
