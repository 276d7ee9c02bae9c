/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
// The ITK filters in real ITK pipelines: streaming, equality with the command line and the core engine, refusals.
#include "cdmImageIO.h"
#include "cdmTestData.h"
#include "cdmTrainer.h"
#include "itkCDMImageFilter.h"
#include "itkCDMModalityEncoderImageFilter.h"

#include "itkCastImageFilter.h"
#include "itkCommand.h"
#include "itkImageFileReader.h"
#include "itkImageFileWriter.h"
#include "itkImageRegionConstIterator.h"
#include "itkImageRegionIterator.h"
#include "itkPipelineMonitorImageFilter.h"
#include "itkRescaleIntensityImageFilter.h"
#include "itkStreamingImageFilter.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>

namespace
{
namespace fs = std::filesystem;
using Image3 = itk::Image<float, 3>;
using Image2 = itk::Image<float, 2>;

using itk::CDMConversion::MakeImage;

template <typename TImage>
std::vector<float>
Values(const TImage * image)
{
  std::vector<float> values;
  for (itk::ImageRegionConstIterator<TImage> it(image, image->GetBufferedRegion()); !it.IsAtEnd(); ++it)
  {
    values.push_back(static_cast<float>(it.Get()));
  }
  return values;
}

double
RelativeDifference(const std::vector<float> & a, const std::vector<float> & b)
{
  EXPECT_EQ(a.size(), b.size());
  double difference = 0.0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i)
  {
    difference = std::max(difference, static_cast<double>(std::abs(a[i] - b[i])));
  }
  const auto [low, high] = std::minmax_element(a.begin(), a.end());
  return difference / std::max(1e-12, static_cast<double>(*high - *low));
}

/** Model files shared by the tests: untrained (seeded) tiny models are enough to test the plumbing. */
class CDMFilters : public ::testing::Test
{
protected:
  static void
  SetUpTestSuite()
  {
    s_Directory = cdm::testing::MakeTemporaryDirectory("itkfilters");
    // The 2D model gets a few real training iterations, so that z moves the synthesis (an untrained Condition
    // Embedding is the identity); the 3D model stays freshly initialised (streaming and refusals only).
    cdm::TrainingOptions options;
    options.Output = ModelPath(2);
    options.Iterations = 8;
    options.Device = "cpu";
    options.ValidationInterval = 8;
    cdm::Train(cdm::testing::MakeDataset(4, 30), options);
    cdm::ModelConfig config = cdm::ModelConfig::FromPreset("tiny", 3, { "t1n", "t2w", "t2f" }, "t1c");
    config.TargetScale = 500.0;
    cdm::Model::Create(config, 3, "cpu").Save(ModelPath(3));
  }
  static void
  TearDownTestSuite()
  {
    fs::remove_all(s_Directory);
  }
  static std::string
  ModelPath(unsigned int dimension)
  {
    return s_Directory + "/tiny" + std::to_string(dimension) + "d.cdm";
  }
  static itk::CDMModel::Pointer
  LoadModel(unsigned int dimension)
  {
    auto model = itk::CDMModel::New();
    model->Load(ModelPath(dimension), "cpu");
    return model;
  }
  template <typename TImage>
  static std::map<std::string, typename TImage::Pointer>
  Sources(uint64_t seed, const std::array<int64_t, 3> & size)
  {
    std::map<std::string, typename TImage::Pointer> images;
    for (const auto & [name, volume] : cdm::testing::MakeCase(seed, size))
    {
      images[name] = MakeImage<TImage>(volume);
    }
    return images;
  }
  static std::string s_Directory;
};
std::string CDMFilters::s_Directory;

/** Expects `update` to throw an ExceptionObject whose description holds `fragment`. */
template <typename TUpdate>
void
ExpectRefusal(TUpdate update, const std::string & fragment)
{
  try
  {
    update();
    ADD_FAILURE() << "no exception; expected one mentioning '" << fragment << "'";
  }
  catch (const itk::ExceptionObject & e)
  {
    EXPECT_NE(std::string(e.GetDescription()).find(fragment), std::string::npos) << e.GetDescription();
  }
}

struct StreamingCase
{
  unsigned int           ModelDimension;
  std::array<int64_t, 3> Size;
};

/** A 2D model on a few slices and a 3D one on a volume deeper than its receptive field. */
auto
StreamingCases()
{
  return ::testing::Values(StreamingCase{ 2, { 40, 36, 24 } }, StreamingCase{ 3, { 32, 28, 80 } });
}

std::string
StreamingCaseName(const ::testing::TestParamInfo<StreamingCase> & info)
{
  return std::to_string(info.param.ModelDimension) + "DModel";
}

class CDMStreaming : public CDMFilters, public ::testing::WithParamInterface<StreamingCase>
{};

TEST_P(CDMStreaming, StreamedSynthesisEqualsWholeImageAndRequestsOnlyPaddedRegions)
{
  const StreamingCase param = GetParam();
  auto                model = LoadModel(param.ModelDimension);
  auto                images = Sources<Image3>(21, param.Size);
  auto                sampler = itk::CDMDiffusionSamplerImageFilter<Image3>::New();
  sampler->SetModel(model);
  for (const std::string m : { "t1n", "t2w", "t2f" })
  {
    sampler->SetSource(m, images[m]);
  }
  sampler->Update();

  itk::SizeValueType continued = 0;
  const auto         synthesize = [&](unsigned int divisions, itk::PipelineMonitorImageFilter<Image3> * monitor) {
    auto synthesis = itk::CDMSynthesisImageFilter<Image3>::New();
    synthesis->SetModel(model);
    synthesis->SetSource("t1n", monitor ? monitor->GetOutput() : images["t1n"].GetPointer());
    synthesis->SetSource("t2w", images["t2w"]);
    synthesis->SetSource("t2f", images["t2f"]);
    synthesis->SetRepresentation(sampler->GetOutput());
    auto streamer = itk::StreamingImageFilter<Image3, Image3>::New();
    streamer->SetInput(synthesis->GetOutput());
    streamer->SetNumberOfStreamDivisions(divisions);
    streamer->Update();
    continued = synthesis->GetContinuedPieces();
    return Values(streamer->GetOutput());
  };
  const std::vector<float> whole = synthesize(1, nullptr);
  for (const unsigned int divisions : { 1u, 3u, 8u })
  {
    // The monitor releases its input's data after each update, so a filter (not a bare image) must feed it.
    auto source = itk::CastImageFilter<Image3, Image3>::New();
    source->SetInput(images["t1n"]);
    auto monitor = itk::PipelineMonitorImageFilter<Image3>::New();
    monitor->SetInput(source->GetOutput());
    const std::vector<float> streamed = synthesize(divisions, monitor);
    const double             difference = RelativeDifference(whole, streamed);
    std::cout << "[ streaming ] " << param.ModelDimension << "D model, " << divisions
              << " divisions: largest difference " << difference << " of the image range" << std::endl;
    EXPECT_LE(difference, 1e-5);
    if (param.ModelDimension == 2)
    {
      EXPECT_EQ(monitor->GetNumberOfUpdates(), divisions); // slices need no halo across them
      EXPECT_EQ(continued, 0u);
    }
    else
    {
      // Each piece after the first carries the C-UNet on from the one before (no halo recomputed).
      EXPECT_EQ(continued, divisions - 1);
      // Padded regions overlap: a stream whose region the previous one already holds needs no update.
      EXPECT_LE(monitor->GetNumberOfUpdates(), divisions);
      EXPECT_GT(monitor->GetNumberOfUpdates(), divisions > 1 ? 1u : 0u);
    }
    const auto largest = images["t1n"]->GetLargestPossibleRegion();
    for (const auto & region : monitor->GetUpdatedRequestedRegions())
    {
      if (divisions > 1)
      {
        EXPECT_LT(region.GetNumberOfPixels(), largest.GetNumberOfPixels()) << region;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Models, CDMStreaming, StreamingCases(), StreamingCaseName);

class CDMEndToEndStreaming : public CDMFilters, public ::testing::WithParamInterface<StreamingCase>
{};

TEST_P(CDMEndToEndStreaming, ReaderToWriterNeverHoldsAWholeSourceAndEqualsTheInMemorySynthesis)
{
  // What a user with a volume too big for memory runs: MetaImage readers (they stream), the composite filter, and a
  // writer in stream divisions. A monitor behind each reader records what the readers held.
  const StreamingCase param = GetParam();
  auto                model = LoadModel(param.ModelDimension);
  auto                images = Sources<Image3>(23, param.Size);
  auto                inMemory = itk::CDMImageFilter<Image3>::New();
  inMemory->SetModel(model);
  inMemory->StreamSourcesOff(); // whole sources, one request: the reference
  for (const std::string m : { "t1n", "t2w", "t2f" })
  {
    inMemory->SetSource(m, images[m]);
  }
  inMemory->Update();
  const std::vector<float> reference = Values(inMemory->GetOutput());

  const std::string directory = s_Directory + "/streamed-" + std::to_string(param.ModelDimension) + "d";
  fs::create_directories(directory);
  auto filter = itk::CDMImageFilter<Image3>::New();
  filter->SetModel(model);
  const itk::SizeValueType planeVoxels = static_cast<itk::SizeValueType>(param.Size[0] * param.Size[1]);
  filter->SetVoxelsPerCall(2 * planeVoxels); // the networks' calls: two slices, or a 3D slab of one padded plane
  filter->SetVoxelsPerRead(4 * planeVoxels);
  std::vector<itk::ImageFileReader<Image3>::Pointer>            readers; // a data object does not keep its source
  std::vector<itk::PipelineMonitorImageFilter<Image3>::Pointer> monitors;
  for (const std::string m : { "t1n", "t2w", "t2f" })
  {
    itk::WriteImage(images[m], directory + "/" + m + ".mha");
    auto reader = itk::ImageFileReader<Image3>::New();
    reader->SetFileName(directory + "/" + m + ".mha");
    auto monitor = itk::PipelineMonitorImageFilter<Image3>::New();
    monitor->SetInput(reader->GetOutput());
    monitor->ClearPipelineOnGenerateOutputInformationOff(); // the mini-pipeline's updates ask for information again
    filter->SetSource(m, monitor->GetOutput());
    readers.push_back(reader);
    monitors.push_back(monitor);
  }
  unsigned int samplings = 0;
  unsigned int pieces = 0;
  filter->GetSampler()->AddObserver(itk::StartEvent(), [&samplings](const itk::EventObject &) { ++samplings; });
  filter->AddObserver(itk::StartEvent(), [&pieces](const itk::EventObject &) { ++pieces; });
  auto writer = itk::ImageFileWriter<Image3>::New();
  writer->SetInput(filter->GetOutput());
  writer->SetFileName(directory + "/t1c.mha");
  writer->SetNumberOfStreamDivisions(4);
  writer->Update();

  EXPECT_EQ(samplings, 1u); // the sampler's re-reads of its sources are not a change of them
  EXPECT_EQ(pieces, 4u);    // the writer streamed
  if (param.ModelDimension == 3)
  {
    EXPECT_EQ(filter->GetContinuedPieces(), 3u); // every piece after the first carried the C-UNet on
  }
  writer->Update();
  EXPECT_EQ(samplings, 1u); // written again: the readers re-read, nothing changed
  EXPECT_EQ(pieces, 8u);
  auto uncertaintyWriter = itk::ImageFileWriter<Image3>::New();
  uncertaintyWriter->SetInput(filter->GetUncertaintyOutput());
  uncertaintyWriter->SetFileName(directory + "/t1c-uncertainty.mha");
  uncertaintyWriter->SetNumberOfStreamDivisions(4);
  uncertaintyWriter->Update();
  EXPECT_EQ(samplings, 1u); // a second writer, of the uncertainty: the same representation
  readers[1]->Modified();
  writer->Update();
  EXPECT_EQ(samplings, 2u); // a changed reader is a change of the sources
  EXPECT_LE(RelativeDifference(reference, Values(itk::ReadImage<Image3>(directory + "/t1c.mha").GetPointer())), 1e-5);
  const auto largest = images["t1n"]->GetLargestPossibleRegion();
  for (const auto & monitor : monitors)
  {
    // The sampler's windows (two passes) and the pieces' regions, each a part of the image.
    EXPECT_GT(monitor->GetNumberOfUpdates(), 4u);
    for (const auto & region : monitor->GetUpdatedBufferedRegions())
    {
      EXPECT_LT(region.GetNumberOfPixels(), largest.GetNumberOfPixels()) << region;
    }
  }
}

TEST_P(CDMEndToEndStreaming, NIfTISourcesAreReadInPiecesToo)
{
  // BraTS ships NIfTI. ITK's NIfTI reader reads only the region asked of it (a .nii.gz by decompressing up to it),
  // though its ImageIO reports CanStreamRead() false; cdm::ReadsInPieces says so, and `cdm synthesize
  // --stream-divisions` then prints no note for such sources.
  const StreamingCase param = GetParam();
  auto                images = Sources<Image3>(25, param.Size);
  const std::string   directory = s_Directory + "/nifti-pieces-" + std::to_string(param.ModelDimension) + "d";
  fs::create_directories(directory);
  const std::map<std::string, std::string> files{ { "t1n", directory + "/t1n.nii" },
                                                  { "t2w", directory + "/t2w.nii.gz" },
                                                  { "t2f", directory + "/t2f.nii.gz" } };
  auto                                     model = LoadModel(param.ModelDimension);
  auto                                     inMemory = itk::CDMImageFilter<Image3>::New();
  inMemory->SetModel(model);
  inMemory->SetSeed(4);
  auto filter = itk::CDMImageFilter<Image3>::New();
  filter->SetModel(model);
  filter->SetSeed(4);
  const itk::SizeValueType planeVoxels = static_cast<itk::SizeValueType>(param.Size[0] * param.Size[1]);
  filter->SetVoxelsPerCall(2 * planeVoxels);
  filter->SetVoxelsPerRead(4 * planeVoxels);
  std::vector<itk::ImageFileReader<Image3>::Pointer>            readers;
  std::vector<itk::PipelineMonitorImageFilter<Image3>::Pointer> monitors;
  std::string                                                   sources;
  for (const auto & [m, path] : files)
  {
    if (m == "t2f") // BraTS ships 16-bit integers: read in pieces and converted to float piece by piece
    {
      auto toShort = itk::RescaleIntensityImageFilter<Image3, itk::Image<short, 3>>::New();
      toShort->SetInput(images[m]);
      toShort->SetOutputMinimum(0);
      toShort->SetOutputMaximum(4000);
      itk::WriteImage(toShort->GetOutput(), path, true);
    }
    else
    {
      itk::WriteImage(images[m], path, path.find(".gz") != std::string::npos);
    }
    EXPECT_TRUE(cdm::ReadsInPieces(cdm::CheckImageFile(path))) << path;
    inMemory->SetSource(m, itk::ReadImage<Image3>(path)); // the reference: the same files read whole
    auto reader = itk::ImageFileReader<Image3>::New();
    reader->SetFileName(path);
    auto monitor = itk::PipelineMonitorImageFilter<Image3>::New();
    monitor->SetInput(reader->GetOutput());
    monitor->ClearPipelineOnGenerateOutputInformationOff();
    filter->SetSource(m, monitor->GetOutput());
    readers.push_back(reader);
    monitors.push_back(monitor);
    sources += " --source " + m + "=" + path;
  }
  inMemory->Update();
  auto writer = itk::ImageFileWriter<Image3>::New();
  writer->SetInput(filter->GetOutput());
  writer->SetFileName(directory + "/t1c.mha");
  writer->SetNumberOfStreamDivisions(4);
  writer->Update();
  EXPECT_LE(RelativeDifference(Values(inMemory->GetOutput()),
                               Values(itk::ReadImage<Image3>(directory + "/t1c.mha").GetPointer())),
            1e-5);
  const auto largest = images["t1n"]->GetLargestPossibleRegion();
  for (const auto & monitor : monitors)
  {
    EXPECT_GT(monitor->GetNumberOfUpdates(), 4u);
    for (const auto & region : monitor->GetUpdatedBufferedRegions())
    {
      EXPECT_LT(region.GetNumberOfPixels(), largest.GetNumberOfPixels()) << region;
    }
  }
  // Compressed MetaImage and NRRD are read whole: the command line's note names them.
  itk::WriteImage(images["t1n"], directory + "/t1n-compressed.mha", true);
  itk::WriteImage(images["t1n"], directory + "/t1n.nrrd");
  EXPECT_FALSE(cdm::ReadsInPieces(cdm::CheckImageFile(directory + "/t1n-compressed.mha")));
  EXPECT_FALSE(cdm::ReadsInPieces(cdm::CheckImageFile(directory + "/t1n.nrrd")));

  const cdm::testing::CommandResult pieces = cdm::testing::RunCommand(
    std::string(CDM_EXECUTABLE) + " synthesize --quiet --device cpu --seed 4 --stream-divisions 3 --model " +
    ModelPath(param.ModelDimension) + sources + " --output " + directory + "/cli.mha");
  ASSERT_EQ(pieces.ExitCode, 0) << pieces.Output;
  EXPECT_EQ(pieces.Output.find("note:"), std::string::npos) << pieces.Output;
  EXPECT_LE(RelativeDifference(Values(inMemory->GetOutput()),
                               Values(itk::ReadImage<Image3>(directory + "/cli.mha").GetPointer())),
            1e-5);
}

TEST_P(CDMEndToEndStreaming, CommandLineInPiecesEqualsItsWholeSynthesis)
{
  // `cdm synthesize --stream-divisions`: the same files, options and seed as the whole-image command line, with two
  // samples (an uncertainty, written by a second writer) and 3D files that ITK reads and writes piece by piece.
  const StreamingCase param = GetParam();
  auto                images = Sources<Image3>(24, param.Size);
  const std::string   directory = s_Directory + "/cli-pieces-" + std::to_string(param.ModelDimension) + "d";
  fs::create_directories(directory);
  std::string sources;
  for (const std::string m : { "t1n", "t2w", "t2f" })
  {
    itk::WriteImage(images[m], directory + "/" + m + ".mha"); // uncompressed: read piece by piece
    sources += " --source " + m + "=" + directory + "/" + m + ".mha";
  }
  const std::string common = std::string(CDM_EXECUTABLE) + " synthesize --quiet --device cpu --seed 4 --samples 2 " +
                             "--voxels-per-call " + std::to_string(2 * param.Size[0] * param.Size[1]) + " --model " +
                             ModelPath(param.ModelDimension) + sources;
  const cdm::testing::CommandResult whole = cdm::testing::RunCommand(
    common + " --output " + directory + "/whole.mha --uncertainty " + directory + "/whole-spread.mha");
  ASSERT_EQ(whole.ExitCode, 0) << whole.Output;
  const cdm::testing::CommandResult pieces =
    cdm::testing::RunCommand(common + " --stream-divisions 3 --output " + directory + "/pieces.mha --uncertainty " +
                             directory + "/pieces-spread.mha --timing " + directory + "/pieces.json");
  ASSERT_EQ(pieces.ExitCode, 0) << pieces.Output;
  EXPECT_EQ(pieces.Output.find("note:"), std::string::npos) << pieces.Output; // every file streamed
  const nlohmann::json timing = nlohmann::json::parse(std::ifstream(directory + "/pieces.json"));
  EXPECT_EQ(timing["sampler_runs"], 1) << timing.dump(); // z sampled once for both images' pieces
  EXPECT_EQ(timing["pieces"], 3) << timing.dump();       // one synthesis makes both images' pieces

  const auto wholeImage = itk::ReadImage<Image3>(directory + "/whole.mha");
  const auto piecesImage = itk::ReadImage<Image3>(directory + "/pieces.mha");
  EXPECT_LE(RelativeDifference(Values(wholeImage.GetPointer()), Values(piecesImage.GetPointer())), 1e-5);
  EXPECT_EQ(piecesImage->GetLargestPossibleRegion(), wholeImage->GetLargestPossibleRegion());
  EXPECT_EQ(piecesImage->GetSpacing(), wholeImage->GetSpacing());
  EXPECT_EQ(piecesImage->GetOrigin(), wholeImage->GetOrigin());
  EXPECT_EQ(piecesImage->GetDirection(), wholeImage->GetDirection());
  const auto spread = Values(itk::ReadImage<Image3>(directory + "/pieces-spread.mha").GetPointer());
  EXPECT_LE(RelativeDifference(Values(itk::ReadImage<Image3>(directory + "/whole-spread.mha").GetPointer()), spread),
            1e-5);
  if (param.ModelDimension == 2) // the 3D test model is untrained: its film ignores z, so its samples agree
  {
    EXPECT_GT(*std::max_element(spread.begin(), spread.end()), 0.0f);
  }

  // A compressed output is written whole, and the command says so; it is still synthesized in pieces (a writer of a
  // whole file asks for the whole image at once), and the result is the same.
  const cdm::testing::CommandResult compressed = cdm::testing::RunCommand(
    common + " --stream-divisions 3 --output " + directory + "/pieces.nii.gz --timing " + directory + "/gathered.json");
  ASSERT_EQ(compressed.ExitCode, 0) << compressed.Output;
  EXPECT_NE(compressed.Output.find("note: " + directory + "/pieces.nii.gz was read or written whole"),
            std::string::npos)
    << compressed.Output;
  EXPECT_EQ(nlohmann::json::parse(std::ifstream(directory + "/gathered.json"))["pieces"], 3);
  EXPECT_LE(RelativeDifference(Values(wholeImage.GetPointer()),
                               Values(itk::ReadImage<Image3>(directory + "/pieces.nii.gz").GetPointer())),
            1e-5);
  // What the pieces cannot do is refused by name.
  const cdm::testing::CommandResult oracle = cdm::testing::RunCommand(
    common + " --stream-divisions 3 --representation zero --output " + directory + "/zero.mha");
  EXPECT_EQ(oracle.ExitCode, 1) << oracle.Output;
  EXPECT_NE(oracle.Output.find("--representation zero is not available with --stream-divisions"), std::string::npos)
    << oracle.Output;
  EXPECT_FALSE(fs::exists(directory + "/zero.mha"));
  // A bad voxel: refused with the file it came from named, and no output is left behind.
  auto damaged = Sources<Image3>(24, param.Size)["t2w"];
  damaged->SetPixel({ { 1, 2, param.Size[2] - 2 } }, std::numeric_limits<float>::quiet_NaN());
  itk::WriteImage(damaged, directory + "/t2w-nan.mha");
  std::string damagedSources = sources;
  damagedSources.replace(
    damagedSources.find(directory + "/t2w.mha"), (directory + "/t2w.mha").size(), directory + "/t2w-nan.mha");
  const cdm::testing::CommandResult refused = cdm::testing::RunCommand(
    std::string(CDM_EXECUTABLE) + " synthesize --quiet --device cpu --stream-divisions 3 --model " +
    ModelPath(param.ModelDimension) + damagedSources + " --output " + directory + "/refused.mha");
  EXPECT_EQ(refused.ExitCode, 1) << refused.Output;
  EXPECT_NE(refused.Output.find("non-finite"), std::string::npos) << refused.Output;
  EXPECT_NE(refused.Output.find("t2w=" + directory + "/t2w-nan.mha"), std::string::npos) << refused.Output;
  EXPECT_FALSE(fs::exists(directory + "/refused.mha"));
}

INSTANTIATE_TEST_SUITE_P(Models, CDMEndToEndStreaming, StreamingCases(), StreamingCaseName);

TEST(CDMConversion, ContiguousSlabsOfFloatImagesAreViewedAndOtherRegionsCopied)
{
  auto image = Image3::New();
  image->SetRegions(Image3::RegionType({ { 0, 0, 0 } }, { { 5, 4, 6 } }));
  image->Allocate();
  float value = 0.0f;
  for (itk::ImageRegionIterator<Image3> it(image, image->GetBufferedRegion()); !it.IsAtEnd(); ++it)
  {
    it.Set(value++);
  }
  const Image3::RegionType slab({ { 0, 0, 2 } }, { { 5, 4, 3 } }); // whole planes 2 to 4
  const cdm::Volume        viewed = itk::CDMConversion::ToVolumeView(image.GetPointer(), slab, "slab");
  EXPECT_EQ(viewed.Data(), image->GetBufferPointer() + 2 * 5 * 4); // no copy
  EXPECT_EQ(viewed.Size, (std::array<int64_t, 3>{ 5, 4, 3 }));
  EXPECT_EQ(viewed.Origin[2], 2.0);
  const Image3::RegionType part({ { 1, 0, 2 } }, { { 3, 4, 3 } }); // not whole rows: copied
  const cdm::Volume        copied = itk::CDMConversion::ToVolumeView(image.GetPointer(), part, "part");
  EXPECT_TRUE(copied.Data() < image->GetBufferPointer() ||
              copied.Data() >= image->GetBufferPointer() + image->GetBufferedRegion().GetNumberOfPixels());
  EXPECT_EQ(copied.Data()[0], image->GetPixel({ { 1, 0, 2 } }));
  EXPECT_EQ(copied.Data()[copied.StoredVoxels() - 1], image->GetPixel({ { 3, 3, 4 } }));
}

TEST_F(CDMFilters, CompositeFilterEqualsTheCommandLine)
{
  auto        images = Sources<Image3>(8, { 32, 32, 6 });
  std::string arguments;
  for (const std::string m : { "t1n", "t2w", "t2f" })
  {
    const std::string path = s_Directory + "/composite-" + m + ".nii.gz";
    itk::WriteImage(images[m], path);
    arguments += " --source " + m + "=" + path;
  }
  const std::string output = s_Directory + "/composite-cli.nii.gz";
  const std::string command = std::string(CDM_EXECUTABLE) + " synthesize --quiet --device cpu --seed 5 --model " +
                              ModelPath(2) + arguments + " --output " + output;
  ASSERT_EQ(std::system(command.c_str()), 0) << command;

  auto filter = itk::CDMImageFilter<Image3>::New();
  filter->SetModel(LoadModel(2));
  for (const std::string m : { "t1n", "t2w", "t2f" })
  {
    filter->SetSource(m, itk::ReadImage<Image3>(s_Directory + "/composite-" + m + ".nii.gz"));
  }
  filter->SetSeed(5);
  filter->Update();
  const auto   reference = itk::ReadImage<Image3>(output);
  const double difference = RelativeDifference(Values(reference.GetPointer()), Values(filter->GetOutput()));
  std::cout << "[ composite ] largest difference to `cdm synthesize`: " << difference << " of the image range"
            << std::endl;
  EXPECT_LE(difference, 1e-5);
  // The output keeps the sources' geometry.
  const auto * source = filter->GetSource("t1n");
  EXPECT_EQ(filter->GetOutput()->GetSpacing(), source->GetSpacing());
  EXPECT_EQ(filter->GetOutput()->GetOrigin(), source->GetOrigin());
  EXPECT_EQ(filter->GetOutput()->GetDirection(), source->GetDirection());
}

TEST_F(CDMFilters, EncoderEqualsTheCoreEngineAndSamplerRepeatsWithASeed)
{
  auto       model = LoadModel(2);
  const auto raw = cdm::testing::MakeCase(4, { 32, 32, 6 });
  auto       images = Sources<Image3>(4, { 32, 32, 6 });
  auto       encoder = itk::CDMModalityEncoderImageFilter<Image3>::New();
  encoder->SetModel(model);
  encoder->SetInput(images["t1c"]);
  encoder->Update();
  const auto * z = encoder->GetOutput();
  EXPECT_EQ(z->GetLargestPossibleRegion().GetSize()[2], 6u); // one cell per slice
  EXPECT_EQ(z->GetLargestPossibleRegion().GetSize()[0], 1u);
  EXPECT_EQ(z->GetNumberOfComponentsPerPixel(), 32u);
  const cdm::Representation core = model->GetModel().Encode(raw.at("t1c"));
  ASSERT_EQ(core.Values.size(), 6u * 32u);
  EXPECT_EQ(std::vector<float>(z->GetBufferPointer(), z->GetBufferPointer() + core.Values.size()), core.Values);

  const auto sample = [&](uint64_t seed) {
    auto sampler = itk::CDMDiffusionSamplerImageFilter<Image3>::New();
    sampler->SetModel(model);
    for (const std::string m : { "t1n", "t2w", "t2f" })
    {
      sampler->SetSource(m, images[m]);
    }
    sampler->SetSeed(seed);
    sampler->Update();
    double scale = 0.0;
    EXPECT_TRUE(
      itk::ExposeMetaData<double>(sampler->GetOutput()->GetMetaDataDictionary(), "CDM_SourceScale_t2w", scale));
    EXPECT_GT(scale, 0.0);
    const auto * out = sampler->GetOutput();
    return std::vector<float>(out->GetBufferPointer(), out->GetBufferPointer() + 6 * 32);
  };
  EXPECT_EQ(sample(7), sample(7));
  EXPECT_NE(sample(7), sample(8));
}

TEST_F(CDMFilters, UncertaintyIsZeroForOneSampleAndPositiveForSeveral)
{
  auto       images = Sources<Image3>(6, { 32, 32, 4 });
  const auto run = [&](unsigned int samples) {
    auto filter = itk::CDMImageFilter<Image3>::New();
    filter->SetModel(LoadModel(2));
    for (const std::string m : { "t1n", "t2w", "t2f" })
    {
      filter->SetSource(m, images[m]);
    }
    filter->SetNumberOfSamples(samples);
    filter->SetEta(1.0);
    filter->Update();
    return Values(filter->GetUncertaintyOutput());
  };
  const std::vector<float> one = run(1);
  EXPECT_EQ(*std::max_element(one.begin(), one.end()), 0.0f);
  const std::vector<float> several = run(3);
  EXPECT_GT(*std::max_element(several.begin(), several.end()), 0.0f);
  EXPECT_GE(*std::min_element(several.begin(), several.end()), 0.0f);
}

TEST_F(CDMFilters, BadInputIsRefusedWithAnExceptionNamingIt)
{
  auto       images = Sources<Image3>(9, { 32, 32, 4 });
  const auto make = [&](const std::map<std::string, Image3::Pointer> & sources, unsigned int dimension) {
    auto filter = itk::CDMImageFilter<Image3>::New();
    filter->SetModel(LoadModel(dimension));
    for (const auto & [name, image] : sources)
    {
      filter->SetSource(name, image);
    }
    return filter;
  };
  auto sources = std::map<std::string, Image3::Pointer>{ { "t1n", images["t1n"] },
                                                         { "t2w", images["t2w"] },
                                                         { "t2f", images["t2f"] } };

  auto respaced = Sources<Image3>(9, { 32, 32, 4 })["t2w"];
  auto spacing = respaced->GetSpacing();
  spacing[0] *= 2.0;
  respaced->SetSpacing(spacing);
  auto mismatched = sources;
  mismatched["t2w"] = respaced;
  ExpectRefusal([&]() { make(mismatched, 2)->Update(); }, "spacing differs");

  auto missing = sources;
  missing.erase("t2f");
  ExpectRefusal([&]() { make(missing, 2)->Update(); }, "'t2f' is missing");

  auto unknown = sources;
  unknown["flair"] = images["t2f"];
  ExpectRefusal([&]() { make(unknown, 2)->Update(); }, "'flair' is not an input");

  auto broken = Sources<Image3>(9, { 32, 32, 4 })["t1n"];
  broken->GetBufferPointer()[50] = std::numeric_limits<float>::quiet_NaN();
  auto nonFinite = sources;
  nonFinite["t1n"] = broken;
  ExpectRefusal([&]() { make(nonFinite, 2)->Update(); }, "non-finite");

  auto planar = Sources<Image2>(9, { 32, 32, 1 });
  auto planarFilter = itk::CDMImageFilter<Image2>::New();
  planarFilter->SetModel(LoadModel(3));
  for (const std::string m : { "t1n", "t2w", "t2f" })
  {
    planarFilter->SetSource(m, planar[m]);
  }
  ExpectRefusal([&]() { planarFilter->Update(); }, "the model is 3D");

  auto noModel = itk::CDMImageFilter<Image3>::New();
  noModel->SetSource("t1n", images["t1n"]);
  ExpectRefusal([&]() { noModel->Update(); }, "no CDM model");

  if (!cdm::CudaAvailable())
  {
    ExpectRefusal([&]() { itk::CDMModel::New()->Load(ModelPath(2), "cuda:3"); }, "not available");
  }
  ExpectRefusal([&]() { itk::CDMModel::New()->Load(s_Directory + "/absent.cdm"); }, "absent.cdm");
}

TEST_F(CDMFilters, CompositeSamplesOncePerChangeNotOncePerStreamedPiece)
{
  auto images = Sources<Image3>(21, { 40, 36, 24 });
  auto filter = itk::CDMImageFilter<Image3>::New();
  filter->SetModel(LoadModel(2));
  for (const std::string m : { "t1n", "t2w", "t2f" })
  {
    filter->SetSource(m, images[m]);
  }
  unsigned int samplings = 0;
  auto         counter = itk::CStyleCommand::New();
  counter->SetClientData(&samplings);
  counter->SetCallback(
    [](itk::Object *, const itk::EventObject &, void * data) { ++*static_cast<unsigned int *>(data); });
  filter->GetSampler()->AddObserver(itk::StartEvent(), counter);

  filter->Update();
  const std::vector<float> whole = Values(filter->GetOutput());
  EXPECT_EQ(samplings, 1u);
  auto streamer = itk::StreamingImageFilter<Image3, Image3>::New();
  streamer->SetInput(filter->GetOutput());
  streamer->SetNumberOfStreamDivisions(8);
  streamer->Update();
  EXPECT_EQ(samplings, 1u); // eight pieces, the same sources, model and seed: the representation is reused
  EXPECT_LE(RelativeDifference(whole, Values(streamer->GetOutput())), 1e-5);

  filter->SetSeed(3);
  streamer->Update();
  EXPECT_EQ(samplings, 2u); // a new seed samples again, once for all pieces
  images["t2w"]->Modified();
  streamer->Update();
  EXPECT_EQ(samplings, 3u); // so do changed sources
}

TEST_F(CDMFilters, CompositeCarriesA3DSynthesisAcrossPiecesAndStartsAfreshWhenTheSourcesChange)
{
  auto images = Sources<Image3>(21, { 32, 28, 80 });
  auto filter = itk::CDMImageFilter<Image3>::New();
  filter->SetModel(LoadModel(3));
  for (const std::string m : { "t1n", "t2w", "t2f" })
  {
    filter->SetSource(m, images[m]);
  }
  auto streamer = itk::StreamingImageFilter<Image3, Image3>::New();
  streamer->SetInput(filter->GetOutput());
  streamer->SetNumberOfStreamDivisions(5);
  streamer->Update();
  EXPECT_EQ(filter->GetContinuedPieces(), 4u);
  const std::vector<float> streamed = Values(streamer->GetOutput());

  auto whole = itk::CDMImageFilter<Image3>::New();
  whole->SetModel(LoadModel(3));
  for (const std::string m : { "t1n", "t2w", "t2f" })
  {
    whole->SetSource(m, images[m]);
  }
  whole->Update();
  EXPECT_LE(RelativeDifference(Values(whole->GetOutput()), streamed), 1e-5);

  // New voxels in one source: the next streamed update must not continue the last one's C-UNet state.
  itk::ImageRegionIterator<Image3> it(images["t2w"], images["t2w"]->GetBufferedRegion());
  for (; !it.IsAtEnd(); ++it)
  {
    it.Set(it.Get() * 0.5f + 3.0f);
  }
  images["t2w"]->Modified();
  streamer->Update();
  EXPECT_EQ(filter->GetContinuedPieces(), 4u);
  whole->Update();
  const std::vector<float> changed = Values(whole->GetOutput());
  EXPECT_GT(RelativeDifference(changed, streamed), 1e-3); // the change shows
  EXPECT_LE(RelativeDifference(changed, Values(streamer->GetOutput())), 1e-5);
}

TEST_F(CDMFilters, LoadingAnotherFileIntoTheModelReexecutesTheFilters)
{
  auto              images = Sources<Image3>(17, { 32, 32, 6 });
  const std::string otherPath = s_Directory + "/other2d.cdm";
  cdm::ModelConfig  config = cdm::ModelConfig::FromPreset("tiny", 2, { "t1n", "t2w", "t2f" }, "t1c");
  config.TargetScale = 900.0;
  cdm::Model::Create(config, 11, "cpu").Save(otherPath);

  const auto synthesize = [&](itk::CDMModel * model) {
    auto filter = itk::CDMImageFilter<Image3>::New();
    filter->SetModel(model);
    for (const std::string m : { "t1n", "t2w", "t2f" })
    {
      filter->SetSource(m, images[m]);
    }
    filter->Update();
    return Values(filter->GetOutput());
  };
  auto other = itk::CDMModel::New();
  other->Load(otherPath, "cpu");
  const std::vector<float> expected = synthesize(other);

  auto model = LoadModel(2);
  auto filter = itk::CDMImageFilter<Image3>::New();
  filter->SetModel(model);
  for (const std::string m : { "t1n", "t2w", "t2f" })
  {
    filter->SetSource(m, images[m]);
  }
  filter->Update();
  const std::vector<float> before = Values(filter->GetOutput());
  ASSERT_GT(RelativeDifference(expected, before), 1e-3); // the two models differ
  model->Load(otherPath, "cpu");
  filter->Update();
  EXPECT_LE(RelativeDifference(expected, Values(filter->GetOutput())), 1e-6);
}

TEST_F(CDMFilters, EncoderOutputDrivesTheSynthesisAndTheSamplerOutputEqualsTheComposite)
{
  auto       model = LoadModel(2);
  const auto raw = cdm::testing::MakeCase(19, { 40, 36, 8 });
  auto       images = Sources<Image3>(19, { 40, 36, 8 });
  const auto synthesize = [&](const itk::VectorImage<float, 3> * representation, unsigned int divisions) {
    auto synthesis = itk::CDMSynthesisImageFilter<Image3>::New();
    synthesis->SetModel(model);
    for (const std::string m : { "t1n", "t2w", "t2f" })
    {
      synthesis->SetSource(m, images[m]);
    }
    synthesis->SetRepresentation(representation);
    auto streamer = itk::StreamingImageFilter<Image3, Image3>::New();
    streamer->SetInput(synthesis->GetOutput());
    streamer->SetNumberOfStreamDivisions(divisions);
    streamer->Update();
    return Values(streamer->GetOutput());
  };

  // The oracle path: z = the encoder's output for the true target, streamed or not, equals the core engine's.
  auto encoder = itk::CDMModalityEncoderImageFilter<Image3>::New();
  encoder->SetModel(model);
  encoder->SetInput(images["t1c"]);
  const cdm::SourceVolumes  sources{ { "t1n", raw.at("t1n") }, { "t2w", raw.at("t2w") }, { "t2f", raw.at("t2f") } };
  const cdm::Model &        engine = model->GetModel();
  const cdm::Representation oracle =
    engine.ReplaceRepresentation(engine.SampleRepresentation(sources), "oracle", &raw.at("t1c"));
  const std::vector<float> expected = engine.SynthesizeRegion(sources, oracle, cdm::Region{}).Image.Voxels;
  for (const unsigned int divisions : { 1u, 4u })
  {
    EXPECT_LE(RelativeDifference(expected, synthesize(encoder->GetOutput(), divisions)), 1e-5) << divisions;
  }

  // The sampler's z through the synthesis filter equals the composite filter.
  auto sampler = itk::CDMDiffusionSamplerImageFilter<Image3>::New();
  sampler->SetModel(model);
  auto composite = itk::CDMImageFilter<Image3>::New();
  composite->SetModel(model);
  for (const std::string m : { "t1n", "t2w", "t2f" })
  {
    sampler->SetSource(m, images[m]);
    composite->SetSource(m, images[m]);
  }
  sampler->SetSeed(4);
  composite->SetSeed(4);
  composite->Update();
  const std::vector<float> viaSampler = synthesize(sampler->GetOutput(), 4);
  EXPECT_LE(RelativeDifference(Values(composite->GetOutput()), viaSampler), 1e-5);
  EXPECT_GT(RelativeDifference(expected, viaSampler), 0.0); // the oracle and the sampled z differ (z acts)
}

TEST_F(CDMFilters, AUnifiedModelSynthesizesTheTargetModalityItIsSet)
{
  const std::vector<std::string> all{ "t1n", "t1c", "t2w", "t2f" };
  const cdm::Model unified = cdm::Model::Create(cdm::ModelConfig::UnifiedFromPreset("tiny", 2, all, all), 6, "cpu");
  cdm::testing::RandomizeFilm(unified, 7);
  unified.Save(s_Directory + "/unified.cdm");
  auto model = itk::CDMModel::New();
  model->Load(s_Directory + "/unified.cdm", "cpu");
  const auto               raw = cdm::testing::MakeCase(31, { 32, 28, 4 });
  auto                     images = Sources<Image3>(31, { 32, 28, 4 });
  const cdm::SourceVolumes two{ { "t1n", raw.at("t1n") }, { "t2w", raw.at("t2w") } };

  // Sources t1n and t2w: two gaps, so the target must be set; each one set gives the core engine's synthesis of it.
  auto composite = itk::CDMImageFilter<Image3>::New();
  composite->SetModel(model);
  composite->SetSource("t1n", images["t1n"]);
  composite->SetSource("t2w", images["t2w"]);
  ExpectRefusal([&] { composite->Update(); }, "name the target"); // and recovers once it is named
  std::map<std::string, std::vector<float>> outputs;
  for (const std::string target : { "t1c", "t2f" })
  {
    composite->SetTargetModality(target);
    composite->Update();
    outputs[target] = Values(composite->GetOutput());
    cdm::SynthesisOptions options;
    options.Target = target;
    EXPECT_LE(RelativeDifference(unified.Synthesize(two, options).Image.Voxels, outputs[target]), 1e-6) << target;
  }
  EXPECT_GT(RelativeDifference(outputs["t1c"], outputs["t2f"]), 1e-4);
  composite->SetTargetModality("t2w");
  ExpectRefusal([&] { composite->Update(); }, "also given as a source");

  // The encoder names the modality it encodes; the synthesis filter follows it, and refuses another target.
  auto encoder = itk::CDMModalityEncoderImageFilter<Image3>::New();
  encoder->SetModel(model);
  encoder->SetInput(images["t2f"]);
  encoder->SetTargetModality("t2f");
  auto synthesis = itk::CDMSynthesisImageFilter<Image3>::New();
  synthesis->SetModel(model);
  synthesis->SetSource("t1n", images["t1n"]);
  synthesis->SetSource("t2w", images["t2w"]);
  synthesis->SetRepresentation(encoder->GetOutput());
  synthesis->Update();
  const cdm::Representation oracle = unified.Encode(raw.at("t2f"), "t2f");
  EXPECT_LE(RelativeDifference(unified.SynthesizeRegion(two, oracle, cdm::Region{}).Image.Voxels,
                               Values(synthesis->GetOutput())),
            1e-6);
  synthesis->SetTargetModality("t1c");
  ExpectRefusal([&] { synthesis->Update(); }, "guides a synthesis of t2f");
}

TEST_F(CDMFilters, CompositeFilterIsFreedWithItsLastPointer)
{
  // The composite once held a member ProgressAccumulator that pointed back at it: neither was ever freed, nor the
  // model they held (found by LeakSanitizer).
  auto model = LoadModel(2);
  auto images = Sources<Image3>(41, { 24, 24, 3 });
  auto composite = itk::CDMImageFilter<Image3>::New();
  composite->SetModel(model);
  for (const std::string m : { "t1n", "t2w", "t2f" })
  {
    composite->SetSource(m, images[m]);
  }
  composite->Update();
  EXPECT_EQ(composite->GetReferenceCount(), 1);
  composite = nullptr;
  EXPECT_EQ(model->GetReferenceCount(), 1);
}

TEST_F(CDMFilters, RunsBetweenStandardFiltersWithShortPixelsAndReportsProgress)
{
  using ShortImage = itk::Image<short, 3>;
  auto images = Sources<ShortImage>(12, { 32, 32, 4 });
  auto filter = itk::CDMImageFilter<ShortImage>::New(); // integer sources, float output
  filter->SetModel(LoadModel(2));
  std::vector<itk::CastImageFilter<ShortImage, ShortImage>::Pointer> casts; // outputs do not own their filters
  for (const std::string m : { "t1n", "t2w", "t2f" })
  {
    casts.push_back(itk::CastImageFilter<ShortImage, ShortImage>::New());
    casts.back()->SetInput(images[m]);
    filter->SetSource(m, casts.back()->GetOutput());
  }
  float maximum = 0.0f;
  auto  observer = itk::CStyleCommand::New();
  observer->SetClientData(&maximum);
  observer->SetCallback([](itk::Object * object, const itk::EventObject &, void * data) {
    auto * best = static_cast<float *>(data);
    *best = std::max(*best, static_cast<itk::ProcessObject *>(object)->GetProgress());
  });
  filter->AddObserver(itk::ProgressEvent(), observer);
  auto rescale = itk::RescaleIntensityImageFilter<Image3, ShortImage>::New();
  rescale->SetInput(filter->GetOutput());
  rescale->SetOutputMinimum(0);
  rescale->SetOutputMaximum(1000);
  rescale->Update();
  EXPECT_FLOAT_EQ(maximum, 1.0f);
  const auto values = Values(rescale->GetOutput());
  // The rescale's float-to-short cast truncates, so its top may land on 999 (depends on the output's values).
  EXPECT_GE(*std::max_element(values.begin(), values.end()), 999.0f);
  filter->Print(std::cout);
}

TEST_F(CDMFilters, ReportsProgressFromNoughtToOneInEveryStreamedPiece)
{
  auto images = Sources<Image3>(14, { 32, 32, 8 });
  auto filter = itk::CDMImageFilter<Image3>::New();
  filter->SetModel(LoadModel(2));
  for (const std::string m : { "t1n", "t2w", "t2f" })
  {
    filter->SetSource(m, images[m]);
  }
  std::vector<std::vector<float>> pieces; // the progress values each update of the filter reported
  filter->AddObserver(itk::StartEvent(), [&pieces](const itk::EventObject &) { pieces.emplace_back(); });
  filter->AddObserver(itk::ProgressEvent(),
                      [&pieces, &filter](const itk::EventObject &) { pieces.back().push_back(filter->GetProgress()); });
  auto streamer = itk::StreamingImageFilter<Image3, Image3>::New();
  streamer->SetInput(filter->GetOutput());
  streamer->SetNumberOfStreamDivisions(4);
  streamer->Update();
  ASSERT_EQ(pieces.size(), 4u);
  for (size_t piece = 0; piece < pieces.size(); ++piece)
  {
    const std::vector<float> & values = pieces[piece];
    ASSERT_GE(values.size(), 3u) << "piece " << piece;
    EXPECT_LT(values.front(), 0.5f) << "piece " << piece << " started as done";
    EXPECT_FLOAT_EQ(values.back(), 1.0f) << "piece " << piece;
    EXPECT_TRUE(std::is_sorted(values.begin(), values.end())) << "piece " << piece;
  }
}
} // namespace

namespace
{
TEST_F(CDMFilters, ExamplesRunOnNIfTIFiles)
{
  auto        images = Sources<Image3>(13, { 32, 32, 6 });
  std::string paths;
  for (const std::string m : { "t1c", "t1n", "t2w", "t2f" })
  {
    itk::WriteImage(images[m], s_Directory + "/example-" + m + ".nii.gz");
  }
  const std::string sources =
    s_Directory + "/example-t1n.nii.gz " + s_Directory + "/example-t2w.nii.gz " + s_Directory + "/example-t2f.nii.gz ";
  const std::string streamed = s_Directory + "/example-streamed.nii.gz";
  const std::string composite =
    std::string(CDM_SYNTHESIZE_EXAMPLE) + " " + ModelPath(2) + " " + sources + streamed + " 3 cpu";
  ASSERT_EQ(std::system(composite.c_str()), 0) << composite;
  const std::string cli = s_Directory + "/example-cli.nii.gz";
  const std::string command = std::string(CDM_EXECUTABLE) + " synthesize --quiet --device cpu --model " + ModelPath(2) +
                              " --source t1n=" + s_Directory + "/example-t1n.nii.gz --source t2w=" + s_Directory +
                              "/example-t2w.nii.gz --source t2f=" + s_Directory + "/example-t2f.nii.gz --output " + cli;
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  EXPECT_LE(RelativeDifference(Values(itk::ReadImage<Image3>(cli).GetPointer()),
                               Values(itk::ReadImage<Image3>(streamed).GetPointer())),
            1e-5);

  const std::string uncertainty = s_Directory + "/example-uncertainty.nii.gz";
  const std::string byHand = std::string(CDM_FILTERS_BY_HAND_EXAMPLE) + " " + ModelPath(2) + " " + s_Directory +
                             "/example-t1c.nii.gz " + sources + s_Directory + "/example-byhand.nii.gz " + uncertainty +
                             " 3";
  ASSERT_EQ(std::system(byHand.c_str()), 0) << byHand;
  const auto spread = Values(itk::ReadImage<Image3>(uncertainty).GetPointer());
  EXPECT_GT(*std::max_element(spread.begin(), spread.end()), 0.0f);
}
} // namespace
