/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#include "cdmImageIO.h"
#include "cdmAtomicFile.h"
#include "cdmError.h"

#include "itkImage.h"
#include "itkImageFileReader.h"
#include "itkImageFileWriter.h"

#include <algorithm>
#include <filesystem>

namespace cdm {

Volume
ReadVolume(const std::string & path)
{
  if (!std::filesystem::is_regular_file(path))
  {
    throw InputError("image file '" + path + "' does not exist");
  }
  using ImageType = itk::Image<float, 3>;
  auto reader = itk::ImageFileReader<ImageType>::New();
  reader->SetFileName(path);
  try
  {
    reader->Update();
  }
  catch (const itk::ExceptionObject & e)
  {
    throw InputError("cannot read image '" + path + "': " + std::string(e.GetDescription()));
  }
  const unsigned int dimension = std::min(3u, std::max(2u, reader->GetImageIO()->GetNumberOfDimensions()));
  return ToVolume(reader->GetOutput(), path, dimension);
}

Volume
ToVolume(const itk::Image<float, 3> * image, const std::string & description, unsigned int dimension)
{
  Volume volume;
  volume.Description = description;
  volume.Dimension = dimension;
  const auto size = image->GetBufferedRegion().GetSize();
  for (unsigned int a = 0; a < 3; ++a)
  {
    volume.Size[a] = static_cast<int64_t>(size[a]);
    volume.Spacing[a] = image->GetSpacing()[a];
    volume.Origin[a] = image->GetOrigin()[a];
    for (unsigned int b = 0; b < 3; ++b)
    {
      volume.Direction[3 * a + b] = image->GetDirection()[a][b];
    }
  }
  volume.Voxels.assign(image->GetBufferPointer(), image->GetBufferPointer() + volume.NumberOfVoxels());
  return volume;
}

itk::Image<float, 3>::Pointer
ToImage(const Volume & volume)
{
  using ImageType = itk::Image<float, 3>;
  auto                     image = ImageType::New();
  ImageType::SizeType      size;
  ImageType::SpacingType   spacing;
  ImageType::PointType     origin;
  ImageType::DirectionType direction;
  for (unsigned int a = 0; a < 3; ++a)
  {
    size[a] = static_cast<itk::SizeValueType>(volume.Size[a]);
    spacing[a] = volume.Spacing[a];
    origin[a] = volume.Origin[a];
    for (unsigned int b = 0; b < 3; ++b)
    {
      direction[a][b] = volume.Direction[3 * a + b];
    }
  }
  image->SetRegions(ImageType::RegionType(size));
  image->SetSpacing(spacing);
  image->SetOrigin(origin);
  image->SetDirection(direction);
  image->Allocate();
  std::copy(volume.Voxels.begin(), volume.Voxels.end(), image->GetBufferPointer());
  return image;
}

namespace {
template <unsigned int VDimension>
void
WriteImage(const Volume & volume, const std::string & path)
{
  using ImageType = itk::Image<float, VDimension>;
  auto                              image = ImageType::New();
  typename ImageType::SizeType      size;
  typename ImageType::SpacingType   spacing;
  typename ImageType::PointType     origin;
  typename ImageType::DirectionType direction;
  for (unsigned int a = 0; a < VDimension; ++a)
  {
    size[a] = static_cast<itk::SizeValueType>(volume.Size[a]);
    spacing[a] = volume.Spacing[a];
    origin[a] = volume.Origin[a];
    for (unsigned int b = 0; b < VDimension; ++b)
    {
      direction[a][b] = volume.Direction[3 * a + b];
    }
  }
  image->SetRegions(typename ImageType::RegionType(size));
  image->SetSpacing(spacing);
  image->SetOrigin(origin);
  image->SetDirection(direction);
  image->Allocate();
  std::copy(volume.Voxels.begin(), volume.Voxels.end(), image->GetBufferPointer());
  WriteAtomically(path, [&](const std::string & temporary) {
    auto writer = itk::ImageFileWriter<ImageType>::New();
    writer->SetInput(image);
    writer->SetFileName(temporary);
    writer->UseCompressionOn();
    try
    {
      writer->Update();
    }
    catch (const itk::ExceptionObject & e)
    {
      throw InputError("cannot write image '" + path + "': " + std::string(e.GetDescription()));
    }
  });
}
} // namespace

void
WriteVolume(const Volume & volume, const std::string & path)
{
  if (static_cast<int64_t>(volume.Voxels.size()) != volume.NumberOfVoxels())
  {
    throw InputError("cannot write '" + path + "': the volume holds no voxel data");
  }
  if (volume.Dimension == 2 && volume.Size[2] == 1)
  {
    WriteImage<2>(volume, path);
  }
  else
  {
    WriteImage<3>(volume, path);
  }
}

} // namespace cdm
