/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#include "cdmImageIO.h"
#include "cdmAtomicFile.h"
#include "cdmError.h"
#include "itkCDMImageConversion.h"

#include "itkImage.h"
#include "itkImageFileReader.h"
#include "itkImageFileWriter.h"

#include <algorithm>
#include <filesystem>

namespace cdm
{

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
  Volume volume = itk::CDMConversion::ToVolume(image, image->GetBufferedRegion(), description);
  volume.Dimension = dimension;
  return volume;
}

itk::Image<float, 3>::Pointer
ToImage(const Volume & volume)
{
  return itk::CDMConversion::MakeImage<itk::Image<float, 3>>(volume);
}

namespace
{
template <unsigned int VDimension>
void
WriteImage(const Volume & volume, const std::string & path)
{
  using ImageType = itk::Image<float, VDimension>;
  const auto image = itk::CDMConversion::MakeImage<ImageType>(volume);
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
