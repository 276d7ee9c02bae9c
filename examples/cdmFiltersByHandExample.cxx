/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
// The three CDM filters wired by hand:
//  - the MRM encoder gives the representation z of a case whose t1c WAS acquired (e.g. to inspect or compare z);
//  - for a case whose t1c is missing, the MDN sampler gives z_hat from the sources, and the C-UNet synthesizes t1c
//    guided by it; with several samples the synthesizer's second output is the voxel-wise uncertainty.
//
//   cdmFiltersByHandExample MODEL.cdm KNOWN_T1C T1N T2W T2F OUTPUT UNCERTAINTY [SAMPLES]
#include "itkCDMDiffusionSamplerImageFilter.h"
#include "itkCDMModalityEncoderImageFilter.h"
#include "itkCDMSynthesisImageFilter.h"
#include "itkImageFileReader.h"
#include "itkImageFileWriter.h"

#include <cmath>
#include <iostream>

int
main(int argc, char * argv[])
{
  // A program's own choice: glibc's malloc keeps the networks' per-call memory in the heap instead of mapping it
  // afresh at every call (faster, and timings that do not depend on the process's history; cdmModel.h).
  cdm::KeepWorkingMemoryInTheHeap();
  if (argc < 8)
  {
    std::cerr << "usage: " << argv[0] << " MODEL.cdm KNOWN_T1C T1N T2W T2F OUTPUT UNCERTAINTY [SAMPLES]" << std::endl;
    return 2;
  }
  using ImageType = itk::Image<float, 3>;
  try
  {
    auto model = itk::CDMModel::New();
    model->Load(argv[1], "auto");

    // z of a known target.
    auto encoder = itk::CDMModalityEncoderImageFilter<ImageType>::New();
    encoder->SetModel(model);
    encoder->SetInput(itk::ReadImage<ImageType>(argv[2]));
    encoder->Update();

    // z_hat from the sources, then the synthesis.
    auto         sampler = itk::CDMDiffusionSamplerImageFilter<ImageType>::New();
    auto         synthesis = itk::CDMSynthesisImageFilter<ImageType>::New();
    const char * modalities[] = { "t1n", "t2w", "t2f" };
    sampler->SetModel(model);
    synthesis->SetModel(model);
    for (int i = 0; i < 3; ++i)
    {
      const auto image = itk::ReadImage<ImageType>(argv[3 + i]);
      sampler->SetSource(modalities[i], image);
      synthesis->SetSource(modalities[i], image);
    }
    const unsigned int samples = argc > 8 ? static_cast<unsigned int>(std::stoi(argv[8])) : 4;
    sampler->SetNumberOfSamples(samples);
    sampler->SetOutputSamples(true);
    sampler->SetEta(1.0);
    sampler->SetSeed(1);
    synthesis->SetRepresentation(sampler->GetOutput());
    itk::WriteImage(synthesis->GetOutput(), argv[6]);
    itk::WriteImage(synthesis->GetUncertaintyOutput(), argv[7]);

    // How far is z_hat (sample mean, first cell) from the z of the acquired t1c?
    const auto *       z = encoder->GetOutput();
    const auto *       zHat = sampler->GetOutput();
    const unsigned int d = z->GetNumberOfComponentsPerPixel();
    double             distance = 0.0;
    for (unsigned int i = 0; i < d; ++i)
    {
      double mean = 0.0;
      for (unsigned int k = 0; k < samples; ++k)
      {
        mean += zHat->GetBufferPointer()[k * d + i] / samples;
      }
      distance += std::pow(mean - z->GetBufferPointer()[i], 2);
    }
    std::cout << "|z_hat - z| in the first cell: " << std::sqrt(distance) << " (" << d << " components)" << std::endl;
  }
  catch (const itk::ExceptionObject & error)
  {
    std::cerr << "cdmFiltersByHandExample: " << error.GetDescription() << std::endl;
    return 1;
  }
  std::cout << "wrote " << argv[6] << " and " << argv[7] << std::endl;
  return 0;
}
