/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#ifndef itkCDMImageFilter_hxx
#define itkCDMImageFilter_hxx

#include "itkCDMImageFilter.h"
#include "itkProgressAccumulator.h"

namespace itk
{

template <typename TInputImage, typename TOutputImage>
CDMImageFilter<TInputImage, TOutputImage>::CDMImageFilter()
{
  m_TileSize.Fill(0);
  this->SetNumberOfRequiredOutputs(2);
  this->SetNthOutput(1, this->MakeOutput(1));
}

template <typename TInputImage, typename TOutputImage>
TOutputImage *
CDMImageFilter<TInputImage, TOutputImage>::GetUncertaintyOutput()
{
  return dynamic_cast<TOutputImage *>(this->ProcessObject::GetOutput(1));
}

template <typename TInputImage, typename TOutputImage>
void
CDMImageFilter<TInputImage, TOutputImage>::GenerateOutputInformation()
{
  this->CopySourceInformationToOutputs();
}

template <typename TInputImage, typename TOutputImage>
void
CDMImageFilter<TInputImage, TOutputImage>::GenerateInputRequestedRegion()
{
  // The sampler reads the whole sources once; the synthesis then reads from the same buffers.
  for (const auto & name : this->GetSourceNames())
  {
    const_cast<TInputImage *>(this->GetSource(name))->SetRequestedRegionToLargestPossibleRegion();
  }
}

template <typename TInputImage, typename TOutputImage>
void
CDMImageFilter<TInputImage, TOutputImage>::GenerateData()
{
  auto sampler = SamplerType::New();
  auto synthesis = SynthesisType::New();
  auto progress = ProgressAccumulator::New();
  progress->SetMiniPipelineFilter(this);
  progress->RegisterInternalFilter(sampler, 0.2f);
  progress->RegisterInternalFilter(synthesis, 0.8f);

  sampler->SetModel(const_cast<CDMModel *>(this->GetModel()));
  synthesis->SetModel(const_cast<CDMModel *>(this->GetModel()));
  for (const auto & name : this->GetSourceNames())
  {
    sampler->SetSource(name, this->GetSource(name));
    synthesis->SetSource(name, this->GetSource(name));
  }
  sampler->SetNumberOfSamples(m_NumberOfSamples);
  sampler->SetOutputSamples(m_NumberOfSamples > 1);
  sampler->SetSeed(m_Seed);
  sampler->SetEta(m_Eta);
  synthesis->SetRepresentation(sampler->GetOutput());
  synthesis->SetTileSize(m_TileSize);

  synthesis->GraftNthOutput(0, this->GetOutput());
  synthesis->GraftNthOutput(1, this->GetUncertaintyOutput());
  synthesis->GetOutput()->SetRequestedRegion(this->GetOutput()->GetRequestedRegion());
  synthesis->GetUncertaintyOutput()->SetRequestedRegion(this->GetOutput()->GetRequestedRegion());
  synthesis->Update();
  this->GraftNthOutput(0, synthesis->GetOutput());
  this->GraftNthOutput(1, synthesis->GetUncertaintyOutput());
}

template <typename TInputImage, typename TOutputImage>
void
CDMImageFilter<TInputImage, TOutputImage>::PrintSelf(std::ostream & os, Indent indent) const
{
  Superclass::PrintSelf(os, indent);
  os << indent << "NumberOfSamples: " << m_NumberOfSamples << std::endl;
  os << indent << "Seed: " << m_Seed << std::endl;
  os << indent << "Eta: " << m_Eta << std::endl;
  os << indent << "TileSize: " << m_TileSize << std::endl;
}

} // namespace itk

#endif
