/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#ifndef itkCDMDiffusionSamplerImageFilter_hxx
#define itkCDMDiffusionSamplerImageFilter_hxx

#include "itkCDMDiffusionSamplerImageFilter.h"
#include "itkCDMRepresentation.h"

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
    const_cast<TInputImage *>(this->GetSource(name))->SetRequestedRegionToLargestPossibleRegion();
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
    const TInputImage *       first = this->GetFirstSource();
    const cdm::Representation representation = this->GetModel()->GetModel().SampleRepresentation(
      this->SourceVolumes(first->GetLargestPossibleRegion()), options);
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
}

} // namespace itk

#endif
