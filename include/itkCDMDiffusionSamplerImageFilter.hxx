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

namespace CDMPipeline
{
/** The latest modification of `data`'s upstream: the filters that generate it and, recursively, their inputs, and
 *  the images no filter generates; not the generated data's own modification, which a re-run bumps. */
inline ModifiedTimeType
ContentTime(const DataObject * data)
{
  const ProcessObject * source = data->GetSource();
  if (!source)
  {
    return data->GetMTime();
  }
  ModifiedTimeType time = source->GetMTime();
  for (const DataObject * input : const_cast<ProcessObject *>(source)->GetInputs()) // not const in ITK 5
  {
    if (input)
    {
      time = std::max(time, ContentTime(input));
    }
  }
  return time;
}
} // namespace CDMPipeline

template <typename TInputImage>
ModifiedTimeType
CDMDiffusionSamplerImageFilter<TInputImage>::SourcesContentTime() const
{
  ModifiedTimeType time = this->GetMTime(); // the model's included
  for (const auto & name : this->GetSourceNames())
  {
    time = std::max(time, CDMPipeline::ContentTime(this->GetSource(name)));
  }
  return time;
}

template <typename TInputImage>
void
CDMDiffusionSamplerImageFilter<TInputImage>::UpdateOutputInformation()
{
  Superclass::UpdateOutputInformation();
  auto * output = this->GetOutput();
  if (m_StreamSources && m_SampledContentTime != 0 && !output->GetDataReleased() && output->GetUpdateMTime() > 0 &&
      SourcesContentTime() == m_SampledContentTime)
  {
    output->SetPipelineMTime(std::min(output->GetPipelineMTime(), output->GetUpdateMTime()));
  }
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
  m_SampledContentTime = 0; // until this run succeeds
  const ModifiedTimeType contentTime = SourcesContentTime();
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
  m_SampledContentTime = contentTime;
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
