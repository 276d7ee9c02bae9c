/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
// The `cdm` command line end to end on NIfTI files: train -> synthesize -> evaluate, and its refusals.
#include "cdmImageIO.h"
#include "cdmModel.h"
#include "cdmTestData.h"
#include "cdmTrainer.h"

#include "itkImage.h"
#include "itkImageIOFactory.h"
#include "itkImageFileWriter.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <array>
#include <cmath>
#include <complex>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace
{
namespace fs = std::filesystem;

using Result = cdm::testing::CommandResult;

Result
RunCdm(const std::string & arguments)
{
  return cdm::testing::RunCommand(std::string(CDM_EXECUTABLE) + " " + arguments);
}

/** Writes a zero-filled image of type TImage and the given size to `path`. */
template <typename TImage>
void
WriteZeroImage(const typename TImage::SizeType & size, const std::string & path)
{
  auto image = TImage::New();
  image->SetRegions(typename TImage::RegionType(size));
  image->Allocate(true);
  itk::WriteImage(image, path);
}

bool
Contains(const std::string & text, const std::string & fragment)
{
  return text.find(fragment) != std::string::npos;
}

void
WriteCase(const std::string & root, const std::string & name, const std::map<std::string, cdm::Volume> & images)
{
  fs::create_directories(root + "/" + name);
  for (const auto & [modality, volume] : images)
  {
    cdm::WriteVolume(volume, root + "/" + name + "/" + name + "-" + modality + ".nii.gz");
  }
}

class CommandLine : public ::testing::Test
{
protected:
  static void
  SetUpTestSuite()
  {
    s_Root = cdm::testing::MakeTemporaryDirectory("cli");
    for (int i = 0; i < 6; ++i)
    {
      WriteCase(s_Root + "/data", "case" + std::to_string(i), cdm::testing::MakeCase(200 + i));
    }
    cdm::Volume labels;
    auto        held = cdm::testing::MakeCase(777, { 32, 32, 6 }, &labels);
    held["seg"] = labels;
    WriteCase(s_Root + "/test", "held", held);
    s_Model = s_Root + "/tiny.cdm";
  }
  static void
  TearDownTestSuite()
  {
    fs::remove_all(s_Root);
  }

  /** Trains the shared tiny model on first use (each test runs in its own process under ctest). */
  static const Result &
  TrainedModel()
  {
    if (s_Train.ExitCode < 0)
    {
      s_Train = RunCdm("train --data " + s_Root +
                       "/data --target t1c --preset tiny --iterations 100 --seed 3 --device cpu --out " + s_Model);
    }
    return s_Train;
  }

  static std::string
  Held(const std::string & modality)
  {
    return s_Root + "/test/held/held-" + modality + ".nii.gz";
  }
  static std::string
  AllSources()
  {
    return "--source t1n=" + Held("t1n") + " --source t2w=" + Held("t2w") + " --source t2f=" + Held("t2f");
  }

  static std::string s_Root;
  static std::string s_Model;
  static Result      s_Train;
};
std::string CommandLine::s_Root;
std::string CommandLine::s_Model;
Result      CommandLine::s_Train;

TEST_F(CommandLine, TrainSynthesizeEvaluateEndToEnd)
{
  ASSERT_EQ(TrainedModel().ExitCode, 0) << s_Train.Output;
  EXPECT_TRUE(Contains(s_Train.Output, "stage finetune")) << s_Train.Output;
  EXPECT_TRUE(Contains(s_Train.Output, "val PSNR")) << s_Train.Output;
  ASSERT_TRUE(fs::exists(s_Model));

  const std::string output = s_Root + "/held-t1c-cdm.nii.gz";
  const Result      synthesis =
    RunCdm("synthesize --model " + s_Model + " " + AllSources() + " --output " + output + " --seed 1");
  ASSERT_EQ(synthesis.ExitCode, 0) << synthesis.Output;
  const cdm::Volume source = cdm::ReadVolume(Held("t1n"));
  const cdm::Volume result = cdm::ReadVolume(output);
  std::string       why;
  EXPECT_TRUE(cdm::SameGeometry(source, result, &why, 1e-6)) << why;
  EXPECT_EQ(result.Dimension, 3u);

  // Against the reference, CDM beats a constant image of the mean foreground intensity.
  const Result evaluation = RunCdm("evaluate --reference " + Held("t1c") + " --prediction " + output + " --json");
  ASSERT_EQ(evaluation.ExitCode, 0) << evaluation.Output;
  const nlohmann::json         figures = nlohmann::json::parse(evaluation.Output);
  cdm::Volume                  constant = cdm::ReadVolume(Held("t1c"));
  const cdm::NormalizationRule rule;
  const auto                   mask = rule.ForegroundMask(constant);
  double                       sum = 0.0, count = 0.0;
  for (size_t i = 0; i < mask.size(); ++i)
  {
    sum += mask[i] ? constant.Voxels[i] : 0.0;
    count += mask[i];
  }
  for (size_t i = 0; i < mask.size(); ++i)
  {
    constant.Voxels[i] = mask[i] ? static_cast<float>(sum / count) : 0.0f;
  }
  cdm::WriteVolume(constant, s_Root + "/constant.nii.gz");
  const nlohmann::json baseline = nlohmann::json::parse(
    RunCdm("evaluate --reference " + Held("t1c") + " --prediction " + s_Root + "/constant.nii.gz --json").Output);
  std::cout << "[ figures  ] CDM PSNR " << figures["psnr"] << " SSIM " << figures["ssim"] << "; constant PSNR "
            << baseline["psnr"] << " SSIM " << baseline["ssim"] << std::endl;
  EXPECT_GT(figures["psnr"].get<double>(), baseline["psnr"].get<double>() + 2.0);
  EXPECT_GT(figures["ssim"].get<double>(), baseline["ssim"].get<double>());

  // The same seed gives the same file; several samples give an uncertainty map.
  const std::string again = s_Root + "/again.nii.gz";
  ASSERT_EQ(
    RunCdm("synthesize --quiet --model " + s_Model + " " + AllSources() + " --output " + again + " --seed 1").ExitCode,
    0);
  EXPECT_EQ(cdm::ReadVolume(again).Voxels, result.Voxels);
  const std::string uncertainty = s_Root + "/uncertainty.nii.gz";
  const Result sampled = RunCdm("synthesize --quiet --model " + s_Model + " " + AllSources() + " --output " + again +
                                " --samples 3 --eta 1 --tile 16 --uncertainty " + uncertainty);
  ASSERT_EQ(sampled.ExitCode, 0) << sampled.Output;
  const cdm::Volume spread = cdm::ReadVolume(uncertainty);
  EXPECT_GT(*std::max_element(spread.Voxels.begin(), spread.Voxels.end()), 0.0f);
  EXPECT_GE(*std::min_element(spread.Voxels.begin(), spread.Voxels.end()), 0.0f);

  // An error map and a PNG montage: t1n | reference | synthesis | |error|.
  const std::string errorMap = s_Root + "/error.nii.gz";
  ASSERT_EQ(RunCdm("evaluate --reference " + Held("t1c") + " --prediction " + output + " --mask " + Held("t1n") +
                   " --error-map " + errorMap)
              .ExitCode,
            0);
  const cdm::Volume error = cdm::ReadVolume(errorMap);
  EXPECT_GT(*std::max_element(error.Voxels.begin(), error.Voxels.end()), 0.0f);
  const std::string png = s_Root + "/montage.png";
  const Result      montage =
    RunCdm("montage " + Held("t1n") + " " + Held("t1c") + " " + output + " --error " + errorMap + " --out " + png);
  ASSERT_EQ(montage.ExitCode, 0) << montage.Output;
  const cdm::Volume picture = cdm::ReadVolume(png);
  EXPECT_EQ(picture.Size[0], 4 * (32 + 2) - 2);
  EXPECT_EQ(picture.Size[1], 32);
  EXPECT_GT(*std::max_element(picture.Voxels.begin(), picture.Voxels.end()), 200.0f);

  const Result info = RunCdm("info " + s_Model);
  ASSERT_EQ(info.ExitCode, 0) << info.Output;
  EXPECT_TRUE(Contains(info.Output, "t1n, t2w, t2f -> t1c")) << info.Output;
  EXPECT_TRUE(Contains(info.Output, "\"format_version\": 1")) << info.Output;
}

TEST_F(CommandLine, RegionsBraSynAblationAndUncertaintyFaces)
{
  ASSERT_EQ(TrainedModel().ExitCode, 0) << s_Train.Output;
  const std::string output = s_Root + "/faces-t1c.nii.gz";
  const std::string spread = s_Root + "/faces-uncertainty.nii.gz";
  ASSERT_EQ(RunCdm("synthesize --quiet --model " + s_Model + " " + AllSources() + " --output " + output +
                   " --samples 3 --eta 1 --uncertainty " + spread)
              .ExitCode,
            0);
  // Region figures: the tumour and its enhancing part apart from the rest of the brain.
  const std::string common = "evaluate --reference " + Held("t1c") + " --prediction " + output + " --mask " +
                             Held("t1n") + " --segmentation " + Held("seg") + " --json";
  const Result regions = RunCdm(common + " --normalize gain --uncertainty " + spread);
  ASSERT_EQ(regions.ExitCode, 0) << regions.Output;
  const nlohmann::json figures = nlohmann::json::parse(regions.Output);
  for (const char * name : { "brain", "tumour", "enhancing", "non_tumour" })
  {
    ASSERT_TRUE(figures["regions"].contains(name)) << regions.Output;
  }
  EXPECT_EQ(figures["regions"]["tumour"]["voxels"].get<int64_t>() +
              figures["regions"]["non_tumour"]["voxels"].get<int64_t>(),
            figures["regions"]["brain"]["voxels"].get<int64_t>());
  EXPECT_EQ(figures["psnr"], figures["regions"]["brain"]["psnr"]);
  EXPECT_GE(figures["uncertainty"]["auroc_worst"].get<double>(), 0.0);
  EXPECT_LE(figures["uncertainty"]["auroc_worst"].get<double>(), 1.0);
  // BraSyn's protocol scores other figures than the default one, on [0, 1].
  const Result brasyn = RunCdm(common + " --protocol brasyn");
  ASSERT_EQ(brasyn.ExitCode, 0) << brasyn.Output;
  const nlohmann::json b = nlohmann::json::parse(brasyn.Output);
  EXPECT_EQ(b["protocol"], "brasyn");
  EXPECT_NE(b["regions"]["tumour"]["ssim"], figures["regions"]["tumour"]["ssim"]);
  // The text form prints one row per region.
  const Result table = RunCdm("evaluate --reference " + Held("t1c") + " --prediction " + output + " --mask " +
                              Held("t1n") + " --segmentation " + Held("seg"));
  EXPECT_TRUE(Contains(table.Output, "enhancing")) << table.Output;

  // Ablations of z: zero and oracle give images; oracle without a reference is refused, naming what it needs.
  const std::string zero = s_Root + "/faces-zero.nii.gz";
  ASSERT_EQ(RunCdm("synthesize --quiet --model " + s_Model + " " + AllSources() + " --output " + zero +
                   " --representation zero")
              .ExitCode,
            0);
  EXPECT_EQ(cdm::ReadVolume(zero).Size, cdm::ReadVolume(output).Size);
  const std::string oracle = s_Root + "/faces-oracle.nii.gz";
  ASSERT_EQ(RunCdm("synthesize --quiet --model " + s_Model + " " + AllSources() + " --output " + oracle +
                   " --representation oracle --reference " + Held("t1c"))
              .ExitCode,
            0);
  const Result refused = RunCdm("synthesize --quiet --model " + s_Model + " " + AllSources() + " --output " + oracle +
                                " --representation oracle");
  EXPECT_EQ(refused.ExitCode, 1) << refused.Output;
  EXPECT_TRUE(Contains(refused.Output, "reference")) << refused.Output;
  // A montage with an uncertainty panel has one more column.
  const std::string png = s_Root + "/faces.png";
  ASSERT_EQ(RunCdm("montage " + Held("t1c") + " " + output + " --uncertainty " + spread + " --out " + png).ExitCode, 0);
  EXPECT_EQ(cdm::ReadVolume(png).Size[0], 3 * (32 + 2) - 2);
}

TEST_F(CommandLine, TwoDimensionalSourcesGiveATwoDimensionalOutput)
{
  ASSERT_EQ(TrainedModel().ExitCode, 0) << s_Train.Output;
  const auto  slice = cdm::testing::MakeCase(31, { 40, 36, 1 });
  std::string arguments;
  for (const std::string m : { "t1n", "t2w", "t2f" })
  {
    cdm::WriteVolume(slice.at(m), s_Root + "/slice-" + m + ".nii.gz");
    arguments += " --source " + m + "=" + s_Root + "/slice-" + m + ".nii.gz";
  }
  const Result run =
    RunCdm("synthesize --quiet --model " + s_Model + arguments + " --output " + s_Root + "/slice-out.nii.gz");
  ASSERT_EQ(run.ExitCode, 0) << run.Output;
  const cdm::Volume out = cdm::ReadVolume(s_Root + "/slice-out.nii.gz");
  EXPECT_EQ(out.Dimension, 2u);
  EXPECT_EQ(out.Size, (std::array<int64_t, 3>{ 40, 36, 1 }));
  EXPECT_NEAR(out.Spacing[1], slice.at("t1n").Spacing[1], 1e-6); // NIfTI stores float32
}

TEST_F(CommandLine, BadSourcesAreRefusedNamingTheFile)
{
  ASSERT_EQ(TrainedModel().ExitCode, 0) << s_Train.Output;
  const std::string output = s_Root + "/refused.nii.gz";
  auto              images = cdm::testing::MakeCase(777);

  cdm::Volume respaced = images.at("t2w");
  respaced.Spacing = { 2.0, 2.0, 2.0 };
  cdm::WriteVolume(respaced, s_Root + "/respaced-t2w.nii.gz");
  Result r = RunCdm("synthesize --model " + s_Model + " --source t1n=" + Held("t1n") + " --source t2w=" + s_Root +
                    "/respaced-t2w.nii.gz --source t2f=" + Held("t2f") + " --output " + output);
  EXPECT_EQ(r.ExitCode, 1) << r.Output;
  EXPECT_TRUE(Contains(r.Output, "respaced-t2w.nii.gz") && Contains(r.Output, "spacing")) << r.Output;

  r = RunCdm("synthesize --model " + s_Model + " --source t1n=" + Held("t1n") + " --source t2w=" + Held("t2w") +
             " --output " + output);
  EXPECT_EQ(r.ExitCode, 1) << r.Output;
  EXPECT_TRUE(Contains(r.Output, "'t2f' is missing")) << r.Output;

  r = RunCdm("synthesize --model " + s_Model + " " + AllSources() + " --source flair=" + Held("t2f") + " --output " +
             output);
  EXPECT_EQ(r.ExitCode, 1) << r.Output;
  EXPECT_TRUE(Contains(r.Output, "'flair'") && Contains(r.Output, "expected t1n, t2w, t2f")) << r.Output;

  cdm::Volume broken = images.at("t2f");
  broken.Voxels[100] = std::numeric_limits<float>::infinity();
  // NRRD keeps non-finite values (NIfTI's reader library, niftilib, replaces them with 0 on reading).
  cdm::WriteVolume(broken, s_Root + "/broken-t2f.nrrd");
  r = RunCdm("synthesize --model " + s_Model + " --source t1n=" + Held("t1n") + " --source t2w=" + Held("t2w") +
             " --source t2f=" + s_Root + "/broken-t2f.nrrd --output " + output);
  EXPECT_EQ(r.ExitCode, 1) << r.Output;
  EXPECT_TRUE(Contains(r.Output, "broken-t2f.nrrd") && Contains(r.Output, "non-finite")) << r.Output;

  r = RunCdm("synthesize --model " + s_Root + "/absent.cdm " + AllSources() + " --output " + output);
  EXPECT_EQ(r.ExitCode, 1) << r.Output;
  EXPECT_TRUE(Contains(r.Output, "absent.cdm")) << r.Output;

  r = RunCdm("synthesize --model " + s_Model + " " + AllSources() + " --output " + output + " --device cuda:9");
  EXPECT_EQ(r.ExitCode, 1) << r.Output;
  EXPECT_TRUE(Contains(r.Output, "cuda:9")) << r.Output;
  EXPECT_FALSE(fs::exists(output)) << "a refused run left an output file";
}

// Where the results go is checked at the start: a 3D synthesis takes minutes on a CPU and a training hours, and each
// used to end in an error about its output (or, for NIfTI, in niftilib's console message and "could not be flushed").
TEST_F(CommandLine, UnwritableOutputsAreRefusedBeforeAnyWork)
{
  ASSERT_EQ(TrainedModel().ExitCode, 0) << s_Train.Output;
  const std::string absent = s_Root + "/no-such-folder";
  const std::string synthesize = "synthesize --model " + s_Model + " " + AllSources();
  const auto        refused = [](const Result & r, const std::vector<std::string> & words) {
    EXPECT_EQ(r.ExitCode, 1) << r.Output;
    for (const auto & word : words)
    {
      EXPECT_TRUE(Contains(r.Output, word)) << word << " not in: " << r.Output;
    }
    // Refused before the model ran: no progress was printed.
    EXPECT_FALSE(Contains(r.Output, "%")) << r.Output;
  };
  refused(RunCdm(synthesize + " --output " + absent + "/t1c.nii.gz"),
          { "--output", absent + "/t1c.nii.gz", "does not exist" });
  refused(RunCdm(synthesize + " --stream-divisions 2 --output " + absent + "/t1c.mha"),
          { "--output", "does not exist" });
  refused(RunCdm(synthesize + " --output " + s_Root + "/t1c.xyz"), { "--output", "t1c.xyz", "expected .nii.gz" });
  refused(RunCdm(synthesize + " --output " + s_Root), { "--output", "is a folder" });
  refused(RunCdm(synthesize + " --output " + s_Root + "/fine.nii.gz --uncertainty " + absent + "/spread.nii.gz"),
          { "--uncertainty", "does not exist" });
  refused(RunCdm(synthesize + " --output " + s_Root + "/fine.nii.gz --timing " + absent + "/timing.json"),
          { "--timing", "does not exist" });
  EXPECT_FALSE(fs::exists(s_Root + "/fine.nii.gz"));
  refused(RunCdm("segment --model " + s_Model + " " + AllSources() + " --output " + absent + "/seg.nii.gz"),
          { "--output", "does not exist" });
  const Result train = RunCdm("train --data " + s_Root + "/data --target t1c --preset tiny --iterations 100 --seed 3 " +
                              "--device cpu --out " + absent + "/model.cdm");
  refused(train, { "--out", absent + "/model.cdm", "does not exist" });
  EXPECT_FALSE(Contains(train.Output, "[cdm train]")) << train.Output; // no iteration ran
}

// ITK's NIfTI reader fills the voxels a cut-short file lacks with zeros, and reads a 4D series or complex voxels as if
// they were a volume; each is refused naming the file (issue 14).
TEST_F(CommandLine, CutShortFourDimensionalAndComplexImagesAreRefusedNamingTheFile)
{
  ASSERT_EQ(TrainedModel().ExitCode, 0) << s_Train.Output;
  const std::string output = s_Root + "/never.nii.gz";
  const auto        bytesOf = [](const std::string & path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  };
  const auto writeBytes = [](const std::string & path, const std::string & bytes) {
    std::ofstream(path, std::ios::binary) << bytes;
  };
  const auto synthesizeFrom = [&](const std::string & t2f) {
    return RunCdm("synthesize --quiet --model " + s_Model + " --source t1n=" + Held("t1n") +
                  " --source t2w=" + Held("t2w") + " --source t2f=" + t2f + " --output " + output);
  };
  // Each damaged t2f fails the run with exit code 1 and a message naming the file and the problem.
  const auto expectRefused = [&](const std::string & t2f, const std::string & name, const std::string & problem) {
    const Result r = synthesizeFrom(t2f);
    EXPECT_EQ(r.ExitCode, 1) << r.Output;
    EXPECT_TRUE(Contains(r.Output, name) && Contains(r.Output, problem)) << r.Output;
  };
  const std::string whole = s_Root + "/whole-t2f.nii";
  cdm::WriteVolume(cdm::ReadVolume(Held("t2f")), whole);
  const Result complete = synthesizeFrom(whole); // the complete copy is read
  ASSERT_EQ(complete.ExitCode, 0) << complete.Output;
  fs::remove(output);

  const std::string half = s_Root + "/half-t2f.nii";
  const std::string plain = bytesOf(whole);
  writeBytes(half, plain.substr(0, plain.size() / 2));
  expectRefused(half, "half-t2f.nii", "cut short");

  const std::string compressed = bytesOf(Held("t2f"));
  const std::string cut = s_Root + "/cut-t2f.nii.gz";
  writeBytes(cut, compressed.substr(0, compressed.size() * 2 / 3));
  expectRefused(cut, "cut-t2f.nii.gz", "");

  std::string flipped = compressed; // the gzip trailer's CRC-32 no longer matches the data
  flipped[flipped.size() - 6] = static_cast<char>(flipped[flipped.size() - 6] ^ 0x5a);
  const std::string corrupt = s_Root + "/crc-t2f.nii.gz";
  writeBytes(corrupt, flipped);
  expectRefused(corrupt, "crc-t2f.nii.gz", "damaged");

  const std::string fourD = s_Root + "/series-t2f.nii.gz";
  WriteZeroImage<itk::Image<float, 4>>({ { 8, 8, 4, 2 } }, fourD);
  expectRefused(fourD, "series-t2f.nii.gz", "dimensions");

  const std::string complexPath = s_Root + "/complex-t2f.nii.gz";
  WriteZeroImage<itk::Image<std::complex<float>, 3>>({ { 8, 8, 4 } }, complexPath);
  expectRefused(complexPath, "complex-t2f.nii.gz", "scalar");

  // Headers that claim what no image has: a grid of 10^15 voxels (refused before anything is allocated), a zero
  // voxel size.
  const std::string huge = s_Root + "/huge-t2f.mha";
  writeBytes(huge,
             "ObjectType = Image\nNDims = 3\nDimSize = 100000 100000 100000\nElementType = MET_FLOAT\n"
             "ElementDataFile = LOCAL\n");
  expectRefused(huge, "huge-t2f.mha", "more than this machine's memory");
  const std::string hollow = s_Root + "/hollow-t2f.mha"; // 4 GB declared, well within memory, by a 100-byte file
  writeBytes(hollow,
             "ObjectType = Image\nNDims = 3\nDimSize = 1000 1000 1000\nElementType = MET_FLOAT\n"
             "ElementDataFile = LOCAL\n");
  expectRefused(hollow, "hollow-t2f.mha", "too few for them");
  const std::string flat = s_Root + "/flat-t2f.mha";
  writeBytes(flat,
             "ObjectType = Image\nNDims = 3\nDimSize = 2 2 2\nElementSpacing = 1 0 1\nElementType = MET_FLOAT\n"
             "ElementDataFile = LOCAL\n" +
               std::string(32, '\0'));
  expectRefused(flat, "flat-t2f.mha", "spacing");
  EXPECT_FALSE(fs::exists(output)) << "a refused run left an output file";
}

TEST_F(CommandLine, SegmenterTrainsSegmentsAndEvaluateScoresItsDice)
{
  const std::string root = s_Root + "/segmentation";
  for (int i = 0; i < 4; ++i)
  {
    cdm::Volume labels;
    auto        images = cdm::testing::MakeCase(300 + i, { 32, 32, 6 }, &labels);
    images["seg"] = labels;
    WriteCase(root + "/data", "case" + std::to_string(i), images);
  }
  const std::string model = root + "/seg.cdm";
  const Result      train = RunCdm("train --data " + root +
                              "/data --model-kind segmenter --preset tiny --iterations 30 "
                                   "--validation-interval 30 --seed 2 --device cpu --out " +
                              model);
  ASSERT_EQ(train.ExitCode, 0) << train.Output;
  EXPECT_TRUE(Contains(train.Output, "tumour labels from t1n,t1c,t2w,t2f")) << train.Output;
  EXPECT_TRUE(Contains(train.Output, "val Dice ET")) << train.Output;
  EXPECT_TRUE(Contains(RunCdm("info " + model).Output, "-> tumour labels"));

  const std::string labels = root + "/held-seg.nii.gz";
  const std::string sources = AllSources() + " --source t1c=" + Held("t1c");
  const Result      segment = RunCdm("segment --quiet --model " + model + " " + sources + " --output " + labels);
  ASSERT_EQ(segment.ExitCode, 0) << segment.Output;
  // Written as 8-bit labels on the sources' grid.
  auto io = itk::ImageIOFactory::CreateImageIO(labels.c_str(), itk::IOFileModeEnum::ReadMode);
  ASSERT_TRUE(io);
  io->SetFileName(labels);
  io->ReadImageInformation();
  EXPECT_EQ(io->GetComponentType(), itk::IOComponentEnum::UCHAR);
  EXPECT_EQ(cdm::ReadVolume(labels).Size, cdm::ReadVolume(Held("t1n")).Size);

  const Result dice =
    RunCdm("evaluate --segmentation-reference " + Held("seg") + " --segmentation " + labels + " --json");
  ASSERT_EQ(dice.ExitCode, 0) << dice.Output;
  const nlohmann::json figures = nlohmann::json::parse(dice.Output);
  for (const char * region : { "enhancing_tumour", "tumour_core", "whole_tumour" })
  {
    const double value = figures.at("dice").at(region);
    EXPECT_TRUE(value >= 0.0 && value <= 1.0) << region << " " << value;
  }
  const Result same = RunCdm("evaluate --segmentation-reference " + Held("seg") + " --segmentation " + Held("seg"));
  EXPECT_TRUE(Contains(same.Output, "Dice whole tumour (WT)     1.0000")) << same.Output;

  // What each refuses: labels without a prediction, a synthesis model asked to segment, a segmenter given a target.
  const Result noPrediction = RunCdm("evaluate --segmentation-reference " + Held("seg"));
  EXPECT_EQ(noPrediction.ExitCode, 1);
  EXPECT_TRUE(Contains(noPrediction.Output, "--segmentation")) << noPrediction.Output;
  ASSERT_EQ(TrainedModel().ExitCode, 0) << s_Train.Output;
  const Result notSegmenter =
    RunCdm("segment --quiet --model " + s_Model + " " + AllSources() + " --output " + root + "/never.nii.gz");
  EXPECT_EQ(notSegmenter.ExitCode, 1);
  EXPECT_TRUE(Contains(notSegmenter.Output, "expected a segmenter")) << notSegmenter.Output;
  EXPECT_FALSE(fs::exists(root + "/never.nii.gz"));
  const Result target =
    RunCdm("train --data " + root + "/data --model-kind segmenter --target t1c --out " + root + "/never.cdm");
  EXPECT_EQ(target.ExitCode, 1);
  EXPECT_TRUE(Contains(target.Output, "a segmenter predicts the tumour labels")) << target.Output;
  const Result missing =
    RunCdm("segment --quiet --model " + model + " " + AllSources() + " --output " + root + "/never.nii.gz");
  EXPECT_EQ(missing.ExitCode, 1);
  EXPECT_TRUE(Contains(missing.Output, "'t1c' is missing")) << missing.Output;
  EXPECT_EQ(RunCdm("segment --quiet --missing-as-zero --model " + model + " " + AllSources() + " --output " + root +
                   "/zeros.nii.gz")
              .ExitCode,
            0);
}

TEST_F(CommandLine, UsageErrorsExitWithTwoAndHelpWithZero)
{
  EXPECT_EQ(RunCdm("").ExitCode, 2);
  EXPECT_EQ(RunCdm("train").ExitCode, 2);
  EXPECT_EQ(RunCdm("synthesize --model m.cdm").ExitCode, 2);
  EXPECT_EQ(RunCdm("train --data x --target t1c --out y --preset enormous").ExitCode, 2);
  EXPECT_EQ(RunCdm("frobnicate").ExitCode, 2);
  for (const std::string command :
       { "train", "synthesize", "segment", "impute", "evaluate", "phantom", "montage", "info" })
  {
    const Result help = RunCdm(command + " --help");
    EXPECT_EQ(help.ExitCode, 0) << command;
    EXPECT_TRUE(Contains(help.Output, "Usage")) << help.Output;
  }
}

TEST_F(CommandLine, TrainingReportsAndSkipsUnusableCases)
{
  const std::string root = s_Root + "/mixed";
  WriteCase(root, "good0", cdm::testing::MakeCase(1));
  WriteCase(root, "good1", cdm::testing::MakeCase(2));
  auto incomplete = cdm::testing::MakeCase(3);
  incomplete.erase("t2f");
  WriteCase(root, "incomplete", incomplete);
  auto misaligned = cdm::testing::MakeCase(4);
  misaligned["t1c"].Origin[0] += 10.0;
  WriteCase(root, "misaligned", misaligned);
  const Result r = RunCdm("train --data " + root +
                          " --target t1c --iterations 2 --validation-interval 2 --device cpu --out " + root + "/m.cdm");
  ASSERT_EQ(r.ExitCode, 0) << r.Output;
  EXPECT_TRUE(Contains(r.Output, "skipped case incomplete: missing incomplete-t2f.nii.gz")) << r.Output;
  EXPECT_TRUE(Contains(r.Output, "skipped case misaligned") && Contains(r.Output, "origin differs")) << r.Output;
  EXPECT_TRUE(Contains(r.Output, "2 case(s)")) << r.Output;
  const Result none = RunCdm("train --data " + root + "/good0 --target t1c --out " + root + "/n.cdm");
  EXPECT_EQ(none.ExitCode, 1) << none.Output;
}

TEST_F(CommandLine, SigintSavesACheckpointAndResumeFinishes)
{
  const std::string output = s_Root + "/interrupted.cdm";
  const std::string log = s_Root + "/interrupted.log";
  const pid_t       child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0)
  {
    std::freopen(log.c_str(), "w", stdout);
    const std::string data = s_Root + "/data";
    ::execl(CDM_EXECUTABLE,
            "cdm",
            "train",
            "--data",
            data.c_str(),
            "--target",
            "t1c",
            "--iterations",
            "100000",
            "--checkpoint-interval",
            "100000",
            "--device",
            "cpu",
            "--out",
            output.c_str(),
            static_cast<char *>(nullptr));
    ::_exit(127);
  }
  // Wait for the first progress line, then interrupt as Ctrl-C would.
  bool started = false;
  for (int i = 0; i < 1200 && !started; ++i)
  {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    std::ifstream     in(log);
    const std::string text{ std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>() };
    started = Contains(text, "stage mrm");
  }
  ASSERT_TRUE(started);
  ::kill(child, SIGINT);
  int status = 0;
  ::waitpid(child, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 130);
  EXPECT_TRUE(fs::exists(cdm::CheckpointPath(output)));
  EXPECT_FALSE(fs::exists(output));

  const Result resumed =
    RunCdm("train --data " + s_Root + "/data --target t1c --iterations 3 --resume --device cpu --out " + output);
  ASSERT_EQ(resumed.ExitCode, 0) << resumed.Output;
  EXPECT_TRUE(fs::exists(output));
}
} // namespace
