/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#ifndef itkCDMModalityEncoderImageFilter_h
#define itkCDMModalityEncoderImageFilter_h

#include "itkCDMModel.h"
#include "itkImageToImageFilter.h"
#include "itkVectorImage.h"

#include <algorithm>

namespace itk
{

/** \class CDMModalityEncoderImageFilter
 * \brief The MRM feature encoder: an image of the target modality in, its representation z out.
 *
 * The output is an itk::VectorImage<float, Dim> of D components spanning the input's physical extent: one voxel
 * for a global representation, one voxel per slice for a 2D model applied to a volume (see
 * itkCDMRepresentation.h). The encoder needs the whole input (it asks for the largest possible region).
 *
 * Its output is a valid representation input of CDMSynthesisImageFilter (the oracle z: the representation of the
 * true target, for ablations). It carries no normalisation scales of the sources, so the synthesis filter then reads
 * the whole sources and measures them itself.
 *
 * \ingroup CDM
 */
template <typename TInputImage>
class CDMModalityEncoderImageFilter
    : public ImageToImageFilter<TInputImage, VectorImage<float, TInputImage::ImageDimension>>
{
public:
  ITK_DISALLOW_COPY_AND_MOVE(CDMModalityEncoderImageFilter);

  using Self = CDMModalityEncoderImageFilter;
  using RepresentationImageType = VectorImage<float, TInputImage::ImageDimension>;
  using Superclass = ImageToImageFilter<TInputImage, RepresentationImageType>;
  using Pointer = SmartPointer<Self>;
  using ConstPointer = SmartPointer<const Self>;

  itkNewMacro(Self);
  itkTypeMacro(CDMModalityEncoderImageFilter, ImageToImageFilter);

  itkSetObjectMacro(Model, CDMModel);
  itkGetConstObjectMacro(Model, CDMModel);

  /** The modality of the input image (empty, the default: the model's target); it travels in the output, so that
   *  a unified model's synthesis filter synthesizes that modality. */
  itkSetStringMacro(TargetModality);
  itkGetStringMacro(TargetModality);

  /** Includes the model's: loading another file into the same CDMModel re-executes the filter. */
  ModifiedTimeType
  GetMTime() const override
  {
    const ModifiedTimeType own = Superclass::GetMTime();
    return m_Model ? std::max(own, m_Model->GetMTime()) : own;
  }

protected:
  CDMModalityEncoderImageFilter() = default;
  ~CDMModalityEncoderImageFilter() override = default;

  void
  VerifyPreconditions() ITKv5_CONST override;
  void
  GenerateOutputInformation() override;
  void
  GenerateInputRequestedRegion() override;
  void
  EnlargeOutputRequestedRegion(DataObject * output) override;
  void
  GenerateData() override;
  void
  PrintSelf(std::ostream & os, Indent indent) const override;

private:
  typename CDMModel::Pointer m_Model;
  std::string                m_TargetModality;
};

} // namespace itk

#ifndef ITK_MANUAL_INSTANTIATION
#  include "itkCDMModalityEncoderImageFilter.hxx"
#endif

#endif
