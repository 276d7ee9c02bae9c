/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
// Real LibTorch training of the `tiny` preset on generated multi-contrast cases.
#include "cdmError.h"
#include "cdmMetrics.h"
#include "cdmModel.h"
#include "cdmSafetensors.h"
#include "cdmTestData.h"
#include "cdmTrainer.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <map>

namespace
{
namespace fs = std::filesystem;

cdm::TrainingOptions
TinyOptions(const std::string & output, int iterations)
{
  cdm::TrainingOptions options;
  options.Output = output;
  options.Iterations = iterations;
  options.Device = cdm::testing::TestDevice();
  options.Seed = 42;
  options.ValidationInterval = iterations;
  options.CheckpointInterval = 25;
  options.ValidationFraction = 0.25;
  return options;
}

/** PSNR inside the reference's foreground of a synthesis against the reference, each normalised by the rule
 *  (an unseen modality's intensity unit is arbitrary in MR, so absolute units cannot be predicted). */
double
NormalisedPSNR(const cdm::Volume & reference, const cdm::Volume & prediction)
{
  const cdm::NormalizationRule rule = cdm::EvaluationRule();
  cdm::Volume                  r = reference, p = prediction;
  rule.Apply(r.Voxels, rule.ComputeScale(reference));
  rule.Apply(p.Voxels, rule.ComputeScale(prediction)); // each by its own rule, as `cdm evaluate` does
  const auto mask = rule.ForegroundMask(reference);
  return cdm::CompareImages(r.Voxels, p.Voxels, r.Size, 1.0, &mask).PSNR;
}

TEST(Training, TinyModelLowersEveryStageLossAndBeatsTheConstantBaseline)
{
  const std::string         directory = cdm::testing::MakeTemporaryDirectory("training");
  const cdm::Dataset        data = cdm::testing::MakeDataset(8, 100);
  const auto                options = TinyOptions(directory + "/tiny.cdm", 120);
  const cdm::TrainingReport report = cdm::Train(data, options);
  ASSERT_FALSE(report.Interrupted);
  ASSERT_EQ(report.Stages.size(), 4u);
  for (const auto & stage : report.Stages)
  {
    EXPECT_LT(stage.LastLoss, stage.FirstLoss) << "stage " << stage.Stage;
    EXPECT_TRUE(std::isfinite(stage.LastLoss));
    std::cout << "[ stage    ] " << stage.Stage << " loss " << stage.FirstLoss << " -> " << stage.LastLoss
              << ", validation PSNR " << stage.ValidationPSNR << " dB, SSIM " << stage.ValidationSSIM << ", "
              << stage.Seconds << " s" << std::endl;
  }
  std::cout << "[ baseline ] constant image: PSNR " << report.ConstantBaselinePSNR << " dB, SSIM "
            << report.ConstantBaselineSSIM << "; training " << report.Seconds << " s" << std::endl;
  EXPECT_GT(report.Stages.back().ValidationPSNR, report.ConstantBaselinePSNR + 3.0);
  EXPECT_GT(report.Stages.back().ValidationSSIM, report.ConstantBaselineSSIM);

  // The written model synthesizes a held-out case better than its constant image.
  const cdm::Model model = cdm::Model::Load(options.Output, cdm::testing::TestDevice());
  EXPECT_NE(model.Config().ProvenanceJson.find("\"seed\":42"), std::string::npos);
  auto              sources = cdm::testing::MakeCase(999);
  const cdm::Volume reference = sources.at("t1c");
  sources.erase("t1c");
  const cdm::SynthesisResult   result = model.Synthesize(sources);
  cdm::Volume                  constant = reference;
  const cdm::NormalizationRule rule;
  const auto                   mask = rule.ForegroundMask(reference);
  double                       sum = 0.0;
  int64_t                      count = 0;
  for (size_t i = 0; i < mask.size(); ++i)
  {
    sum += mask[i] ? reference.Voxels[i] : 0.0;
    count += mask[i];
  }
  std::fill(constant.Voxels.begin(), constant.Voxels.end(), static_cast<float>(sum / count));
  const double cdmPsnr = NormalisedPSNR(reference, result.Image);
  const double constantPsnr = NormalisedPSNR(reference, constant);
  std::cout << "[ held-out ] CDM PSNR " << cdmPsnr << " dB vs constant " << constantPsnr << " dB" << std::endl;
  EXPECT_GT(cdmPsnr, constantPsnr + 3.0);
  fs::remove_all(directory);
}

TEST(Training, InterruptedAndResumedRunEndsWithTheSameWeights)
{
  const std::string  directory = cdm::testing::MakeTemporaryDirectory("resume");
  const cdm::Dataset data = cdm::testing::MakeDataset(4, 7);
  auto               straight = TinyOptions(directory + "/straight.cdm", 12);
  straight.CheckpointInterval = 5;
  ASSERT_FALSE(cdm::Train(data, straight).Interrupted);

  // The same run, stopped mid-way through the C-UNet stage as SIGINT would, then resumed.
  auto interrupted = straight;
  interrupted.Output = directory + "/interrupted.cdm";
  std::atomic<bool> stop{ false };
  const auto        progress = [&](const cdm::TrainingProgress & p) {
    if (p.Stage == "cunet" && p.Iteration == 7)
    {
      stop = true;
    }
  };
  const cdm::TrainingReport first = cdm::Train(data, interrupted, progress, &stop);
  ASSERT_TRUE(first.Interrupted);
  EXPECT_EQ(first.Stages.back().Stage, "cunet");
  EXPECT_EQ(first.Stages.back().LastIteration, 7);
  EXPECT_FALSE(fs::exists(interrupted.Output));
  ASSERT_TRUE(fs::exists(cdm::CheckpointPath(interrupted.Output)));

  interrupted.Resume = true;
  const cdm::TrainingReport second = cdm::Train(data, interrupted);
  ASSERT_FALSE(second.Interrupted);
  ASSERT_EQ(second.Stages.size(), 3u); // cunet (from its checkpoint), mdn, finetune
  EXPECT_EQ(second.Stages[0].FirstIteration, 7);

  const auto a = cdm::safetensors::Read(straight.Output);
  const auto b = cdm::safetensors::Read(interrupted.Output);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i)
  {
    ASSERT_EQ(a[i].first, b[i].first);
    EXPECT_TRUE(a[i].second.equal(b[i].second)) << a[i].first << " differs after resuming";
  }

  // A resume that changes what shapes the result, or the data, is refused naming what differs.
  const auto refusalNames =
    [&](const cdm::Dataset & resumedData, const cdm::TrainingOptions & resumed, const std::string & option) {
      try
      {
        cdm::Train(resumedData, resumed);
        ADD_FAILURE() << "a resume with another " << option << " was accepted";
      }
      catch (const cdm::InputError & error)
      {
        EXPECT_NE(std::string(error.what()).find(option), std::string::npos) << error.what();
      }
    };
  auto reseeded = interrupted;
  reseeded.Seed += 1;
  refusalNames(data, reseeded, "--seed");
  auto otherRate = interrupted;
  otherRate.LearningRate = 0.123;
  refusalNames(data, otherRate, "--learning-rate");
  auto decayed = interrupted;
  decayed.LearningRateDecayAt = 0.5;
  refusalNames(data, decayed, "--lr-decay");
  refusalNames(cdm::testing::MakeDataset(4, 8), interrupted, "--data");
  // Training longer is what resuming is for: more iterations are accepted.
  auto longer = interrupted;
  longer.Iterations += 1;
  EXPECT_NO_THROW(cdm::Train(data, longer));

  // A checkpoint made for another task is refused.
  auto other = interrupted;
  other.Target = "t2f";
  other.Sources = { "t1n", "t1c", "t2w" };
  EXPECT_THROW(cdm::Train(data, other), cdm::InputError);
  auto absent = interrupted;
  absent.Output = directory + "/never-trained.cdm";
  EXPECT_THROW(cdm::Train(data, absent), cdm::InputError);
  fs::remove_all(directory);
}

TEST(Training, ThreeDimensionalModelTrainsOnPatches)
{
  const std::string  directory = cdm::testing::MakeTemporaryDirectory("training3d");
  const cdm::Dataset data = cdm::testing::MakeDataset(3, 50, { 20, 20, 12 });
  auto               options = TinyOptions(directory + "/tiny3d.cdm", 6);
  options.Dimension = 3;
  options.PatchSize = 16;
  options.BatchSize = 2;
  const cdm::TrainingReport report = cdm::Train(data, options);
  ASSERT_EQ(report.Stages.size(), 4u);
  const cdm::Model model = cdm::Model::Load(options.Output, cdm::testing::TestDevice());
  EXPECT_EQ(model.Config().Dimension, 3u);
  auto sources = cdm::testing::MakeCase(60, { 20, 20, 12 });
  sources.erase("t1c");
  const cdm::SynthesisResult result = model.Synthesize(sources);
  EXPECT_EQ(result.Image.Size, (std::array<int64_t, 3>{ 20, 20, 12 }));
  for (const float v : result.Image.Voxels)
  {
    ASSERT_TRUE(std::isfinite(v));
  }
  fs::remove_all(directory);
}

TEST(Training, StageIterationsSplitOneBudgetOverTheStages)
{
  const cdm::Dataset data = cdm::testing::MakeDataset(3, 3);
  const std::string  directory = cdm::testing::MakeTemporaryDirectory("stages");
  auto               options = TinyOptions(directory + "/m.cdm", 4);
  options.StageIterations = { { "cunet", 7 }, { "mdn", 2 } };
  const cdm::TrainingReport report = cdm::Train(data, options);
  ASSERT_EQ(report.Stages.size(), 4u);
  const std::map<std::string, int> expected{ { "mrm", 4 }, { "cunet", 7 }, { "mdn", 2 }, { "finetune", 4 } };
  for (const auto & stage : report.Stages)
  {
    EXPECT_EQ(stage.LastIteration, expected.at(stage.Stage)) << stage.Stage;
  }
  fs::remove_all(directory);
}

TEST(Training, ALearningRateStepToZeroFreezesTheWeightsFromItsIteration)
{
  // Adam at a zero rate moves nothing: 4 iterations that step to 0 after half of them end with the weights of 2.
  const std::string  directory = cdm::testing::MakeTemporaryDirectory("lr-step");
  const cdm::Dataset data = cdm::testing::MakeDataset(4, 9);
  auto               stepped = TinyOptions(directory + "/stepped.cdm", 4);
  stepped.ModelKind = "unet";
  stepped.LearningRateDecayAt = 0.5;
  stepped.LearningRateDecayFactor = 0.0;
  auto shorter = stepped;
  shorter.Output = directory + "/shorter.cdm";
  shorter.Iterations = 2;
  shorter.ValidationInterval = 2;
  shorter.LearningRateDecayAt = 0.0;
  auto constant = stepped;
  constant.Output = directory + "/constant.cdm";
  constant.LearningRateDecayAt = 0.0;
  for (const auto * options : { &stepped, &shorter, &constant })
  {
    ASSERT_FALSE(cdm::Train(data, *options).Interrupted);
  }
  const auto a = cdm::safetensors::Read(stepped.Output);
  const auto b = cdm::safetensors::Read(shorter.Output);
  const auto c = cdm::safetensors::Read(constant.Output);
  ASSERT_EQ(a.size(), b.size());
  bool anyMoved = false; // the constant rate's last two iterations do move the weights
  for (size_t i = 0; i < a.size(); ++i)
  {
    EXPECT_TRUE(a[i].second.equal(b[i].second)) << a[i].first << " moved at a zero learning rate";
    anyMoved = anyMoved || !a[i].second.equal(c[i].second);
  }
  EXPECT_TRUE(anyMoved);
  fs::remove_all(directory);
}

TEST(Training, BadOptionsAreRefused)
{
  const cdm::Dataset data = cdm::testing::MakeDataset(2, 1);
  auto               options = TinyOptions("/tmp/cdm-never.cdm", 5);
  options.Stage = "everything";
  EXPECT_THROW(cdm::Train(data, options), cdm::InputError);
  options = TinyOptions("", 5);
  EXPECT_THROW(cdm::Train(data, options), cdm::InputError);
  options = TinyOptions("/tmp/cdm-never.cdm", 5);
  options.Target = "pd";
  EXPECT_THROW(cdm::Train(data, options), cdm::InputError);
  options = TinyOptions("/tmp/cdm-never.cdm", 5);
  options.StageIterations = { { "decoder", 3 } };
  EXPECT_THROW(cdm::Train(data, options), cdm::InputError);
  options.StageIterations = { { "cunet", 0 } };
  EXPECT_THROW(cdm::Train(data, options), cdm::InputError);
  options = TinyOptions("/tmp/cdm-never.cdm", 5);
  options.LearningRateDecayAt = 1.0; // a fraction of the iterations: 1 would never decay
  EXPECT_THROW(cdm::Train(data, options), cdm::InputError);
  options.LearningRateDecayAt = 0.5;
  options.LearningRateDecayFactor = -0.2;
  EXPECT_THROW(cdm::Train(data, options), cdm::InputError);
  options = TinyOptions("/tmp/cdm-never.cdm", 5);
  options.Device = "cuda:7";
  if (!cdm::CudaAvailable())
  {
    EXPECT_THROW(cdm::Train(data, options), cdm::InputError);
  }
}
} // namespace

namespace
{
/** The baselines train and run through the same code paths as CDM. */
class Baselines : public ::testing::TestWithParam<std::string>
{};

TEST_P(Baselines, TrainLowerTheLossAndSynthesizeRepeatably)
{
  const std::string  kind = GetParam();
  const std::string  directory = cdm::testing::MakeTemporaryDirectory("baseline-" + kind);
  const cdm::Dataset data = cdm::testing::MakeDataset(6, 100);
  auto               options = TinyOptions(directory + "/" + kind + ".cdm", 150);
  options.ModelKind = kind;
  const cdm::TrainingReport report = cdm::Train(data, options);
  ASSERT_EQ(report.Stages.size(), 1u);
  EXPECT_EQ(report.Stages[0].Stage, kind);
  EXPECT_LT(report.Stages[0].LastLoss, report.Stages[0].FirstLoss);
  std::cout << "[ " << kind << " ] loss " << report.Stages[0].FirstLoss << " -> " << report.Stages[0].LastLoss
            << ", validation PSNR " << report.Stages[0].ValidationPSNR << " dB (constant image "
            << report.ConstantBaselinePSNR << " dB), " << report.Seconds << " s" << std::endl;
  if (kind == "unet")
  {
    EXPECT_GT(report.Stages[0].ValidationPSNR, report.ConstantBaselinePSNR);
  }

  const cdm::Model model = cdm::Model::Load(options.Output, cdm::testing::TestDevice());
  EXPECT_EQ(model.Config().ModelKind, kind);
  auto sources = cdm::testing::MakeCase(999);
  sources.erase("t1c");
  cdm::SynthesisOptions synthesis;
  synthesis.Seed = 3;
  const cdm::SynthesisResult a = model.Synthesize(sources, synthesis);
  const cdm::SynthesisResult b = model.Synthesize(sources, synthesis);
  EXPECT_EQ(a.Image.Voxels, b.Image.Voxels);
  EXPECT_EQ(a.Image.Size, sources.at("t1n").Size);
  for (const float v : a.Image.Voxels)
  {
    ASSERT_TRUE(std::isfinite(v));
  }
  // A region equals the same part of the whole synthesis (ddim computes whole slices, then crops).
  const cdm::Representation representation = model.SampleRepresentation(sources, synthesis);
  cdm::Region               region;
  region.Index = { 3, 5, 1 };
  region.Size = { 20, 17, 4 };
  const cdm::SynthesisResult part = model.SynthesizeRegion(sources, representation, region, synthesis);
  const auto &               whole = a.Image;
  double                     difference = 0.0;
  for (int64_t z = 0; z < region.Size[2]; ++z)
    for (int64_t y = 0; y < region.Size[1]; ++y)
      for (int64_t x = 0; x < region.Size[0]; ++x)
      {
        const float w = whole.Voxels[static_cast<size_t>(
          (x + region.Index[0]) + whole.Size[0] * ((y + region.Index[1]) + whole.Size[1] * (z + region.Index[2])))];
        const float p = part.Image.Voxels[static_cast<size_t>(x + region.Size[0] * (y + region.Size[1] * z))];
        difference = std::max(difference, static_cast<double>(std::abs(w - p)));
      }
  const auto [low, high] = std::minmax_element(whole.Voxels.begin(), whole.Voxels.end());
  EXPECT_LE(difference / (*high - *low), 1e-5);
  if (kind == "ddim")
  {
    synthesis.Seed = 4;
    EXPECT_NE(model.Synthesize(sources, synthesis).Image.Voxels, a.Image.Voxels);
  }
  EXPECT_THROW(model.Encode(sources.at("t1n")), cdm::InputError);
  fs::remove_all(directory);
}

INSTANTIATE_TEST_SUITE_P(Kinds, Baselines, ::testing::Values("unet", "ddim"));
} // namespace
