/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#ifndef itkCDMSourceImageFilter_h
#define itkCDMSourceImageFilter_h

#include "itkCDMModel.h"
#include "itkImageToImageFilter.h"

#include <map>
#include <string>
#include <vector>

namespace itk
{

/** \class CDMSourceImageFilter
 * \brief Base of the CDM filters that read source modalities: a shared CDMModel and one named input per source.
 *
 * Sources are set by modality name (`SetSource("t1n", image)`); the names must be those of the model. Before any
 * work the filter checks that every source is known to the model, that the required ones are present, and that
 * all sources share size, spacing, origin and direction; each failure raises an ExceptionObject that names the
 * input and says what was expected.
 *
 * \ingroup CDM
 */
template <typename TInputImage, typename TOutputImage>
class CDMSourceImageFilter : public ImageToImageFilter<TInputImage, TOutputImage>
{
public:
  ITK_DISALLOW_COPY_AND_MOVE(CDMSourceImageFilter);

  using Self = CDMSourceImageFilter;
  using Superclass = ImageToImageFilter<TInputImage, TOutputImage>;
  using Pointer = SmartPointer<Self>;
  using ConstPointer = SmartPointer<const Self>;
  using InputImageType = TInputImage;
  using InputRegionType = typename TInputImage::RegionType;
  static constexpr unsigned int ImageDimension = TInputImage::ImageDimension;

  itkTypeMacro(CDMSourceImageFilter, ImageToImageFilter);

  /** The model (shared, loaded once). */
  itkSetObjectMacro(Model, CDMModel);
  itkGetConstObjectMacro(Model, CDMModel);

  /** Sets the image of one source modality, e.g. "t1n". */
  void
  SetSource(const std::string & modality, const TInputImage * image);
  /** The image of a source modality, or nullptr. */
  const TInputImage *
  GetSource(const std::string & modality) const;
  /** The modalities set so far. */
  std::vector<std::string>
  GetSourceNames() const;

  /** The arithmetic of the source encoder and the C-UNet: "fp32" (default), "bf16" or "fp16" (autocast: faster where
   *  the hardware has it, at a fidelity cost given in bench/PRECISION.md). Checked when the filter runs. */
  itkSetStringMacro(Precision);
  itkGetStringMacro(Precision);

  /** Memory bound: voxels one network call reads (a 2D model's slices per call, a 3D model's source-encoder slabs);
   *  0 (default) is automatic. Any value gives the same image to float rounding. */
  itkSetMacro(VoxelsPerCall, SizeValueType);
  itkGetConstMacro(VoxelsPerCall, SizeValueType);

  /** The modality to synthesize with a unified model (one that synthesizes several): empty (default) means the one
   *  of its targets the sources lack, when exactly one is; a per-target model accepts only its own target. */
  itkSetStringMacro(TargetModality);
  itkGetStringMacro(TargetModality);

  /** Includes the model's: loading another file into the same CDMModel re-executes the filter. */
  ModifiedTimeType
  GetMTime() const override;

protected:
  CDMSourceImageFilter();
  ~CDMSourceImageFilter() override = default;

  /** Model set, every source known to it, the required ones present. */
  void
  VerifyPreconditions() ITKv5_CONST override;
  /** All sources share size, spacing, origin and direction. */
  void
  VerifyInputInformation() ITKv5_CONST override;

  /** The sources' voxels in `region` (of each source) as core-engine volumes. */
  cdm::SourceVolumes
  SourceVolumes(const InputRegionType & region) const;
  /** Brings every source's buffer to hold `region`, re-running what feeds it when it does not (a streaming sampler
   *  pulls its sources window by window, and a consumer of the same images needs its own region afterwards). An image
   *  without a pipeline holds its whole region already. */
  void
  UpdateSources(const InputRegionType & region) const;
  /** The part of the sources the C-UNet reads for `outputRegion` (on the sources' grid): the core engine's rule
   *  (cdm::Model::RequiredSourceRegion), one for every filter. */
  InputRegionType
  RequiredSourceRegion(const InputRegionType & outputRegion) const;
  /** Gives every output image the first source's geometry and largest possible region. */
  void
  CopySourceInformationToOutputs();
  /** The engine's options from this filter's Precision, VoxelsPerCall and TargetModality (an unknown precision
   *  raises an ExceptionObject naming it). */
  cdm::SynthesisOptions
  EngineOptions() const;
  /** The first source image (by modality order of the model). */
  const TInputImage *
  GetFirstSource() const;

  void
  PrintSelf(std::ostream & os, Indent indent) const override;

  /** Runs `work`, turning a core-engine error into an ExceptionObject. */
  template <typename TWork>
  void
  CallEngine(TWork && work) const
  {
    try
    {
      work();
    }
    catch (const ExceptionObject &)
    {
      throw;
    }
    catch (const std::exception & e)
    {
      itkExceptionMacro(<< e.what());
    }
  }

private:
  typename CDMModel::Pointer m_Model;
  std::string                m_Precision{ "fp32" };
  SizeValueType              m_VoxelsPerCall{ 0 };
  std::string                m_TargetModality;
};

} // namespace itk

#ifndef ITK_MANUAL_INSTANTIATION
#  include "itkCDMSourceImageFilter.hxx"
#endif

#endif
