/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#include "cdmStreamedSynthesis.h"
#include "cdmAtomicFile.h"
#include "cdmError.h"
#include "cdmImageIO.h"

#include "itkCDMImageFilter.h"
#include "itkImageAlgorithm.h"
#include "itkImageFileReader.h"
#include "itkImageFileWriter.h"
#include "itkImageIOFactory.h"
#include "itkImageIORegion.h"
#include "itkImageRegionSplitterSlowDimension.h"

#include <chrono>
#include <utility>

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

/** Where one output goes while the pieces are made. A file ITK writes in pieces (uncompressed MetaImage) gets each
 *  piece written in place as it is made; any other (compressed, NIfTI, NRRD: ITK writes them whole, and its writer
 *  would ask for the whole image in one request) is gathered in memory and written once every piece is made. */
class PieceSink
{
public:
  PieceSink(std::string path, bool inPieces)
      : m_Path(std::move(path))
      , m_InPieces(inPieces)
  {}

  /** Takes `piece` of `output`, which the filter has just made. */
  void
  Add(ImageType * output, const ImageType::RegionType & piece)
  {
    const ImageType::RegionType & largest = output->GetLargestPossibleRegion();
    if (m_InPieces)
    {
      // The writer finds the filter up to date for this region: it writes what the update made.
      auto writer = itk::ImageFileWriter<ImageType>::New();
      writer->SetInput(output);
      writer->SetFileName(m_Path);
      writer->SetUseCompression(false);
      itk::ImageIORegion region(ImageType::ImageDimension);
      itk::ImageIORegionAdaptor<ImageType::ImageDimension>::Convert(piece, region, largest.GetIndex());
      writer->SetIORegion(region);
      writer->Update();
      return;
    }
    if (!m_Whole)
    {
      m_Whole = ImageType::New();
      m_Whole->CopyInformation(output);
      m_Whole->SetRegions(largest);
      m_Whole->Allocate();
    }
    itk::ImageAlgorithm::Copy(output, m_Whole.GetPointer(), piece, piece);
  }

  /** Writes a gathered image (compressed where the format can be). */
  void
  Finish()
  {
    if (m_Whole)
    {
      auto writer = itk::ImageFileWriter<ImageType>::New();
      writer->SetInput(m_Whole);
      writer->SetFileName(m_Path);
      writer->SetUseCompression(true);
      writer->Update();
    }
  }

private:
  std::string        m_Path;
  bool               m_InPieces;
  ImageType::Pointer m_Whole;
};

/** Updates `filter` for each of `divisions` pieces along the slowest axis (as ITK's streaming writers split) and hands
 *  each piece of the image, and of the uncertainty when `uncertainty` is given, to its sink: one synthesis for both
 *  images (two writers would each pull their own pieces, synthesizing the volume twice). */
void
SynthesizeEachPiece(itk::CDMImageFilter<ImageType> * filter,
                    unsigned int                     divisions,
                    PieceSink &                      image,
                    PieceSink *                      uncertainty)
{
  filter->UpdateOutputInformation();
  const ImageType::RegionType largest = filter->GetOutput()->GetLargestPossibleRegion();
  auto                        splitter = itk::ImageRegionSplitterSlowDimension::New();
  const unsigned int          count = splitter->GetNumberOfSplits(largest, divisions);
  for (unsigned int i = 0; i < count; ++i)
  {
    ImageType::RegionType piece = largest;
    splitter->GetSplit(i, count, piece);
    filter->GetOutput()->SetRequestedRegion(piece);
    filter->GetOutput()->PropagateRequestedRegion();
    filter->GetOutput()->UpdateOutputData();
    image.Add(filter->GetOutput(), piece);
    if (uncertainty != nullptr)
    {
      uncertainty->Add(filter->GetUncertaintyOutput(), piece);
    }
  }
  image.Finish();
  if (uncertainty != nullptr)
  {
    uncertainty->Finish();
  }
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

  // Progress: the filter's own (sampling, then its piece), spread over the pieces.
  Clock::time_point samplingStart;
  filter->GetSampler()->AddObserver(itk::StartEvent(), [&](const itk::EventObject &) {
    samplingStart = Clock::now();
    ++report.SamplerRuns;
  });
  filter->GetSampler()->AddObserver(
    itk::EndEvent(), [&](const itk::EventObject &) { report.SamplingSeconds += SecondsSince(samplingStart); });
  filter->AddObserver(itk::StartEvent(), [&](const itk::EventObject &) { ++report.Pieces; });
  filter->AddObserver(itk::ProgressEvent(), [&](const itk::EventObject &) {
    const double done = report.Pieces > 0 ? report.Pieces - 1 : 0;
    const double pieces = std::max<double>(done + 1, request.Divisions);
    progress((done + filter->GetProgress()) / pieces,
             "piece " + std::to_string(report.Pieces) + "/" + std::to_string(request.Divisions));
  });

  try
  {
    // Each file under a temporary name until every piece is in it (the uncertainty is renamed first).
    WriteAtomically(request.Output, [&](const std::string & outputTemporary) {
      PieceSink image(outputTemporary, outputInPieces);
      if (request.Uncertainty.empty())
      {
        SynthesizeEachPiece(filter, request.Divisions, image, nullptr);
        return;
      }
      WriteAtomically(request.Uncertainty, [&](const std::string & uncertaintyTemporary) {
        PieceSink uncertainty(uncertaintyTemporary, uncertaintyInPieces);
        SynthesizeEachPiece(filter, request.Divisions, image, &uncertainty);
      });
    });
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
