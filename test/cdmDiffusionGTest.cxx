/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#include "cdmError.h"
#include "cdmModelImpl.h"
#include "cdmTestData.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace
{
cdm::DiffusionConfig
LongSchedule()
{
  cdm::DiffusionConfig config;
  config.Schedule = "linear";
  config.TrainSteps = 1000;
  config.SamplingSteps = 50;
  config.BetaStart = 1e-4;
  config.BetaEnd = 2e-2;
  return config;
}

TEST(DiffusionSchedule, DiffIRScheduleIsLinearInSqrtBetaAndAlphaBarDecreases)
{
  const cdm::DiffusionSchedule schedule{ cdm::DiffusionConfig{} };
  ASSERT_EQ(schedule.TrainSteps(), 4);
  EXPECT_NEAR(schedule.Betas().front(), 0.1, 1e-12);
  EXPECT_NEAR(schedule.Betas().back(), 0.99, 1e-12);
  EXPECT_NEAR(std::sqrt(schedule.Betas()[1]) - std::sqrt(schedule.Betas()[0]),
              std::sqrt(schedule.Betas()[2]) - std::sqrt(schedule.Betas()[1]),
              1e-12);
  for (const auto & config : { cdm::DiffusionConfig{}, LongSchedule() })
  {
    const cdm::DiffusionSchedule s(config);
    double                       previous = 1.0;
    for (int t = 0; t < s.TrainSteps(); ++t)
    {
      EXPECT_LT(s.AlphaBar(t), previous) << "t = " << t;
      EXPECT_GT(s.AlphaBar(t), 0.0);
      previous = s.AlphaBar(t);
    }
    EXPECT_LT(s.AlphaBar(s.TrainSteps() - 1), 0.01); // z_T is (almost) pure noise
  }
}

TEST(DiffusionSchedule, StridedTimestepsDescendFromTheLastStep)
{
  const cdm::DiffusionSchedule schedule(LongSchedule());
  const std::vector<int>       steps = schedule.SamplingTimesteps(50);
  ASSERT_EQ(steps.size(), 50u);
  EXPECT_EQ(steps.front(), 999);
  for (size_t i = 1; i < steps.size(); ++i)
  {
    EXPECT_EQ(steps[i - 1] - steps[i], 20);
  }
  EXPECT_EQ(cdm::DiffusionSchedule(cdm::DiffusionConfig{}).SamplingTimesteps(4), (std::vector<int>{ 3, 2, 1, 0 }));
}

TEST(DiffusionSchedule, QSampleHasTheForwardProcessMeanAndVariance)
{
  const cdm::DiffusionSchedule schedule(LongSchedule());
  torch::manual_seed(5);
  const int64_t    draws = 400000;
  const at::Tensor z0 = torch::full({ draws }, 0.7);
  for (const int t : { 0, 250, 999 })
  {
    const at::Tensor zt = schedule.QSample(z0, t, torch::randn({ draws }));
    const double     abar = schedule.AlphaBar(t);
    EXPECT_NEAR(zt.mean().item<double>(), std::sqrt(abar) * 0.7, 0.006) << "t = " << t;
    EXPECT_NEAR(zt.var().item<double>(), 1.0 - abar, 0.01 * std::max(0.05, 1.0 - abar)) << "t = " << t;
  }
}

TEST(DiffusionSchedule, DeterministicStepWithTheTrueCleanSampleStaysOnTheForwardPath)
{
  // DDIM (eta = 0): z_t = sqrt(abar_t) z0 + sqrt(1 - abar_t) eps  ->  z_s = sqrt(abar_s) z0 + sqrt(1 - abar_s) eps.
  const cdm::DiffusionSchedule schedule(LongSchedule());
  torch::manual_seed(1);
  const at::Tensor z0 = torch::randn({ 64 });
  const at::Tensor eps = torch::randn({ 64 });
  const at::Tensor zt = schedule.QSample(z0, 600, eps);
  const at::Tensor zs = schedule.Step(zt, z0, 600, 300, 0.0, {});
  EXPECT_TRUE(torch::allclose(zs, schedule.QSample(z0, 300, eps), 1e-5, 1e-5));
  EXPECT_TRUE(torch::equal(schedule.Step(zt, z0, 600, -1, 0.0, {}), z0));
}

TEST(DiffusionSampling, SeedsRepeatAndDifferentSeedsDiffer)
{
  const cdm::Model model = cdm::Model::Create(
    cdm::ModelConfig::FromPreset("tiny", 2, { "t1n", "t2w", "t2f" }, "t1c"), 3, cdm::testing::TestDevice());
  auto sources = cdm::testing::MakeCase(11);
  sources.erase("t1c");
  cdm::SynthesisOptions options;
  options.Seed = 1;
  const cdm::Representation a = model.SampleRepresentation(sources, options);
  const cdm::Representation b = model.SampleRepresentation(sources, options);
  EXPECT_EQ(a.Values, b.Values);
  EXPECT_EQ(a.Cells, 6); // one z per slice for a 2D model on a volume
  options.Seed = 2;
  const cdm::Representation c = model.SampleRepresentation(sources, options);
  EXPECT_NE(a.Values, c.Values);
  // K samples start from K different noises; eta > 0 adds further seeded noise.
  options.Samples = 3;
  const cdm::Representation k = model.SampleRepresentation(sources, options);
  ASSERT_EQ(k.Values.size(), 3 * a.Values.size());
  EXPECT_NE(std::vector<float>(k.Values.begin(), k.Values.begin() + static_cast<std::ptrdiff_t>(a.Values.size())),
            std::vector<float>(k.Values.begin() + static_cast<std::ptrdiff_t>(a.Values.size()),
                               k.Values.begin() + static_cast<std::ptrdiff_t>(2 * a.Values.size())));
  options.Samples = 1;
  options.Seed = 1;
  options.Eta = 1.0;
  const cdm::Representation stochastic1 = model.SampleRepresentation(sources, options);
  const cdm::Representation stochastic2 = model.SampleRepresentation(sources, options);
  EXPECT_EQ(stochastic1.Values, stochastic2.Values);
  EXPECT_NE(stochastic1.Values, a.Values);
}
} // namespace
