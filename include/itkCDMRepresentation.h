/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#ifndef itkCDMRepresentation_h
#define itkCDMRepresentation_h

// The representation z in ITK: an itk::VectorImage<float, Dim> with one voxel per representation cell, spanning the
// input's physical extent (one voxel for a global z; one per slice for a 2D model on a volume). Components hold
// K samples of length D one after another ([k * D + d]); the MetaDataDictionary holds each source's normalisation
// scale ("CDM_SourceScale_<modality>"), the number of samples ("CDM_Samples") and the modality it guides the synthesis
// of ("CDM_Target").
#include "cdmModel.h"
#include "itkMetaDataObject.h"
#include "itkVectorImage.h"

#include <algorithm>
#include <string>
#include <vector>

namespace itk
{
namespace CDMConversion
{

/** The MetaDataDictionary key of a source's normalisation scale on a representation image (one spelling for the
 *  writer and both readers). */
inline std::string
SourceScaleKey(const std::string & modality)
{
  return "CDM_SourceScale_" + modality;
}

/** Output information of a representation image computed from `input` (set on `output`, not allocated). */
template <typename TInputImage, typename TRepresentationImage>
void
SetRepresentationInformation(const TInputImage *      input,
                             const cdm::ModelConfig & config,
                             unsigned int             components,
                             TRepresentationImage *   output)
{
  constexpr unsigned int                     Dimension = TInputImage::ImageDimension;
  const auto &                               region = input->GetLargestPossibleRegion();
  typename TRepresentationImage::SizeType    size;
  typename TRepresentationImage::SpacingType spacing;
  typename TInputImage::PointType            centre;
  ContinuousIndex<double, Dimension>         middle;
  for (unsigned int a = 0; a < Dimension; ++a)
  {
    const bool perSlice = config.Dimension == 2 && Dimension == 3 && static_cast<int>(a) == config.SliceAxis;
    size[a] = perSlice ? region.GetSize(a) : 1;
    spacing[a] = perSlice ? input->GetSpacing()[a] : input->GetSpacing()[a] * region.GetSize(a);
    middle[a] = perSlice ? static_cast<double>(region.GetIndex(a))
                         : region.GetIndex(a) + 0.5 * (static_cast<double>(region.GetSize(a)) - 1.0);
  }
  input->TransformContinuousIndexToPhysicalPoint(middle, centre);
  output->SetLargestPossibleRegion(typename TRepresentationImage::RegionType(size));
  output->SetSpacing(spacing);
  output->SetOrigin(centre);
  output->SetDirection(input->GetDirection());
  output->SetNumberOfComponentsPerPixel(components);
}

/** Writes a representation (all samples, or their mean) into an allocated representation image. */
template <typename TRepresentationImage>
void
FillRepresentation(const cdm::Representation & representation, bool samples, TRepresentationImage * output)
{
  const std::vector<float>                 mean = samples ? std::vector<float>() : representation.Mean();
  const int                                count = samples ? representation.Samples : 1;
  const int64_t                            d = representation.Dim;
  typename TRepresentationImage::PixelType pixel(static_cast<unsigned int>(count * d));
  float *                                  buffer = output->GetBufferPointer();
  for (int64_t cell = 0; cell < representation.Cells; ++cell)
  {
    for (int k = 0; k < count; ++k)
    {
      for (int64_t i = 0; i < d; ++i)
      {
        buffer[(cell * count + k) * d + i] =
          samples ? representation.Values[static_cast<size_t>((k * representation.Cells + cell) * d + i)]
                  : mean[static_cast<size_t>(cell * d + i)];
      }
    }
  }
  MetaDataDictionary & dictionary = output->GetMetaDataDictionary();
  for (const auto & [name, scale] : representation.SourceScales)
  {
    EncapsulateMetaData<double>(dictionary, SourceScaleKey(name), scale);
  }
  EncapsulateMetaData<int>(dictionary, "CDM_Samples", count);
  EncapsulateMetaData<std::string>(dictionary, "CDM_Target", representation.Target);
}

/** Whether a representation image carries the normalisation scale of every source in `sources` (the sampler's
 *  output does once it has run; the encoder's never does). */
template <typename TRepresentationImage>
bool
CarriesSourceScales(const TRepresentationImage * image, const std::vector<std::string> & sources)
{
  const MetaDataDictionary & dictionary = image->GetMetaDataDictionary();
  return std::all_of(sources.begin(), sources.end(), [&dictionary](const std::string & name) {
    return dictionary.HasKey(SourceScaleKey(name));
  });
}

/** Reads a representation image back (its cells in buffer order, its samples and its source scales). */
template <typename TRepresentationImage>
cdm::Representation
ReadRepresentation(const TRepresentationImage * image, int representationDim, const std::vector<std::string> & sources)
{
  cdm::Representation representation;
  const unsigned int  components = image->GetNumberOfComponentsPerPixel();
  if (representationDim < 1 || components % static_cast<unsigned int>(representationDim) != 0)
  {
    itkGenericExceptionMacro(<< "the representation image has " << components << " components per voxel; expected a "
                             << "multiple of the model's representation length " << representationDim);
  }
  representation.Dim = representationDim;
  representation.Samples = static_cast<int>(components) / representationDim;
  representation.Cells = static_cast<int64_t>(image->GetBufferedRegion().GetNumberOfPixels());
  const int64_t d = representationDim;
  representation.Values.resize(static_cast<size_t>(representation.Samples * representation.Cells * d));
  const float * buffer = image->GetBufferPointer();
  for (int64_t cell = 0; cell < representation.Cells; ++cell)
  {
    for (int k = 0; k < representation.Samples; ++k)
    {
      for (int64_t i = 0; i < d; ++i)
      {
        representation.Values[static_cast<size_t>((k * representation.Cells + cell) * d + i)] =
          buffer[(cell * representation.Samples + k) * d + i];
      }
    }
  }
  const MetaDataDictionary & dictionary = image->GetMetaDataDictionary();
  ExposeMetaData<std::string>(dictionary, "CDM_Target", representation.Target);
  for (const auto & name : sources)
  {
    double scale = 0.0;
    if (ExposeMetaData<double>(dictionary, SourceScaleKey(name), scale))
    {
      representation.SourceScales[name] = scale;
    }
  }
  return representation;
}

} // namespace CDMConversion
} // namespace itk

#endif
