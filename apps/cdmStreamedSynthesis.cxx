/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#include "cdmStreamedSynthesis.h"
#include "cdmAtomicFile.h"
#include "cdmError.h"
#include "cdmImageIO.h"

#include "itkCDMImageFilter.h"
#include "itkImageFileReader.h"
#include "itkImageFileWriter.h"
#include "itkImageIOFactory.h"
#include "itkStreamingImageFilter.h"

#include <chrono>

namespace cdm
{

namespace
{
using ImageType = itk::Image<float, 3>;
using Clock = std::chrono::steady_clock;

double
SecondsSince(Clock::time_point start)
{
  return std::chrono::duration<double>(Clock::now() - start).count();
}

/** Whether ITK writes `path` piece by piece: only uncompressed MetaImage does in ITK 5.2-5.4. */
bool
WritesPieces(const std::string & path)
{
  itk::ImageIOBase::Pointer io =
    itk::ImageIOFactory::CreateImageIO(path.c_str(), itk::CommonEnums::IOFileMode::WriteMode);
  if (!io)
  {
    return false;
  }
  io->SetUseCompression(false);
  return io->CanStreamWrite();
}

/** An ITK exception's description without the "ITK ERROR: ClassName(0x...): " that itkExceptionMacro puts first. */
std::string
WithoutITKPrefix(const std::string & description)
{
  const std::string prefix = "ITK ERROR: ";
  const size_t      end = description.find("): ");
  return description.compare(0, prefix.size(), prefix) == 0 && end != std::string::npos ? description.substr(end + 3)
                                                                                        : description;
}

/** Writes `image` in `divisions` pieces, atomically. A format ITK writes whole (compressed, or not MetaImage) asks its
 *  input for the whole image at once, which would synthesize it in one piece from whole sources: the pieces are
 *  gathered first (itk::StreamingImageFilter), so that only the output is held whole. */
void
WriteInPieces(ImageType * image, const std::string & path, unsigned int divisions, bool inPieces)
{
  WriteAtomically(path, [&](const std::string & temporary) {
    auto writer = itk::ImageFileWriter<ImageType>::New();
    writer->SetFileName(temporary);
    if (inPieces)
    {
      writer->SetInput(image);
      writer->SetNumberOfStreamDivisions(divisions);
      writer->SetUseCompression(false);
      writer->Update();
      return;
    }
    auto gather = itk::StreamingImageFilter<ImageType, ImageType>::New();
    gather->SetInput(image);
    gather->SetNumberOfStreamDivisions(divisions);
    writer->SetInput(gather->GetOutput());
    writer->SetUseCompression(true);
    writer->Update();
  });
}
} // namespace

bool
IsVolumeFile(const std::string & path)
{
  RegisterImageIOFactories();
  itk::ImageIOBase::Pointer io =
    itk::ImageIOFactory::CreateImageIO(path.c_str(), itk::CommonEnums::IOFileMode::ReadMode);
  if (!io)
  {
    return false;
  }
  io->SetFileName(path);
  try
  {
    io->ReadImageInformation();
  }
  catch (const std::exception &) // itk::ExceptionObject included: the reader of the whole image will say why
  {
    return false;
  }
  return io->GetNumberOfDimensions() >= 3 && io->GetDimensions(2) > 1;
}

StreamedSynthesisReport
SynthesizeInPieces(const StreamedSynthesisRequest &                         request,
                   const std::function<void(double, const std::string &)> & progress)
{
  if (request.Divisions < 1)
  {
    throw InputError("--stream-divisions " + std::to_string(request.Divisions) + ": expected at least 1 piece");
  }
  if (request.Engine == nullptr)
  {
    throw std::logic_error("SynthesizeInPieces: no model given");
  }
  StreamedSynthesisReport report;
  const Clock::time_point start = Clock::now();
  auto                    model = itk::CDMModel::New();
  model->Adopt(*request.Engine, request.ModelPath);
  report.DeviceName = model->GetModel().DeviceName();
  report.ModelKind = model->GetModel().Config().ModelKind;
  SourceVolumes named; // the names alone say which modality is synthesized (and whether the model can)
  for (const auto & source : request.Sources)
  {
    named[source.first];
  }
  report.Target = model->GetModel().ResolveTarget(named, request.Options.Target);

  auto filter = itk::CDMImageFilter<ImageType>::New();
  filter->SetModel(model);
  std::vector<itk::ImageFileReader<ImageType>::Pointer> readers; // a filter's input does not keep its reader alive
  for (const auto & [name, path] : request.Sources)
  {
    // The header and, for NIfTI, that the file is complete, before ITK reads any voxel.
    const itk::ImageIOBase::Pointer header = CheckImageFile(path);
    if (!ReadsInPieces(header))
    {
      report.WholeFiles.push_back(path);
    }
    readers.push_back(itk::ImageFileReader<ImageType>::New());
    readers.back()->SetFileName(path);
    filter->SetSource(name, readers.back()->GetOutput());
  }
  const SynthesisOptions & options = request.Options;
  filter->SetNumberOfSamples(static_cast<unsigned int>(options.Samples));
  filter->SetSeed(options.Seed);
  filter->SetEta(options.Eta);
  ImageType::SizeType tile;
  for (unsigned int d = 0; d < 3; ++d)
  {
    tile[d] = static_cast<itk::SizeValueType>(options.TileSize[d]);
  }
  filter->SetTileSize(tile);
  filter->SetVoxelsPerCall(static_cast<itk::SizeValueType>(options.VoxelsPerCall));
  filter->SetVoxelsPerRead(static_cast<itk::SizeValueType>(options.VoxelsPerRead));
  filter->SetPrecision(PrecisionName(options.NetworkPrecision));
  filter->SetTargetModality(options.Target);
  const bool outputInPieces = WritesPieces(request.Output);
  const bool uncertaintyInPieces = !request.Uncertainty.empty() && WritesPieces(request.Uncertainty);
  if (!outputInPieces)
  {
    report.WholeFiles.push_back(request.Output);
  }
  if (!request.Uncertainty.empty() && !uncertaintyInPieces)
  {
    report.WholeFiles.push_back(request.Uncertainty);
  }

  // Progress: the filter's own (sampling, then its piece), spread over the pieces of every written image.
  const unsigned int images = request.Uncertainty.empty() ? 1 : 2;
  Clock::time_point  samplingStart;
  filter->GetSampler()->AddObserver(itk::StartEvent(), [&](const itk::EventObject &) {
    samplingStart = Clock::now();
    ++report.SamplerRuns;
  });
  filter->GetSampler()->AddObserver(
    itk::EndEvent(), [&](const itk::EventObject &) { report.SamplingSeconds += SecondsSince(samplingStart); });
  filter->AddObserver(itk::StartEvent(), [&](const itk::EventObject &) { ++report.Pieces; });
  filter->AddObserver(itk::ProgressEvent(), [&](const itk::EventObject &) {
    const double done = report.Pieces > 0 ? report.Pieces - 1 : 0;
    const double pieces = std::max<double>(done + 1, request.Divisions * images);
    progress((done + filter->GetProgress()) / pieces,
             "piece " + std::to_string(report.Pieces) + "/" + std::to_string(request.Divisions * images));
  });

  try
  {
    WriteInPieces(filter->GetOutput(), request.Output, request.Divisions, outputInPieces);
    if (!request.Uncertainty.empty())
    {
      WriteInPieces(filter->GetUncertaintyOutput(), request.Uncertainty, request.Divisions, uncertaintyInPieces);
    }
  }
  catch (const itk::ExceptionObject & e)
  {
    // The filters name sources by modality; the files are the user's names for them.
    std::string files;
    for (const auto & [name, path] : request.Sources)
    {
      files += (files.empty() ? "" : ", ") + name + "=" + path;
    }
    throw InputError("cannot synthesize '" + request.Output + "' in " + std::to_string(request.Divisions) +
                     " pieces: " + WithoutITKPrefix(e.GetDescription()) + " (sources: " + files + ")");
  }
  const ImageType::SizeType size = filter->GetOutput()->GetLargestPossibleRegion().GetSize();
  for (unsigned int d = 0; d < 3; ++d)
  {
    report.Size[d] = static_cast<int64_t>(size[d]);
  }
  report.TotalSeconds = SecondsSince(start);
  return report;
}

} // namespace cdm
