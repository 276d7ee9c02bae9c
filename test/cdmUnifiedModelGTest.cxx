/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
// One model for any missing modality (issue 13): it synthesizes each of its targets from the others, is steered by
// the requested target, refuses what it cannot do, keeps its targets in the model file, and trains.
#include "cdmError.h"
#include "cdmMetrics.h"
#include "cdmModel.h"
#include "cdmSafetensors.h"
#include "cdmTestData.h"
#include "cdmTrainer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

namespace
{
namespace fs = std::filesystem;

const std::vector<std::string> AllModalities{ "t1n", "t1c", "t2w", "t2f" };

cdm::Model
TinyUnifiedModel()
{
  const cdm::Model model = cdm::Model::Create(
    cdm::ModelConfig::UnifiedFromPreset("tiny", 2, AllModalities, AllModalities), 3, cdm::testing::TestDevice());
  cdm::testing::RandomizeFilm(model, 4); // so that the guidance (z and the target's embedding) shapes the output
  return model;
}


TEST(UnifiedModel, SynthesizesTheTargetTheSourcesLackAndTheOneAskedFor)
{
  const cdm::Model model = TinyUnifiedModel();
  EXPECT_TRUE(model.Config().IsUnified());
  EXPECT_EQ(model.Config().SynthesizedModalities(), AllModalities);
  const auto images = cdm::testing::MakeCase(21, { 24, 24, 3 });
  for (const std::string & target : AllModalities)
  {
    cdm::SourceVolumes sources = images;
    sources.erase(target);
    // Not named: the one the sources lack.
    EXPECT_EQ(model.SampleRepresentation(sources).Target, target);
    const cdm::SynthesisResult result = model.Synthesize(sources, {});
    EXPECT_EQ(result.Image.Size, images.at(target).Size);
    cdm::SynthesisOptions named;
    named.Target = target;
    EXPECT_EQ(model.Synthesize(sources, named).Image.Voxels, result.Image.Voxels);
  }
  // From the same two sources, the requested target steers the synthesis.
  const cdm::SourceVolumes two{ { "t1n", images.at("t1n") }, { "t2w", images.at("t2w") } };
  cdm::SynthesisOptions    t1c, t2f;
  t1c.Target = "t1c";
  t2f.Target = "t2f";
  EXPECT_GT(cdm::testing::MaxDifference(model.Synthesize(two, t1c).Image, model.Synthesize(two, t2f).Image), 1e-4);
  EXPECT_EQ(model.SampleRepresentation(two, t2f).Target, "t2f");
}

TEST(UnifiedModel, RefusesATargetItCannotSynthesizeOrThatIsGiven)
{
  const cdm::Model   model = TinyUnifiedModel();
  const auto         images = cdm::testing::MakeCase(22, { 24, 24, 3 });
  cdm::SourceVolumes sources = images;
  sources.erase("t1c");
  cdm::SynthesisOptions options;
  options.Target = "pd";
  EXPECT_NE(cdm::testing::InputErrorOf([&] {
              model.Synthesize(sources, options);
            }).find("'pd' is not one this model synthesizes"),
            std::string::npos);
  options.Target = "t2w";
  EXPECT_NE(
    cdm::testing::InputErrorOf([&] { model.Synthesize(sources, options); }).find("'t2w' is also given as a source"),
    std::string::npos);
  sources.erase("t2f"); // two gaps: the target must be named
  EXPECT_NE(cdm::testing::InputErrorOf([&] { model.Synthesize(sources, {}); }).find("name the target"),
            std::string::npos);

  // A per-target model takes only its own target.
  const cdm::Model single = cdm::Model::Create(
    cdm::ModelConfig::FromPreset("tiny", 2, { "t1n", "t2w", "t2f" }, "t1c"), 1, cdm::testing::TestDevice());
  cdm::SourceVolumes three = images;
  three.erase("t1c");
  options.Target = "t2f";
  EXPECT_NE(cdm::testing::InputErrorOf([&] { single.SampleRepresentation(three, options); }).find("expected t1c"),
            std::string::npos);
  options.Target = "t1c";
  EXPECT_EQ(single.SampleRepresentation(three, options).Target, "t1c");
  // Unified configurations that make no sense are refused.
  EXPECT_THROW(cdm::ModelConfig::UnifiedFromPreset("tiny", 2, { "t1n", "t2w" }, { "t1c", "t2f" }), cdm::InputError);
  EXPECT_THROW(cdm::ModelConfig::UnifiedFromPreset("tiny", 2, AllModalities, { "t1c" }), cdm::InputError);
}

TEST(UnifiedModel, TheModelFileKeepsItsTargetsAsFormatVersion2)
{
  const std::string directory = cdm::testing::MakeTemporaryDirectory("unified-file");
  const cdm::Model  model = TinyUnifiedModel();
  model.Save(directory + "/unified.cdm");
  const cdm::Model loaded = cdm::Model::Load(directory + "/unified.cdm", cdm::testing::TestDevice());
  EXPECT_EQ(loaded.Config().Targets, AllModalities);
  EXPECT_EQ(loaded.Config().TargetScales, model.Config().TargetScales);
  EXPECT_EQ(loaded.NumberOfParameters(), model.NumberOfParameters());
  auto sources = cdm::testing::MakeCase(23, { 24, 24, 3 });
  sources.erase("t2w");
  EXPECT_EQ(loaded.Synthesize(sources).Image.Voxels, model.Synthesize(sources).Image.Voxels);

  cdm::safetensors::Header header;
  cdm::safetensors::Read(directory + "/unified.cdm", &header);
  EXPECT_NE(header.Metadata.at("cdm").find("\"format_version\":2"), std::string::npos);
  // A per-target model is still written as version 1, which readers from before unified models accept.
  const cdm::Model single = cdm::Model::Create(
    cdm::ModelConfig::FromPreset("tiny", 2, { "t1n", "t2w", "t2f" }, "t1c"), 1, cdm::testing::TestDevice());
  single.Save(directory + "/single.cdm");
  cdm::safetensors::Read(directory + "/single.cdm", &header);
  EXPECT_NE(header.Metadata.at("cdm").find("\"format_version\":1"), std::string::npos);
  fs::remove_all(directory);
}

TEST(UnifiedModel, TrainsOneModelForEveryTarget)
{
  const std::string    directory = cdm::testing::MakeTemporaryDirectory("unified-training");
  const cdm::Dataset   data = cdm::testing::MakeDataset(6, 500);
  cdm::TrainingOptions options;
  options.Output = directory + "/unified.cdm";
  options.Sources = AllModalities;
  options.Targets = AllModalities;
  options.Iterations = 60;
  options.ValidationInterval = 60;
  options.CheckpointInterval = 60;
  options.ValidationFraction = 0.34;
  options.Device = cdm::testing::TestDevice();
  options.Seed = 8;
  const cdm::TrainingReport report = cdm::Train(data, options);
  ASSERT_EQ(report.Stages.size(), 4u);
  for (const auto & stage : report.Stages)
  {
    EXPECT_LT(stage.LastLoss, stage.FirstLoss) << "stage " << stage.Stage;
  }
  const cdm::Model model = cdm::Model::Load(options.Output, cdm::testing::TestDevice());
  ASSERT_TRUE(model.Config().IsUnified());
  for (const std::string & target : AllModalities)
  {
    // Each target's output scale is its own (the median of the training cases' scales).
    EXPECT_GT(model.Config().TargetScales.at(target), 0.0) << target;
    auto sources = cdm::testing::MakeCase(900, { 32, 32, 6 });
    sources.erase(target);
    const cdm::SynthesisResult result = model.Synthesize(sources);
    EXPECT_TRUE(
      std::all_of(result.Image.Voxels.begin(), result.Image.Voxels.end(), [](float v) { return std::isfinite(v); }));
  }
  fs::remove_all(directory);
}
} // namespace
