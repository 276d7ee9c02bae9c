/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
// libFuzzer target: arbitrary bytes as a `.cdm` model file (header length, JSON header, offsets, dtypes, shapes,
// checksum, the model configuration, the tensors against the networks). Model::Load must refuse a bad file with
// cdm::ModelFileError (or another cdm::Error naming it), never crash, hang or allocate what the file does not hold.
// scripts/fuzz.sh builds and runs it (ASan + UBSan); test/fuzz/corpus/model-file holds its seeds.
#include "cdmError.h"
#include "cdmModel.h"

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

extern "C" int
LLVMFuzzerTestOneInput(const uint8_t * data, size_t size)
{
  static const std::string path = "/tmp/cdm-fuzz-model-" + std::to_string(::getpid()) + ".cdm";
  if (FILE * file = std::fopen(path.c_str(), "wb"))
  {
    std::fwrite(data, 1, size, file);
    std::fclose(file);
  }
  try
  {
    const cdm::Model model = cdm::Model::Load(path, "cpu");
    (void)model.NumberOfParameters();
  }
  catch (const cdm::Error &)
  {
    // refused, as a bad file must be
  }
  return 0;
}
