/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#ifndef itkCDMSourceImageFilter_hxx
#define itkCDMSourceImageFilter_hxx

#include "itkCDMImageConversion.h"
#include "itkCDMSourceImageFilter.h"

#include <algorithm>

namespace itk
{

template <typename TInputImage, typename TOutputImage>
CDMSourceImageFilter<TInputImage, TOutputImage>::CDMSourceImageFilter()
{
  // Inputs are named by modality; there is no "Primary" image.
  this->SetNumberOfRequiredInputs(0);
  this->RemoveRequiredInputName("Primary");
}

template <typename TInputImage, typename TOutputImage>
void
CDMSourceImageFilter<TInputImage, TOutputImage>::SetSource(const std::string & modality, const TInputImage * image)
{
  if (modality.empty() || modality == "Primary" || modality == "Representation")
  {
    itkExceptionMacro(<< "'" << modality << "' is not a modality name; expected e.g. t1n, t1c, t2w or t2f");
  }
  this->ProcessObject::SetInput(modality, const_cast<TInputImage *>(image));
}

template <typename TInputImage, typename TOutputImage>
const TInputImage *
CDMSourceImageFilter<TInputImage, TOutputImage>::GetSource(const std::string & modality) const
{
  return dynamic_cast<const TInputImage *>(this->ProcessObject::GetInput(modality));
}

template <typename TInputImage, typename TOutputImage>
std::vector<std::string>
CDMSourceImageFilter<TInputImage, TOutputImage>::GetSourceNames() const
{
  std::vector<std::string> names;
  for (const auto & name : this->GetInputNames())
  {
    if (name != "Primary" && name != "Representation" && this->GetSource(name) != nullptr)
    {
      names.push_back(name);
    }
  }
  return names;
}

template <typename TInputImage, typename TOutputImage>
ModifiedTimeType
CDMSourceImageFilter<TInputImage, TOutputImage>::GetMTime() const
{
  const ModifiedTimeType own = Superclass::GetMTime();
  return m_Model ? std::max(own, m_Model->GetMTime()) : own;
}

template <typename TInputImage, typename TOutputImage>
const TInputImage *
CDMSourceImageFilter<TInputImage, TOutputImage>::GetFirstSource() const
{
  if (m_Model && m_Model->IsLoaded())
  {
    for (const auto & name : m_Model->GetModel().Config().Sources)
    {
      if (const TInputImage * image = this->GetSource(name))
      {
        return image;
      }
    }
  }
  const auto names = this->GetSourceNames();
  return names.empty() ? nullptr : this->GetSource(names.front());
}

template <typename TInputImage, typename TOutputImage>
void
CDMSourceImageFilter<TInputImage, TOutputImage>::CopySourceInformationToOutputs()
{
  const TInputImage * first = this->GetFirstSource();
  if (!first)
  {
    return;
  }
  for (unsigned int i = 0; i < this->GetNumberOfIndexedOutputs(); ++i)
  {
    if (auto * output = dynamic_cast<TOutputImage *>(this->ProcessObject::GetOutput(i)))
    {
      output->CopyInformation(first);
      output->SetLargestPossibleRegion(first->GetLargestPossibleRegion());
    }
  }
}

template <typename TInputImage, typename TOutputImage>
void
CDMSourceImageFilter<TInputImage, TOutputImage>::VerifyPreconditions() ITKv5_CONST
{
  Superclass::VerifyPreconditions();
  if (!m_Model || !m_Model->IsLoaded())
  {
    itkExceptionMacro(<< "no CDM model: call SetModel() with a loaded itk::CDMModel");
  }
  const cdm::ModelConfig & config = m_Model->GetModel().Config();
  std::string              expected;
  for (const auto & name : config.Sources)
  {
    expected += (expected.empty() ? "" : ", ") + name;
  }
  const auto names = this->GetSourceNames();
  if (names.empty())
  {
    itkExceptionMacro(<< "no source image set; the model expects " << expected);
  }
  for (const auto & name : names)
  {
    if (config.SourceIndex(name) < 0)
    {
      itkExceptionMacro(<< "source '" << name << "' is not an input of the model '" << m_Model->GetFileName()
                        << "'; expected " << expected);
    }
  }
  if (!config.SourcesOptional)
  {
    for (const auto & name : config.Sources)
    {
      if (this->GetSource(name) == nullptr)
      {
        itkExceptionMacro(<< "source '" << name << "' is missing; the model requires " << expected);
      }
    }
  }
}

template <typename TInputImage, typename TOutputImage>
void
CDMSourceImageFilter<TInputImage, TOutputImage>::VerifyInputInformation() ITKv5_CONST
{
  const TInputImage * first = this->GetFirstSource();
  if (!first)
  {
    return;
  }
  std::string firstName;
  for (const auto & name : this->GetSourceNames())
  {
    if (this->GetSource(name) == first)
    {
      firstName = name;
    }
  }
  const cdm::Volume reference =
    CDMConversion::ToVolume(first, first->GetLargestPossibleRegion(), "source " + firstName, false);
  for (const auto & name : this->GetSourceNames())
  {
    const TInputImage * image = this->GetSource(name);
    const cdm::Volume   other =
      CDMConversion::ToVolume(image, image->GetLargestPossibleRegion(), "source " + name, false);
    std::string why;
    if (!cdm::SameGeometry(reference, other, &why))
    {
      itkExceptionMacro(<< "sources disagree in geometry: " << why);
    }
  }
}

template <typename TInputImage, typename TOutputImage>
cdm::SourceVolumes
CDMSourceImageFilter<TInputImage, TOutputImage>::SourceVolumes(const InputRegionType & region) const
{
  cdm::SourceVolumes volumes;
  for (const auto & name : this->GetSourceNames())
  {
    const TInputImage * image = this->GetSource(name);
    if (!image->GetBufferedRegion().IsInside(region))
    {
      itkExceptionMacro(<< "source '" << name << "' holds " << image->GetBufferedRegion() << " but " << region
                        << " is needed");
    }
    volumes[name] = CDMConversion::ToVolumeView(image, region, "source " + name);
  }
  return volumes;
}

template <typename TInputImage, typename TOutputImage>
void
CDMSourceImageFilter<TInputImage, TOutputImage>::UpdateSources(const InputRegionType & region) const
{
  for (const auto & name : this->GetSourceNames())
  {
    auto * image = const_cast<TInputImage *>(this->GetSource(name));
    if (!image->GetBufferedRegion().IsInside(region))
    {
      image->SetRequestedRegion(region);
      image->PropagateRequestedRegion();
      image->UpdateOutputData();
    }
  }
}

template <typename TInputImage, typename TOutputImage>
auto
CDMSourceImageFilter<TInputImage, TOutputImage>::RequiredSourceRegion(const InputRegionType & outputRegion) const
  -> InputRegionType
{
  const auto & largest = this->GetFirstSource()->GetLargestPossibleRegion();
  cdm::Region  output = CDMConversion::ToCDMRegion(outputRegion);
  for (unsigned int a = 0; a < ImageDimension; ++a)
  {
    output.Index[a] -= largest.GetIndex(a);
  }
  const cdm::Region required =
    m_Model->GetModel().RequiredSourceRegion(output, CDMConversion::ToCDMSize(largest.GetSize()));
  return CDMConversion::FromCDMRegion<ImageDimension>(required, largest.GetIndex());
}

template <typename TInputImage, typename TOutputImage>
cdm::SynthesisOptions
CDMSourceImageFilter<TInputImage, TOutputImage>::EngineOptions() const
{
  cdm::SynthesisOptions options;
  CallEngine([&]() { options.NetworkPrecision = cdm::ParsePrecision(m_Precision, "Precision"); });
  options.VoxelsPerCall = static_cast<int64_t>(m_VoxelsPerCall);
  options.Target = m_TargetModality;
  return options;
}

template <typename TInputImage, typename TOutputImage>
void
CDMSourceImageFilter<TInputImage, TOutputImage>::PrintSelf(std::ostream & os, Indent indent) const
{
  Superclass::PrintSelf(os, indent);
  os << indent << "Precision: " << m_Precision << std::endl;
  os << indent << "VoxelsPerCall: " << m_VoxelsPerCall << std::endl;
  os << indent << "TargetModality: " << (m_TargetModality.empty() ? std::string("(automatic)") : m_TargetModality)
     << std::endl;
  os << indent << "Model: " << (m_Model ? m_Model->GetFileName() : std::string("(none)")) << std::endl;
  os << indent << "Sources:";
  for (const auto & name : this->GetSourceNames())
  {
    os << " " << name;
  }
  os << std::endl;
}

} // namespace itk

#endif
