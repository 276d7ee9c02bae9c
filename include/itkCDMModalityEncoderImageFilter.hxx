/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#ifndef itkCDMModalityEncoderImageFilter_hxx
#define itkCDMModalityEncoderImageFilter_hxx

#include "itkCDMImageConversion.h"
#include "itkCDMModalityEncoderImageFilter.h"
#include "itkCDMRepresentation.h"

namespace itk
{

template <typename TInputImage>
void
CDMModalityEncoderImageFilter<TInputImage>::VerifyPreconditions() ITKv5_CONST
{
  Superclass::VerifyPreconditions();
  if (!m_Model || !m_Model->IsLoaded())
  {
    itkExceptionMacro(<< "no CDM model: call SetModel() with a loaded itk::CDMModel");
  }
}

template <typename TInputImage>
void
CDMModalityEncoderImageFilter<TInputImage>::GenerateOutputInformation()
{
  // No Superclass call: the representation grid is coarser than the input.
  const TInputImage * input = this->GetInput();
  if (!input || !m_Model || !m_Model->IsLoaded())
  {
    return;
  }
  const cdm::ModelConfig & config = m_Model->GetModel().Config();
  CDMConversion::SetRepresentationInformation(
    input, config, static_cast<unsigned int>(config.Network.RepresentationDim), this->GetOutput());
}

template <typename TInputImage>
void
CDMModalityEncoderImageFilter<TInputImage>::GenerateInputRequestedRegion()
{
  Superclass::GenerateInputRequestedRegion();
  if (auto * input = const_cast<TInputImage *>(this->GetInput()))
  {
    input->SetRequestedRegionToLargestPossibleRegion();
  }
}

template <typename TInputImage>
void
CDMModalityEncoderImageFilter<TInputImage>::EnlargeOutputRequestedRegion(DataObject * output)
{
  Superclass::EnlargeOutputRequestedRegion(output);
  output->SetRequestedRegionToLargestPossibleRegion();
}

template <typename TInputImage>
void
CDMModalityEncoderImageFilter<TInputImage>::GenerateData()
{
  this->AllocateOutputs();
  const TInputImage * input = this->GetInput();
  this->UpdateProgress(0.0f);
  try
  {
    const cdm::Representation representation = m_Model->GetModel().Encode(
      CDMConversion::ToVolumeView(input, input->GetLargestPossibleRegion(), "target image"), m_TargetModality);
    CDMConversion::FillRepresentation(representation, false, this->GetOutput());
  }
  catch (const std::exception & e)
  {
    itkExceptionMacro(<< e.what());
  }
  this->UpdateProgress(1.0f);
}

template <typename TInputImage>
void
CDMModalityEncoderImageFilter<TInputImage>::PrintSelf(std::ostream & os, Indent indent) const
{
  Superclass::PrintSelf(os, indent);
  os << indent << "Model: " << (m_Model ? m_Model->GetFileName() : std::string("(none)")) << std::endl;
  os << indent << "TargetModality: " << (m_TargetModality.empty() ? std::string("(the model's)") : m_TargetModality)
     << std::endl;
}

} // namespace itk

#endif
