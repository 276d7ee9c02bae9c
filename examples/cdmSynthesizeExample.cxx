/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
// Synthesize t1c from t1n, t2w and t2f with the composite filter, in several stream divisions.
//
//   cdmSynthesizeExample MODEL.cdm T1N.nii.gz T2W.nii.gz T2F.nii.gz OUTPUT.nii.gz [STREAM_DIVISIONS] [DEVICE]
#include "itkCDMImageFilter.h"
#include "itkImageFileReader.h"
#include "itkImageFileWriter.h"
#include "itkStreamingImageFilter.h"

#include <iostream>

int
main(int argc, char * argv[])
{
  // A program's own choice: glibc's malloc keeps the networks' per-call memory in the heap instead of mapping it
  // afresh at every call (faster, and timings that do not depend on the process's history; cdmModel.h).
  cdm::KeepWorkingMemoryInTheHeap();
  if (argc < 6)
  {
    std::cerr << "usage: " << argv[0] << " MODEL.cdm T1N T2W T2F OUTPUT [STREAM_DIVISIONS] [DEVICE]" << std::endl;
    return 2;
  }
  using ImageType = itk::Image<float, 3>;
  try
  {
    auto model = itk::CDMModel::New();
    model->Load(argv[1], argc > 7 ? argv[7] : "auto");

    auto cdmFilter = itk::CDMImageFilter<ImageType>::New();
    cdmFilter->SetModel(model);
    const char * modalities[] = { "t1n", "t2w", "t2f" };
    for (int i = 0; i < 3; ++i)
    {
      cdmFilter->SetSource(modalities[i], itk::ReadImage<ImageType>(argv[2 + i]));
    }

    // The streaming filter asks for the output piece by piece (the C-UNet computes only each requested piece) and
    // gathers it: ITK writes NIfTI whole, and its writer would ask for the whole image in one request whatever its
    // stream divisions. (An uncompressed .mha writer streams by itself: cdmStreamingExample's files pipeline.)
    auto streamer = itk::StreamingImageFilter<ImageType, ImageType>::New();
    streamer->SetInput(cdmFilter->GetOutput());
    streamer->SetNumberOfStreamDivisions(argc > 6 ? static_cast<unsigned int>(std::stoi(argv[6])) : 4);
    itk::WriteImage(streamer->GetOutput(), argv[5], true);
  }
  catch (const itk::ExceptionObject & error)
  {
    std::cerr << "cdmSynthesizeExample: " << error.GetDescription() << std::endl;
    return 1;
  }
  std::cout << "wrote " << argv[5] << std::endl;
  return 0;
}
