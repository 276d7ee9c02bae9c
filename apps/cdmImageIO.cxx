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
#include "itkImageIOFactory.h"
#include "itkMetaImageIOFactory.h"
#include "itkNiftiImageIO.h"
#include "itkNiftiImageIOFactory.h"
#include "itkNrrdImageIOFactory.h"
#include "itkPNGImageIOFactory.h"

#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <mutex>
#include <sstream>
#include <vector>

namespace cdm
{

namespace
{
bool
EndsWith(const std::string & text, const std::string & ending)
{
  return text.size() >= ending.size() && text.compare(text.size() - ending.size(), ending.size(), ending) == 0;
}

template <typename T>
T
FromBytes(const unsigned char * bytes, bool swap)
{
  unsigned char copy[sizeof(T)];
  for (size_t i = 0; i < sizeof(T); ++i)
  {
    copy[i] = bytes[swap ? sizeof(T) - 1 - i : i];
  }
  T value;
  std::memcpy(&value, copy, sizeof(T));
  return value;
}
} // namespace

void
CheckNiftiFileIsComplete(const std::string & path)
{
  const bool compressed = EndsWith(path, ".nii.gz");
  if (!compressed && !EndsWith(path, ".nii"))
  {
    return;
  }
  // The whole (decompressed) stream: its length, and for .gz the end of the stream and its CRC, which ITK's NIfTI
  // reader does not check (it fills what is missing with zeros).
  gzFile file = gzopen(path.c_str(), "rb");
  if (file == nullptr)
  {
    throw InputError("cannot open image '" + path + "'");
  }
  std::vector<unsigned char> header;
  std::vector<unsigned char> buffer(1 << 20);
  uint64_t                   length = 0;
  int                        read = 0;
  while ((read = gzread(file, buffer.data(), static_cast<unsigned>(buffer.size()))) > 0)
  {
    if (header.size() < 540)
    {
      header.insert(header.end(), buffer.begin(), buffer.begin() + std::min<int>(read, 540));
    }
    length += static_cast<uint64_t>(read);
  }
  int               status = Z_OK;
  const char *      reason = gzerror(file, &status);
  const std::string message = reason && *reason ? reason : "unreadable"; // gzclose frees zlib's text
  gzclose(file);
  if (read < 0 || (status != Z_OK && status != Z_STREAM_END))
  {
    throw InputError("image '" + path + "' is damaged: " + message + " (a cut-short or corrupted " +
                     (compressed ? "gzip stream" : "file") + ")");
  }
  if (header.size() < 348)
  {
    throw InputError("image '" + path + "' is cut short: " + std::to_string(length) +
                     " bytes, fewer than a NIfTI header's 348");
  }
  // NIfTI-1 (sizeof_hdr 348) or NIfTI-2 (540), in either byte order.
  const int32_t native = FromBytes<int32_t>(header.data(), false);
  const bool    swap = native != 348 && native != 540;
  const int32_t size = FromBytes<int32_t>(header.data(), swap);
  if (size != 348 && size != 540)
  {
    return; // not a NIfTI header: left to ITK's reader to refuse
  }
  // In doubles: a damaged or crafted header may claim extents and offsets no integer holds (found by fuzzing).
  const bool    two = size == 540;
  double        voxels = 1.0;
  const int64_t dimensions =
    two ? FromBytes<int64_t>(header.data() + 16, swap) : FromBytes<int16_t>(header.data() + 40, swap);
  for (int64_t d = 1; d <= std::min<int64_t>(dimensions, 7); ++d)
  {
    const int64_t extent =
      two ? FromBytes<int64_t>(header.data() + 16 + 8 * d, swap) : FromBytes<int16_t>(header.data() + 40 + 2 * d, swap);
    voxels *= static_cast<double>(std::max<int64_t>(extent, 1));
  }
  const int16_t bitsPerVoxel = FromBytes<int16_t>(header.data() + (two ? 14 : 72), swap);
  const double  offset = two ? static_cast<double>(FromBytes<int64_t>(header.data() + 168, swap))
                             : static_cast<double>(FromBytes<float>(header.data() + 108, swap));
  if (!std::isfinite(offset))
  {
    throw InputError("image '" + path + "' has a damaged NIfTI header: its voxel offset is not a number");
  }
  const double expected =
    std::max(offset, static_cast<double>(size)) + voxels * static_cast<double>(std::max<int16_t>(bitsPerVoxel, 0)) / 8;
  if (static_cast<double>(length) < expected)
  {
    std::ostringstream declared;
    declared << std::fixed << std::setprecision(0) << expected;
    throw InputError("image '" + path + "' is cut short: its header declares " + declared.str() +
                     " bytes of header and voxels, the file holds " + std::to_string(length) +
                     (compressed ? " (decompressed)" : "") + "; expected a complete copy");
  }
}

namespace
{
/** MetaImage headers are text lines `Key = Value` up to ElementDataFile. ITK 5.4.7's MetaIO overflows buffers or
 *  loops through billions of reads on malformed ones (found by fuzzing: a negative or huge NDims, control bytes in a
 *  field), so the header is checked first: printable text, every line a `Key = Value`, NDims from 1 to 16. */
void
CheckMetaImageHeader(const std::string & path)
{
  if (!EndsWith(path, ".mha") && !EndsWith(path, ".mhd"))
  {
    return;
  }
  const auto damaged = [&path](const std::string & problem) {
    return InputError("image '" + path + "' has a damaged MetaImage header: " + problem);
  };
  std::ifstream in(path, std::ios::binary);
  std::string   line;
  for (int lines = 0; std::getline(in, line); ++lines)
  {
    if (lines >= 256)
    {
      throw damaged("no ElementDataFile line among its first 256 lines");
    }
    if (!line.empty() && line.back() == '\r')
    {
      line.pop_back();
    }
    for (const char c : line)
    {
      if ((c < 0x20 || c > 0x7e) && c != '\t')
      {
        throw damaged("line " + std::to_string(lines + 1) + " holds a byte that is not text");
      }
    }
    const size_t equals = line.find('=');
    if (line.find_first_not_of(" \t") == std::string::npos)
    {
      continue;
    }
    if (equals == std::string::npos)
    {
      throw damaged("line " + std::to_string(lines + 1) + " is not 'Key = Value'");
    }
    const size_t start = line.find_first_not_of(" \t");
    if (line.compare(start, 5, "NDims") == 0)
    {
      long long dimensions = -1;
      try
      {
        dimensions = std::stoll(line.substr(equals + 1));
      }
      catch (const std::exception &)
      {
        dimensions = -1;
      }
      if (dimensions < 1 || dimensions > 16)
      {
        throw damaged("NDims is '" + line.substr(equals + 1) + "'; expected a number of dimensions from 1 to 16");
      }
    }
    if (line.compare(start, 15, "ElementDataFile") == 0)
    {
      // A name with '%' is a pattern of slice files followed by first, last and step; MetaIO divides by the step
      // (a missing or zero one crashed it: fuzzing).
      const std::string text = line.substr(equals + 1);
      if (text.find('%') != std::string::npos)
      {
        std::istringstream value(text);
        std::string        name, extra;
        long long          first = 0, last = -1, step = 0;
        if (!(value >> name >> first >> last >> step) || (value >> extra) || step <= 0 || last < first)
        {
          throw damaged("ElementDataFile '" + text + "' is a file pattern; expected 'pattern first last step'");
        }
      }
      return; // the voxels follow
    }
  }
}
} // namespace

void
RegisterImageIOFactories()
{
  static std::once_flag once;
  std::call_once(once, []() {
    if (!itk::ObjectFactoryBase::CreateAllInstance("itkImageIOBase").empty())
    {
      return;
    }
    itk::NiftiImageIOFactory::RegisterOneFactory();
    itk::NrrdImageIOFactory::RegisterOneFactory();
    itk::MetaImageIOFactory::RegisterOneFactory();
    itk::PNGImageIOFactory::RegisterOneFactory();
  });
}

itk::ImageIOBase::Pointer
CheckImageFile(const std::string & path)
{
  RegisterImageIOFactories();
  if (!std::filesystem::is_regular_file(path))
  {
    throw InputError("image file '" + path + "' does not exist");
  }
  CheckNiftiFileIsComplete(path);
  CheckMetaImageHeader(path);
  // What the file holds, before reading it: one scalar value per voxel, at most three dimensions.
  itk::ImageIOBase::Pointer io =
    itk::ImageIOFactory::CreateImageIO(path.c_str(), itk::CommonEnums::IOFileMode::ReadMode);
  if (io)
  {
    io->SetFileName(path);
    try
    {
      io->ReadImageInformation();
    }
    catch (const itk::ExceptionObject & e)
    {
      throw InputError("cannot read image '" + path + "': " + std::string(e.GetDescription()));
    }
    catch (const std::exception & e) // ITK's readers also let standard exceptions through (fuzzing found one)
    {
      throw InputError("cannot read image '" + path + "': " + std::string(e.what()));
    }
    // Fewer than two dimensions is no image here, and ITK's MetaImage reader overflows its buffer on `NDims = 0`
    // (ITK 5.4.7, found by fuzzing): refused before any reader reads voxels.
    if (io->GetNumberOfDimensions() < 2)
    {
      throw InputError("image '" + path + "' has " + std::to_string(io->GetNumberOfDimensions()) +
                       " dimension(s); expected a 2D or 3D scalar image");
    }
    for (unsigned int d = 3; d < io->GetNumberOfDimensions(); ++d)
    {
      if (io->GetDimensions(d) > 1)
      {
        throw InputError("image '" + path + "' has " + std::to_string(io->GetNumberOfDimensions()) + " dimensions (" +
                         std::to_string(io->GetDimensions(d)) + " along axis " + std::to_string(d) +
                         "); expected a 2D or 3D scalar image (one volume)");
      }
    }
    if (io->GetNumberOfComponents() != 1 || io->GetPixelType() != itk::CommonEnums::IOPixel::SCALAR)
    {
      throw InputError("image '" + path + "' holds " + itk::ImageIOBase::GetPixelTypeAsString(io->GetPixelType()) +
                       " pixels of " + std::to_string(io->GetNumberOfComponents()) +
                       " component(s); expected one real scalar value per voxel");
    }
    // A header can claim anything: a grid no memory holds, or a spacing no grid has. Refused before ITK allocates.
    double voxels = 1.0;
    for (unsigned int d = 0; d < std::min(3u, io->GetNumberOfDimensions()); ++d)
    {
      if (io->GetDimensions(d) < 1) // ITK's MetaImage reader overflows its buffer on a zero extent (fuzzing)
      {
        throw InputError("image '" + path + "' has no voxels along axis " + std::to_string(d) +
                         "; expected an extent of at least 1");
      }
      voxels *= static_cast<double>(io->GetDimensions(d));
      const double spacing = io->GetSpacing(d);
      if (!std::isfinite(spacing) || spacing <= 0.0)
      {
        throw InputError("image '" + path + "' has spacing " + std::to_string(spacing) + " along axis " +
                         std::to_string(d) + "; expected a positive voxel size");
      }
    }
    const double memoryBytes =
      static_cast<double>(sysconf(_SC_PHYS_PAGES)) * static_cast<double>(sysconf(_SC_PAGESIZE));
    if (voxels * sizeof(float) > memoryBytes)
    {
      throw InputError("image '" + path + "' declares " + std::to_string(static_cast<uint64_t>(voxels)) +
                       " voxels, more than this machine's memory holds as float (" +
                       std::to_string(static_cast<uint64_t>(memoryBytes / 1e9)) + " GB); a damaged or crafted header?");
    }
    // A single-file image holds its voxels after its header: one that declares more data than the file could hold
    // (raw NIfTI: its size; gzipped NIfTI, MetaImage, NRRD, which may compress: gzip shrinks data to no less than
    // about 1/1032) is damaged or crafted, and is refused before ITK allocates what it declares. Found by fuzzing:
    // 300-byte files had ITK allocate gigabytes (for NIfTI, where the NIfTI library read the header in the other byte
    // order than CheckNiftiFileIsComplete).
    const double fileBytes = static_cast<double>(std::filesystem::file_size(path));
    const double declaredBytes = voxels * static_cast<double>(io->GetComponentSize());
    const double densest = EndsWith(path, ".nii")                                                             ? 1.0
                           : (EndsWith(path, ".nii.gz") || EndsWith(path, ".mha") || EndsWith(path, ".nrrd")) ? 1100.0
                                                                                                              : 0.0;
    if (densest > 0.0 && declaredBytes > densest * fileBytes)
    {
      throw InputError("image '" + path + "' declares " + std::to_string(static_cast<uint64_t>(voxels)) +
                       " voxels but the file holds " + std::to_string(static_cast<uint64_t>(fileBytes)) +
                       " bytes, too few for them; expected a complete file");
    }
  }
  return io;
}

void
CheckOutputImageFile(const std::string & path, const std::string & option)
{
  CheckOutputFile(path, option);
  RegisterImageIOFactories();
  if (!itk::ImageIOFactory::CreateImageIO(path.c_str(), itk::CommonEnums::IOFileMode::WriteMode))
  {
    throw InputError(option + " '" + path +
                     "': ITK writes no image format of that name; expected .nii.gz, .nii, .mha or .nrrd (or .png "
                     "for a single slice)");
  }
}

bool
ReadsInPieces(itk::ImageIOBase * io)
{
  // ITK's reader reads what GenerateStreamableReadRegionFromRequestedRegion returns. MetaImage says whether that is the
  // requested region through CanStreamRead() (not when compressed); NIfTI always returns it and reads it with
  // niftilib's subregion read, but reports CanStreamRead() false (ITK 5.2-5.4; measured: a 10-plane region of a
  // 240x240x155 .nii.gz read in 14 MB). Its vector images are reordered over the whole file: scalar only.
  if (io == nullptr)
  {
    return false;
  }
  return io->CanStreamRead() || (dynamic_cast<itk::NiftiImageIO *>(io) != nullptr && io->GetNumberOfComponents() == 1);
}

Volume
ReadVolume(const std::string & path)
{
  CheckImageFile(path);
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
  catch (const std::exception & e)
  {
    throw InputError("cannot read image '" + path + "': " + std::string(e.what()));
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
template <unsigned int VDimension, typename TPixel>
void
WriteImage(const Volume & volume, const std::string & path)
{
  using ImageType = itk::Image<TPixel, VDimension>;
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

namespace
{
template <typename TPixel>
void
WriteVolumeAs(const Volume & volume, const std::string & path)
{
  RegisterImageIOFactories();
  if (volume.StoredVoxels() != volume.NumberOfVoxels())
  {
    throw InputError("cannot write '" + path + "': the volume holds no voxel data");
  }
  if (volume.Dimension == 2 && volume.Size[2] == 1)
  {
    WriteImage<2, TPixel>(volume, path);
  }
  else
  {
    WriteImage<3, TPixel>(volume, path);
  }
}
} // namespace

void
WriteVolume(const Volume & volume, const std::string & path)
{
  WriteVolumeAs<float>(volume, path);
}

void
WriteLabelVolume(const Volume & labels, const std::string & path)
{
  for (const float * v = labels.Data(); v != labels.Data() + labels.StoredVoxels(); ++v)
  {
    if (!(*v >= 0.0f && *v <= 255.0f) || *v != std::round(*v))
    {
      throw InputError("cannot write '" + path + "' as labels: it holds the value " + std::to_string(*v) +
                       "; expected whole numbers 0 to 255");
    }
  }
  WriteVolumeAs<unsigned char>(labels, path);
}

} // namespace cdm
