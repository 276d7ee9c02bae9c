/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
// libFuzzer target: arbitrary bytes as an image file, read as every face of itk-cdm reads one (cdm::ReadVolume: the
// command line, the training loader and, through it, Python's file paths). The first byte picks the format (NIfTI,
// gzipped NIfTI, MetaImage, NRRD) so that one corpus covers the headers: zero or negative spacing, huge grids, 4D,
// complex or RGB pixels, files shorter than their headers. A bad file must be refused with cdm::InputError naming
// it, never crash, hang or allocate a grid the file only claims. scripts/fuzz.sh builds and runs it.
#include "cdmError.h"
#include "cdmImageIO.h"

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

extern "C" int
LLVMFuzzerTestOneInput(const uint8_t * data, size_t size)
{
  if (size < 1)
  {
    return 0;
  }
  static const char * const extensions[] = { ".nii", ".nii.gz", ".mha", ".nrrd" };
  const std::string         path = "/tmp/cdm-fuzz-image-" + std::to_string(::getpid()) + extensions[data[0] % 4];
  if (FILE * file = std::fopen(path.c_str(), "wb"))
  {
    std::fwrite(data + 1, 1, size - 1, file);
    std::fclose(file);
  }
  try
  {
    const cdm::Volume volume = cdm::ReadVolume(path);
    (void)volume.NumberOfVoxels();
  }
  catch (const cdm::Error &)
  {
    // refused, as a bad file must be
  }
  std::remove(path.c_str());
  return 0;
}
