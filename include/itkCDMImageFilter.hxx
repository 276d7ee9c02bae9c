/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#ifndef itkCDMImageFilter_hxx
#define itkCDMImageFilter_hxx

#include "itkCDMImageFilter.h"
#include <algorithm>

namespace itk
{

template <typename TInputImage, typename TOutputImage>
CDMImageFilter<TInputImage, TOutputImage>::CDMImageFilter()
{
  m_TileSize.Fill(0);
  this->SetNumberOfRequiredOutputs(2);
  this->SetNthOutput(1, this->MakeOutput(1));
  m_Sampler = SamplerType::New();
  m_Synthesis = SynthesisType::New();
  m_Synthesis->SetRepresentation(m_Sampler->GetOutput());
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
  // What the synthesis of the requested piece reads; the sampler pulls the whole sources itself, window by window
  // (or whole, with StreamSources off), when it runs.
  const auto * model = this->GetModel();
  if (!this->GetFirstSource() || !model || !model->IsLoaded())
  {
    return;
  }
  // The engine's required region lies inside the image, whose extent every source shares (VerifyInputInformation).
  const auto region = m_StreamSources ? this->RequiredSourceRegion(this->GetOutput()->GetRequestedRegion())
                                      : this->GetFirstSource()->GetLargestPossibleRegion();
  for (const auto & name : this->GetSourceNames())
  {
    const_cast<TInputImage *>(this->GetSource(name))->SetRequestedRegion(region);
  }
}

template <typename TInputImage, typename TOutputImage>
void
CDMImageFilter<TInputImage, TOutputImage>::GenerateData()
{
  // The members keep their outputs between updates: setters that change nothing leave the sampler up to date, so a
  // streamed output re-runs only the synthesis, piece by piece.
  auto * model = const_cast<CDMModel *>(this->GetModel());
  m_Sampler->SetModel(model);
  m_Synthesis->SetModel(model);
  const std::vector<std::string> names = this->GetSourceNames();
  const auto                     connectSources = [this, &names](auto * filter) {
    for (const auto & name : filter->GetSourceNames())
    {
      if (std::find(names.begin(), names.end(), name) == names.end())
      {
        filter->SetSource(name, nullptr); // a source removed from this filter
      }
    }
    for (const auto & name : names)
    {
      filter->SetSource(name, this->GetSource(name)); // unchanged pointers do not modify the filter
    }
  };
  connectSources(m_Sampler.GetPointer());
  connectSources(m_Synthesis.GetPointer());
  m_Sampler->SetNumberOfSamples(m_NumberOfSamples);
  m_Sampler->SetOutputSamples(m_NumberOfSamples > 1);
  m_Sampler->SetSeed(m_Seed);
  m_Sampler->SetEta(m_Eta);
  m_Sampler->SetStreamSources(m_StreamSources);
  m_Sampler->SetVoxelsPerRead(m_VoxelsPerRead);
  m_Synthesis->SetTileSize(m_TileSize);
  m_Sampler->SetPrecision(this->GetPrecision());
  m_Sampler->SetVoxelsPerCall(this->GetVoxelsPerCall());
  m_Sampler->SetTargetModality(this->GetTargetModality());
  m_Synthesis->SetTargetModality(this->GetTargetModality());
  m_Synthesis->SetPrecision(this->GetPrecision());
  m_Synthesis->SetVoxelsPerCall(this->GetVoxelsPerCall());
  m_Synthesis->SetStreamedUpdateTime(this->GetOutput()->GetPipelineMTime()); // one per streamed update of this filter

  m_Synthesis->GraftNthOutput(0, this->GetOutput());
  m_Synthesis->GraftNthOutput(1, this->GetUncertaintyOutput());
  m_Synthesis->GetOutput()->SetRequestedRegion(this->GetOutput()->GetRequestedRegion());
  m_Synthesis->GetUncertaintyOutput()->SetRequestedRegion(this->GetOutput()->GetRequestedRegion());
  // Progress: the sampler's fifth when it runs in this update (once per change of what it reads), then the synthesis.
  // Not ITK's ProgressAccumulator: one made per update counts a member's progress at its start as done, so every
  // streamed piece after the first would report 1 from its start (and a member accumulator would keep this filter,
  // and its model's weights, alive forever: found by LeakSanitizer, scripts/sanitize.sh).
  bool sampling = false;
  m_Synthesis->UpdateProgress(0.0f); // left at 1 by the last piece
  const auto report = [this, &sampling](const EventObject &) {
    const float synthesis = m_Synthesis->GetProgress();
    this->UpdateProgress(sampling ? 0.2f * m_Sampler->GetProgress() + 0.8f * synthesis : synthesis);
  };
  const unsigned long samplerStart =
    m_Sampler->AddObserver(StartEvent(), [&sampling](const EventObject &) { sampling = true; });
  const unsigned long samplerProgress = m_Sampler->AddObserver(ProgressEvent(), report);
  const unsigned long synthesisProgress = m_Synthesis->AddObserver(ProgressEvent(), report);
  const auto          removeObservers = [&]() {
    m_Sampler->RemoveObserver(samplerStart);
    m_Sampler->RemoveObserver(samplerProgress);
    m_Synthesis->RemoveObserver(synthesisProgress);
  };
  try
  {
    // The member pipeline for this piece. Re-reading the sources' information for every piece marks nothing as
    // changed: the sampler compares what lies upstream of its sources with its last run (it samples once for all
    // pieces). An earlier version refreshed the information once per update only, which measured 2.7 s faster; that
    // was glibc's allocator, not the order (bench/EXPERIMENTS.md, sixth session).
    m_Synthesis->UpdateOutputInformation();
    m_Synthesis->GetOutput()->PropagateRequestedRegion();
    m_Synthesis->GetOutput()->UpdateOutputData();
  }
  catch (...)
  {
    // ITK resets a failed filter and what feeds it, not the filters it feeds: when the sampler fails (say, no target
    // modality named), the synthesis member would stay marked as updating, and every later Update() of this filter
    // would return an empty image even once the cause is fixed.
    m_Synthesis->ResetPipeline();
    removeObservers();
    throw;
  }
  removeObservers();
  this->GraftNthOutput(0, m_Synthesis->GetOutput());
  this->GraftNthOutput(1, m_Synthesis->GetUncertaintyOutput());
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
  os << indent << "StreamSources: " << (m_StreamSources ? "On" : "Off") << std::endl;
  os << indent << "VoxelsPerRead: " << m_VoxelsPerRead << std::endl;
}

} // namespace itk

#endif
