/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#ifndef itkCDMImageConversion_h
#define itkCDMImageConversion_h

// Copies between ITK images and the core engine's plain cdm::Volume / cdm::Region (used by the CDM filters).
#include "cdmModel.h"
#include "itkImage.h"
#include "itkImageRegionConstIterator.h"
#include "itkImageRegionIterator.h"

#include <string>
#include <type_traits>

namespace itk
{
namespace CDMConversion
{

/** The cdm::Region (x, y, z) of an ITK region of dimension 2 or 3. */
template <unsigned int VDimension>
cdm::Region
ToCDMRegion(const ImageRegion<VDimension> & region)
{
  static_assert(VDimension == 2 || VDimension == 3, "CDM filters work on 2D and 3D images");
  cdm::Region result;
  result.Size = { 1, 1, 1 };
  for (unsigned int a = 0; a < VDimension; ++a)
  {
    result.Index[a] = region.GetIndex(a);
    result.Size[a] = static_cast<int64_t>(region.GetSize(a));
  }
  return result;
}

/** The ITK region of a cdm::Region whose indices count from `origin` (an image's largest possible region's index). */
template <unsigned int VDimension>
ImageRegion<VDimension>
FromCDMRegion(const cdm::Region & region, const Index<VDimension> & origin)
{
  ImageRegion<VDimension> result;
  for (unsigned int a = 0; a < VDimension; ++a)
  {
    result.SetIndex(a, region.Index[a] + origin[a]);
    result.SetSize(a, static_cast<SizeValueType>(region.Size[a]));
  }
  return result;
}

/** Image size as (x, y, z). */
template <unsigned int VDimension>
std::array<int64_t, 3>
ToCDMSize(const Size<VDimension> & size)
{
  std::array<int64_t, 3> result{ 1, 1, 1 };
  for (unsigned int a = 0; a < VDimension; ++a)
  {
    result[a] = static_cast<int64_t>(size[a]);
  }
  return result;
}

/** The voxels of `region` of `image` as a float Volume whose origin is the region's first voxel. With
 *  `withVoxels` false only the geometry is filled (for checks). */
template <typename TImage>
cdm::Volume
ToVolume(const TImage *                      image,
         const typename TImage::RegionType & region,
         const std::string &                 description,
         bool                                withVoxels = true)
{
  constexpr unsigned int Dimension = TImage::ImageDimension;
  cdm::Volume            volume;
  volume.Description = description;
  volume.Dimension = Dimension;
  const cdm::Region r = ToCDMRegion(region);
  volume.Size = r.Size;
  typename TImage::PointType origin;
  image->TransformIndexToPhysicalPoint(region.GetIndex(), origin);
  for (unsigned int a = 0; a < Dimension; ++a)
  {
    volume.Spacing[a] = image->GetSpacing()[a];
    volume.Origin[a] = origin[a];
    for (unsigned int b = 0; b < Dimension; ++b)
    {
      volume.Direction[3 * a + b] = image->GetDirection()[a][b];
    }
  }
  if (withVoxels)
  {
    volume.Voxels.reserve(static_cast<size_t>(volume.NumberOfVoxels()));
    for (ImageRegionConstIterator<TImage> it(image, region); !it.IsAtEnd(); ++it)
    {
      volume.Voxels.push_back(static_cast<float>(it.Get()));
    }
  }
  return volume;
}

/** The voxels of `region` of `image` as a Volume like ToVolume, but viewing the image's buffer instead of copying it
 *  when the pixels are float and `region` is one contiguous run of it: inside the buffered region and as wide as it on
 *  every axis but the last (the whole buffer, or a slab of whole rows or planes: what the streamed sampler's windows
 *  and the synthesis's pieces are). The image must outlive the Volume and not change while it is used. */
template <typename TImage>
cdm::Volume
ToVolumeView(const TImage * image, const typename TImage::RegionType & region, const std::string & description)
{
  if constexpr (std::is_same_v<typename TImage::PixelType, float>)
  {
    const auto & buffered = image->GetBufferedRegion();
    bool         contiguous = region.GetNumberOfPixels() > 0 && buffered.IsInside(region);
    for (unsigned int a = 0; a + 1 < TImage::ImageDimension; ++a)
    {
      contiguous = contiguous && region.GetIndex(a) == buffered.GetIndex(a) && region.GetSize(a) == buffered.GetSize(a);
    }
    if (contiguous)
    {
      const cdm::Volume geometry = ToVolume(image, region, description, false);
      float * const first = const_cast<float *>(image->GetBufferPointer()) + image->ComputeOffset(region.GetIndex());
      return geometry.View(first, description);
    }
  }
  return ToVolume(image, region, description);
}

/** The buffer of `image` when it holds float pixels for exactly `region` (so that the engine can write into it),
 *  otherwise nullptr. */
template <typename TImage>
float *
WritableBuffer(TImage * image, const typename TImage::RegionType & region)
{
  if constexpr (std::is_same_v<typename TImage::PixelType, float>)
  {
    if (region == image->GetBufferedRegion())
    {
      return image->GetBufferPointer();
    }
  }
  return nullptr;
}

/** Copies a Volume's voxels into `region` of `image` (same number of voxels, x fastest); nothing to do when the
 *  Volume already views that region's buffer. */
template <typename TImage>
void
CopyToImage(const cdm::Volume & volume, TImage * image, const typename TImage::RegionType & region)
{
  if (static_cast<SizeValueType>(volume.StoredVoxels()) != region.GetNumberOfPixels())
  {
    itkGenericExceptionMacro(<< "internal: " << volume.StoredVoxels() << " voxels for a region of "
                             << region.GetNumberOfPixels());
  }
  if (static_cast<const void *>(volume.Data()) == static_cast<const void *>(WritableBuffer(image, region)))
  {
    return;
  }
  const float * voxels = volume.Data();
  for (ImageRegionIterator<TImage> it(image, region); !it.IsAtEnd(); ++it)
  {
    it.Set(static_cast<typename TImage::PixelType>(*voxels++));
  }
}

/** A new image of type TImage (2D or 3D, any scalar pixel) with the Volume's geometry and voxels. */
template <typename TImage>
typename TImage::Pointer
MakeImage(const cdm::Volume & volume)
{
  constexpr unsigned int         Dimension = TImage::ImageDimension;
  auto                           image = TImage::New();
  typename TImage::SizeType      size;
  typename TImage::SpacingType   spacing;
  typename TImage::PointType     origin;
  typename TImage::DirectionType direction;
  for (unsigned int a = 0; a < Dimension; ++a)
  {
    size[a] = static_cast<SizeValueType>(volume.Size[a]);
    spacing[a] = volume.Spacing[a];
    origin[a] = volume.Origin[a];
    for (unsigned int b = 0; b < Dimension; ++b)
    {
      direction[a][b] = volume.Direction[3 * a + b];
    }
  }
  image->SetRegions(typename TImage::RegionType(size));
  image->SetSpacing(spacing);
  image->SetOrigin(origin);
  image->SetDirection(direction);
  image->Allocate();
  CopyToImage(volume, image.GetPointer(), image->GetLargestPossibleRegion());
  return image;
}

} // namespace CDMConversion
} // namespace itk

#endif
