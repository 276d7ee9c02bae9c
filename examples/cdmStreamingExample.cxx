/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
// Synthesize t1c in stream divisions and report what it cost: updates of the filter, runs of the sampler, wall time
// and peak memory. Two pipelines:
//   gather (default): itk::ReadImage holds each source whole, itk::StreamingImageFilter gathers the pieces (the output
//     whole in memory); what ITK's pipeline streams, with the sources and the output whole.
//   files: itk::ImageFileReader per source -> itk::CDMImageFilter -> itk::ImageFileWriter in stream divisions; with
//     uncompressed MetaImage (.mha) files, which ITK reads and writes piece by piece, no whole image is ever held (the
//     sampler pulls the sources window by window, each piece reads only its sources and writes only its voxels).
// bench/memory.sh runs it once per division count, each in its own process, so that each peak is its own.
//
//   cdmStreamingExample MODEL.cdm T1N T2W T2F OUTPUT.mha [STREAM_DIVISIONS] [DEVICE] [TILE_EDGE] [gather|files]
//
// Prints one JSON line: {"pipeline": P, "divisions": D, "updates": U, "sampler_runs": S, "continued_pieces": C,
// "seconds": T, "peak_rss_mb": M, "base_rss_mb": B}, where C counts the pieces that carried a 3D C-UNet on from the one
// before, and B is the resident memory once the libraries and the model are loaded (what any process using the model
// holds before it reads an image), so M - B is what the pipeline itself costs.
#include "itkCDMImageFilter.h"
#include "itkImageFileReader.h"
#include "itkImageFileWriter.h"
#include "itkStreamingImageFilter.h"

#include <sys/resource.h>

#include <unistd.h>

#include <chrono>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

namespace
{
/** Peak resident memory of this process so far, in MB (Linux reports ru_maxrss in KiB). */
double
PeakResidentMegabytes()
{
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;
}

double
CurrentResidentMegabytes()
{
  std::ifstream statm("/proc/self/statm");
  long          pages = 0;
  long          resident = 0;
  statm >> pages >> resident;
  return static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE)) / (1024.0 * 1024.0);
}
} // namespace

int
main(int argc, char * argv[])
{
  // A program's own choice: glibc's malloc keeps the networks' per-call memory in the heap instead of mapping it
  // afresh at every call (faster, and timings that do not depend on the process's history; cdmModel.h).
  cdm::KeepWorkingMemoryInTheHeap();
  if (argc < 6)
  {
    std::cerr << "usage: " << argv[0]
              << " MODEL.cdm T1N T2W T2F OUTPUT.mha [STREAM_DIVISIONS] [DEVICE] [TILE_EDGE] [gather|files]"
              << std::endl;
    return 2;
  }
  using ImageType = itk::Image<float, 3>;
  const unsigned int divisions = argc > 6 ? static_cast<unsigned int>(std::stoi(argv[6])) : 8;
  try
  {
    auto model = itk::CDMModel::New();
    model->Load(argv[1], argc > 7 ? argv[7] : "auto");
    const double base = CurrentResidentMegabytes();

    const std::string pipeline = argc > 9 ? argv[9] : "gather";
    if (pipeline != "gather" && pipeline != "files")
    {
      std::cerr << "cdmStreamingExample: pipeline '" << pipeline << "' is unknown; expected gather or files"
                << std::endl;
      return 2;
    }
    auto cdmFilter = itk::CDMImageFilter<ImageType>::New();
    cdmFilter->SetModel(model);
    const char *                                          modalities[] = { "t1n", "t2w", "t2f" };
    std::vector<itk::ImageFileReader<ImageType>::Pointer> readers; // a filter's input does not keep its source alive
    for (int i = 0; i < 3; ++i)
    {
      if (pipeline == "files")
      {
        readers.push_back(itk::ImageFileReader<ImageType>::New());
        readers.back()->SetFileName(argv[2 + i]);
        cdmFilter->SetSource(modalities[i], readers.back()->GetOutput());
      }
      else
      {
        cdmFilter->SetSource(modalities[i], itk::ReadImage<ImageType>(argv[2 + i]));
      }
    }
    if (argc > 8 && std::stoul(argv[8]) > 0)
    {
      itk::Size<3> tile;
      tile.Fill(static_cast<itk::SizeValueType>(std::stoul(argv[8])));
      cdmFilter->SetTileSize(tile);
    }

    // Count the filter's updates (one per piece) and the sampler's runs (one per change of sources, model or seed).
    unsigned int updates = 0;
    unsigned int samplerRuns = 0;
    cdmFilter->AddObserver(itk::StartEvent(), [&updates](const itk::EventObject &) { ++updates; });
    cdmFilter->GetSampler()->AddObserver(itk::StartEvent(),
                                         [&samplerRuns](const itk::EventObject &) { ++samplerRuns; });

    const auto start = std::chrono::steady_clock::now();
    if (pipeline == "files")
    {
      auto writer = itk::ImageFileWriter<ImageType>::New();
      writer->SetInput(cdmFilter->GetOutput());
      writer->SetFileName(argv[5]);
      writer->SetNumberOfStreamDivisions(divisions);
      writer->Update();
    }
    else
    {
      auto streamer = itk::StreamingImageFilter<ImageType, ImageType>::New();
      streamer->SetInput(cdmFilter->GetOutput());
      streamer->SetNumberOfStreamDivisions(divisions);
      streamer->Update();
      itk::WriteImage(streamer->GetOutput(), argv[5]);
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double peak = PeakResidentMegabytes();
    std::cout << "{\"pipeline\": \"" << pipeline << "\", \"divisions\": " << divisions << ", \"updates\": " << updates
              << ", \"sampler_runs\": " << samplerRuns << ", \"continued_pieces\": " << cdmFilter->GetContinuedPieces()
              << ", \"seconds\": " << seconds << ", \"peak_rss_mb\": " << peak << ", \"base_rss_mb\": " << base << "}"
              << std::endl;
  }
  catch (const itk::ExceptionObject & error)
  {
    std::cerr << "cdmStreamingExample: " << error.GetDescription() << std::endl;
    return 1;
  }
  return 0;
}
