/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
// What fidelity rests on: tumour-aware training batches, the representation ablations, and a tiny real training
// in which tumour-aware sampling lowers the error inside the tumour.
#include "cdmError.h"
#include "cdmMetrics.h"
#include "cdmModel.h"
#include "cdmModelImpl.h"
#include "cdmTestData.h"
#include "cdmTrainer.h"
#include "cdmTrainingBatch.h"
#include "cdmTrainingStages.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <numeric>

namespace
{

/** Share of the items of `batches` whose centre voxel lies in the tumour. */
double
ShareCentredOnTumour(const cdm::PatchSampler & sampler, int batches, uint64_t seed)
{
  std::mt19937_64 random(seed);
  int64_t         hits = 0, items = 0;
  for (int b = 0; b < batches; ++b)
  {
    std::vector<uint64_t> seeds;
    for (int i = 0; i < 8; ++i)
    {
      seeds.push_back(random());
    }
    const cdm::Batch batch = sampler.Sample(seeds);
    for (int64_t i = 0; i < batch.Tumour.size(0); ++i)
    {
      const at::Tensor tumour = batch.Tumour[i][0];
      hits += tumour[tumour.size(0) / 2][tumour.size(1) / 2].item<float>() > 0.5f ? 1 : 0;
      ++items;
    }
  }
  return static_cast<double>(hits) / static_cast<double>(items);
}

TEST(Fidelity, TumourSamplerCentresItsConfiguredShareOfPatchesOnTheTumour)
{
  const cdm::Dataset data = cdm::testing::MakeDataset(4, 7, { 48, 48, 6 }, true);
  const cdm::Model   model = cdm::Model::Create(
    cdm::ModelConfig::FromPreset("tiny", 2, { "t1n", "t2w", "t2f" }, "t1c"), 1, cdm::testing::TestDevice());
  std::vector<size_t> cases(data.Cases().size());
  std::iota(cases.begin(), cases.end(), 0);
  // Patches of 16 on 48x48 slices: a uniform crop rarely centres on the lesion.
  const cdm::PatchSampler uniform(data, cases, model.GetImpl(), 16, 0.0);
  const cdm::PatchSampler aware(data, cases, model.GetImpl(), 16, 0.75);
  ASSERT_TRUE(aware.HasTumour());
  const double chance = ShareCentredOnTumour(uniform, 60, 3);
  const double share = ShareCentredOnTumour(aware, 60, 3);
  std::cout << "[ sampler  ] centred on the tumour: uniform " << chance << ", tumour fraction 0.75 -> " << share
            << std::endl;
  EXPECT_LT(chance, 0.3);
  // Expected: 0.75 on the tumour, plus the uniform quarter's chance hits (480 items: +-0.06 is about 3 sigma).
  EXPECT_NEAR(share, 0.75 + 0.25 * chance, 0.06);
  // Cases without a segmentation take uniform draws only.
  const cdm::Dataset      plain = cdm::testing::MakeDataset(2, 7, { 48, 48, 6 }, false);
  const cdm::PatchSampler none(plain, { 0, 1 }, model.GetImpl(), 16, 0.75);
  EXPECT_FALSE(none.HasTumour());
  EXPECT_THROW(cdm::PatchSampler(data, cases, model.GetImpl(), 16, 1.5), cdm::InputError);
}

TEST(Fidelity, SynthesisLossWeighsTheTumourAndSquaresWhenAsked)
{
  // Four voxels, one of them tumour, where the prediction errs by 2.
  cdm::Batch batch;
  batch.Target = torch::zeros({ 1, 1, 2, 2 });
  batch.Tumour = torch::tensor({ 1.0f, 0.0f, 0.0f, 0.0f }).view({ 1, 1, 2, 2 });
  const at::Tensor prediction = batch.Tumour * 2.0;
  EXPECT_FLOAT_EQ(cdm::SynthesisLoss(prediction, batch, 0.0, "l1").Value().item<float>(), 0.5f);
  EXPECT_FLOAT_EQ(cdm::SynthesisLoss(prediction, batch, 0.0, "l2").Value().item<float>(), 1.0f);
  // Weight 3: the tumour voxel counts 4 times among 7.
  EXPECT_FLOAT_EQ(cdm::SynthesisLoss(prediction, batch, 3.0, "l1").Value().item<float>(), 8.0f / 7.0f);
  EXPECT_FLOAT_EQ(cdm::SynthesisLoss(prediction, batch, 3.0, "l2").Value().item<float>(), 16.0f / 7.0f);
  // An unknown loss is refused by name when the stages are defined.
  const cdm::Model model =
    cdm::Model::Create(cdm::ModelConfig::FromPreset("tiny", 2, { "t1n" }, "t1c"), 1, cdm::testing::TestDevice());
  cdm::TrainingOptions options;
  options.SynthesisLoss = "huber";
  EXPECT_THROW(cdm::DefineStages(model.GetImpl(), options), cdm::InputError);
}

/** A tiny cdm model whose Condition Embedding (FiLM) is non-zero, so that z changes the synthesis. */
cdm::Model
ModelWithActiveFilm()
{
  const cdm::Model model = cdm::Model::Create(
    cdm::ModelConfig::FromPreset("tiny", 2, { "t1n", "t2w", "t2f" }, "t1c"), 5, cdm::testing::TestDevice());
  torch::NoGradGuard noGrad;
  torch::manual_seed(11);
  for (auto & [name, tensor] : model.GetImpl().NamedParameters())
  {
    if (name.rfind("unet.", 0) == 0 && name.find(".film.") != std::string::npos)
    {
      tensor.normal_(0.0, 0.3);
    }
  }
  return model;
}

TEST(Fidelity, RepresentationAblationsReplaceZAsTheyName)
{
  const cdm::Model  model = ModelWithActiveFilm();
  auto              sources = cdm::testing::MakeCase(21, { 32, 32, 4 });
  const cdm::Volume reference = sources.at("t1c");
  const cdm::Volume other = cdm::testing::MakeCase(22, { 32, 32, 4 }).at("t1c");
  sources.erase("t1c");
  const cdm::Representation sampled = model.SampleRepresentation(sources);
  const auto                synthesize = [&](const cdm::Representation & z) {
    return model.SynthesizeRegion(sources, z, cdm::Region{}).Image;
  };
  const cdm::Volume fromSampled = synthesize(sampled);

  // sampled: unchanged.
  EXPECT_EQ(model.ReplaceRepresentation(sampled, "sampled", nullptr).Values, sampled.Values);
  // zero: zeros, the same cells and source scales, and another image.
  const cdm::Representation zero = model.ReplaceRepresentation(sampled, "zero", nullptr);
  EXPECT_EQ(zero.Cells, sampled.Cells);
  EXPECT_EQ(zero.SourceScales, sampled.SourceScales);
  EXPECT_TRUE(std::all_of(zero.Values.begin(), zero.Values.end(), [](float v) { return v == 0.0f; }));
  EXPECT_GT(cdm::testing::MaxDifference(synthesize(zero), fromSampled), 1e-3);
  // oracle: the MRM encoding of the reference, which differs from another case's.
  const cdm::Representation oracle = model.ReplaceRepresentation(sampled, "oracle", &reference);
  EXPECT_EQ(oracle.Values, model.Encode(reference).Values);
  const cdm::Representation shuffled = model.ReplaceRepresentation(sampled, "oracle", &other);
  EXPECT_GT(cdm::testing::MaxDifference(synthesize(oracle), synthesize(shuffled)), 1e-4);
  // Refusals: unknown mode, oracle without a reference, a reference of another shape.
  EXPECT_THROW(model.ReplaceRepresentation(sampled, "random", nullptr), cdm::InputError);
  EXPECT_THROW(model.ReplaceRepresentation(sampled, "oracle", nullptr), cdm::InputError);
  const cdm::Volume thicker = cdm::testing::MakeCase(23, { 32, 32, 6 }).at("t1c");
  EXPECT_THROW(model.ReplaceRepresentation(sampled, "oracle", &thicker), cdm::InputError);

  // With a zero Condition Embedding, z has no effect: the ablation measures the C-UNet, not itself.
  const cdm::Model fresh = cdm::Model::Create(model.Config(), 5, cdm::testing::TestDevice());
  {
    torch::NoGradGuard noGrad;
    for (auto & [name, tensor] : fresh.GetImpl().NamedParameters())
    {
      if (name.rfind("unet.", 0) == 0 && name.find(".film.") != std::string::npos)
      {
        tensor.zero_();
      }
    }
  }
  const cdm::Representation freshSampled = fresh.SampleRepresentation(sources);
  EXPECT_EQ(
    cdm::testing::MaxDifference(
      fresh.SynthesizeRegion(sources, freshSampled, cdm::Region{}).Image,
      fresh.SynthesizeRegion(sources, fresh.ReplaceRepresentation(freshSampled, "zero", nullptr), cdm::Region{}).Image),
    0.0);
}

/** Mean absolute error inside the tumour of a unet trained with the given tumour share, on held-out cases. */
double
TumourErrorAfterTraining(double tumourFraction, const std::string & directory)
{
  const cdm::Dataset   data = cdm::testing::MakeDataset(8, 300, { 48, 48, 4 }, true);
  cdm::TrainingOptions options;
  options.ModelKind = "unet";
  options.Output = directory + "/unet-" + std::to_string(tumourFraction) + ".cdm";
  options.Iterations = 150;
  options.Device = cdm::testing::TestDevice();
  options.Seed = 9;
  options.PatchSize = 16;
  options.BatchSize = 8;
  options.ValidationInterval = 150;
  options.CheckpointInterval = 1000;
  options.TumourFraction = tumourFraction;
  cdm::Train(data, options);
  const cdm::Model model = cdm::Model::Load(options.Output, cdm::testing::TestDevice());
  double           error = 0.0;
  for (uint64_t seed = 900; seed < 904; ++seed)
  {
    cdm::Volume labels;
    auto        sources = cdm::testing::MakeCase(seed, { 48, 48, 4 }, &labels);
    cdm::Volume reference = sources.at("t1c");
    sources.erase("t1c");
    cdm::Volume prediction = model.Synthesize(sources).Image;
    // Both on the evaluation rule, the prediction by its best gain (as `cdm evaluate --normalize gain`).
    const cdm::NormalizationRule rule = cdm::EvaluationRule();
    cdm::Volume                  brain = sources.at("t1n");
    rule.Apply(reference.Voxels, rule.ComputeScale(reference));
    rule.Apply(prediction.Voxels, 1.0 / cdm::LeastSquaresGain(reference, prediction, &brain));
    error += cdm::CompareRegions(reference, prediction, 1.0, brain, &labels).at("tumour").MAE / 4.0;
  }
  return error;
}

TEST(Fidelity, TumourAwareSamplingLowersTheErrorInsideTheTumour)
{
  const std::string directory = cdm::testing::MakeTemporaryDirectory("fidelity");
  const double      uniform = TumourErrorAfterTraining(0.0, directory);
  const double      aware = TumourErrorAfterTraining(0.8, directory);
  std::cout << "[ tumour   ] MAE inside the tumour: uniform sampling " << uniform << ", tumour-aware " << aware
            << std::endl;
  EXPECT_LT(aware, 0.9 * uniform);
  std::filesystem::remove_all(directory);
}

} // namespace
