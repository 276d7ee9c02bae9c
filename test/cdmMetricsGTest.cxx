/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#include "cdmDataset.h"
#include "cdmError.h"
#include "cdmMetrics.h"
#include "cdmNormalization.h"
#include "cdmTestData.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

namespace
{
TEST(Metrics, IdenticalImagesArePerfect)
{
  const auto              case0 = cdm::testing::MakeCase(1);
  const cdm::Volume &     image = case0.at("t2w");
  const cdm::ImageMetrics m = cdm::CompareVolumes(image, image, 1000.0);
  EXPECT_TRUE(std::isinf(m.PSNR));
  EXPECT_NEAR(m.SSIM, 1.0, 1e-9);
  EXPECT_EQ(m.MAE, 0.0);
}

TEST(Metrics, PsnrAndMaeFollowTheirDefinitionsInsideTheMask)
{
  const std::array<int64_t, 3> size{ 20, 10, 1 };
  std::vector<float>           reference(200, 0.5f), prediction(200, 0.5f);
  std::vector<uint8_t>         mask(200, 0);
  for (int i = 0; i < 100; ++i)
  {
    prediction[static_cast<size_t>(i)] = 0.6f; // error 0.1 in the first half
    mask[static_cast<size_t>(i)] = 1;
  }
  const cdm::ImageMetrics inside = cdm::CompareImages(reference, prediction, size, 1.0, &mask);
  EXPECT_NEAR(inside.PSNR, 20.0, 1e-4); // 10 log10(1 / 0.01)
  EXPECT_NEAR(inside.MAE, 0.1, 1e-6);
  EXPECT_EQ(inside.Voxels, 100);
  const cdm::ImageMetrics everywhere = cdm::CompareImages(reference, prediction, size, 1.0);
  EXPECT_NEAR(everywhere.PSNR, 20.0 + 10.0 * std::log10(2.0), 1e-4);
  const std::vector<uint8_t> emptyMask(200, 0);
  EXPECT_THROW(cdm::CompareImages(reference, prediction, size, 1.0, &emptyMask), cdm::InputError);
  EXPECT_THROW(cdm::CompareImages(reference, std::vector<float>(10), size, 1.0), cdm::InputError);
}

TEST(Metrics, SsimFallsWithNoiseAndBlur)
{
  const auto                   case0 = cdm::testing::MakeCase(4, { 48, 48, 1 });
  cdm::Volume                  reference = case0.at("t1n");
  const cdm::NormalizationRule rule;
  rule.Apply(reference.Voxels, rule.ComputeScale(reference));
  cdm::Volume                     slightlyNoisy = reference, noisy = reference;
  std::mt19937                    random(3);
  std::normal_distribution<float> noise(0.0f, 1.0f);
  for (size_t i = 0; i < reference.Voxels.size(); ++i)
  {
    const float n = noise(random);
    slightlyNoisy.Voxels[i] += 0.02f * n;
    noisy.Voxels[i] += 0.2f * n;
  }
  const double a = cdm::CompareVolumes(reference, slightlyNoisy, 1.0).SSIM;
  const double b = cdm::CompareVolumes(reference, noisy, 1.0).SSIM;
  EXPECT_LT(a, 1.0);
  EXPECT_GT(a, b);
  EXPECT_GT(b, 0.0);
}

TEST(Metrics, LeastSquaresGainUndoesAGlobalScaleInsideTheMask)
{
  cdm::Volume reference;
  reference.Size = { 8, 6, 2 };
  reference.Allocate();
  std::mt19937 random(5);
  for (float & v : reference.Voxels)
  {
    v = std::uniform_real_distribution<float>(0.1f, 1.0f)(random);
  }
  cdm::Volume prediction = reference;
  cdm::Volume mask = reference.EmptyCopy("mask");
  for (size_t i = 0; i < prediction.Voxels.size(); ++i)
  {
    const bool inside = i % 3 != 0;
    mask.Voxels[i] = inside ? 1.0f : 0.0f;
    // 0.25 x the reference inside the mask; anything outside must not matter.
    prediction.Voxels[i] = inside ? 0.25f * reference.Voxels[i] : 100.0f;
  }
  EXPECT_NEAR(cdm::LeastSquaresGain(reference, prediction, &mask), 4.0, 1e-5);
  EXPECT_GT(std::abs(cdm::LeastSquaresGain(reference, prediction) - 4.0), 1.0);
  cdm::Volume zero = reference.EmptyCopy("zero prediction");
  EXPECT_THROW(cdm::LeastSquaresGain(reference, zero, &mask), cdm::InputError);
}

TEST(Normalization, ScaleFollowsTheIntensityUnitAndZeroStaysZero)
{
  const auto  case0 = cdm::testing::MakeCase(5);
  cdm::Volume image = case0.at("t2f");
  cdm::Volume scaled = image;
  for (float & v : scaled.Voxels)
  {
    v *= 10.0f;
  }
  const cdm::NormalizationRule rule;
  const double                 scale = rule.ComputeScale(image);
  EXPECT_NEAR(rule.ComputeScale(scaled) / scale, 10.0, 1e-3);
  std::vector<float> a = image.Voxels, b = scaled.Voxels;
  rule.Apply(a, scale);
  rule.Apply(b, rule.ComputeScale(scaled));
  for (size_t i = 0; i < a.size(); ++i)
  {
    ASSERT_NEAR(a[i], b[i], 1e-4);
    if (image.Voxels[i] == 0.0f)
    {
      ASSERT_EQ(a[i], 0.0f);
    }
    ASSERT_LE(a[i], rule.Clip);
  }
  cdm::Volume empty = image.EmptyCopy("empty.nii.gz");
  EXPECT_THROW(rule.ComputeScale(empty), cdm::InputError);
}

TEST(Dataset, CasesThatDisagreeInGeometryOrHoldNonFiniteVoxelsAreRefused)
{
  cdm::Dataset data;
  auto         good = cdm::testing::MakeCase(1);
  data.AddCase("good", good);
  EXPECT_EQ(data.Cases().size(), 1u);
  auto shifted = good;
  shifted["t2w"].Origin[1] += 5.0;
  try
  {
    data.AddCase("shifted", shifted);
    ADD_FAILURE() << "a case with a shifted origin was accepted";
  }
  catch (const cdm::InputError & e)
  {
    EXPECT_NE(std::string(e.what()).find("origin"), std::string::npos) << e.what();
  }
  auto respaced = good;
  respaced["t1n"].Spacing[0] = 2.0;
  EXPECT_THROW(data.AddCase("respaced", respaced), cdm::InputError);
  auto turned = good;
  turned["t2f"].Direction = { 1, 0, 0, 0, 1, 0, 0, 0, 1 };
  EXPECT_THROW(data.AddCase("turned", turned), cdm::InputError);
  auto broken = good;
  broken["t1c"].Voxels[17] = std::nanf("");
  try
  {
    data.AddCase("broken", broken);
    ADD_FAILURE() << "a NaN voxel was accepted";
  }
  catch (const cdm::InputError & e)
  {
    EXPECT_NE(std::string(e.what()).find("non-finite"), std::string::npos) << e.what();
  }
  EXPECT_EQ(data.Cases().size(), 1u);
}

TEST(Dataset, ScanReportsCasesThatLackAFileByName)
{
  namespace fs = std::filesystem;
  const std::string root = cdm::testing::MakeTemporaryDirectory("scan");
  for (const std::string name : { "BraTS-001", "BraTS-002", "BraTS-003" })
  {
    fs::create_directories(root + "/" + name);
    for (const std::string m : { "t1n", "t1c", "t2w", "t2f" })
    {
      if (name == "BraTS-002" && m == "t2f")
      {
        continue;
      }
      std::ofstream(root + "/" + name + "/" + name + "-" + m + (m == "t1n" ? ".nii" : ".nii.gz")) << "x";
    }
  }
  const cdm::DatasetScan scan = cdm::ScanBraTSFolder(root, { "t1n", "t1c", "t2w", "t2f" });
  ASSERT_EQ(scan.Cases.size(), 2u);
  EXPECT_EQ(scan.Cases[0].Name, "BraTS-001");
  EXPECT_EQ(scan.Cases[1].Name, "BraTS-003");
  ASSERT_EQ(scan.Skipped.size(), 1u);
  EXPECT_NE(scan.Skipped[0].find("BraTS-002: missing BraTS-002-t2f"), std::string::npos) << scan.Skipped[0];
  EXPECT_THROW(cdm::ScanBraTSFolder(root + "/absent", { "t1n" }), cdm::InputError);
  // A reader failure is reported by case name, never silently used.
  const cdm::Dataset data = cdm::Dataset::Load(
    scan, [](const std::string & path) -> cdm::Volume { throw cdm::InputError("cannot read image '" + path + "'"); });
  EXPECT_TRUE(data.Cases().empty());
  ASSERT_EQ(data.Skipped().size(), 3u);
  EXPECT_NE(data.Skipped()[1].find("BraTS-001: cannot read image"), std::string::npos) << data.Skipped()[1];
  fs::remove_all(root);
}

/** A 1 x 1 x n volume holding the given values. */
cdm::Volume
Line(const std::vector<float> & values, const std::string & name)
{
  cdm::Volume v;
  v.Dimension = 3;
  v.Size = { static_cast<int64_t>(values.size()), 1, 1 };
  v.Voxels = values;
  v.Description = name;
  return v;
}

TEST(Metrics, BraSynNormalisationClipsToTheBrainPercentilesAndScalesToUnitRange)
{
  // 201 brain voxels 0..200 and one outlier outside the brain: the 0.5/99.5 percentiles are 1 and 199.
  std::vector<float> values, brainValues;
  for (int i = 0; i <= 200; ++i)
  {
    values.push_back(static_cast<float>(i));
    brainValues.push_back(1.0f);
  }
  values.push_back(5000.0f);
  brainValues.push_back(0.0f);
  cdm::Volume       image = Line(values, "image");
  const cdm::Volume brain = Line(brainValues, "brain");
  cdm::BraSynNormalize(image, brain);
  EXPECT_FLOAT_EQ(image.Voxels[0], 0.0f);   // below the 0.5th percentile: clipped to 0
  EXPECT_FLOAT_EQ(image.Voxels[1], 0.0f);   // the 0.5th percentile itself
  EXPECT_FLOAT_EQ(image.Voxels[100], 0.5f); // (100 - 1) / (199 - 1)
  EXPECT_FLOAT_EQ(image.Voxels[200], 1.0f); // above the 99.5th: clipped to 1
  EXPECT_FLOAT_EQ(image.Voxels[201], 0.0f); // outside the brain
  cdm::Volume empty = Line(values, "image");
  EXPECT_THROW(cdm::BraSynNormalize(empty, Line(std::vector<float>(values.size(), 0.0f), "nothing")), cdm::InputError);
}

TEST(Metrics, RegionFiguresSeparateTheTumourFromTheRestOfTheBrain)
{
  // Ten brain voxels; the prediction errs by 0.1 on the two enhancing voxels only.
  const cdm::Volume reference = Line({ 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.0f }, "ref");
  const cdm::Volume prediction = Line({ 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.6f, 0.6f, 0.0f }, "pred");
  const cdm::Volume brain = Line({ 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0 }, "brain");
  const cdm::Volume labels = Line({ 0, 0, 0, 0, 0, 2, 2, 1, 3, 3, 0 }, "seg");
  const auto        regions = cdm::CompareRegions(reference, prediction, 1.0, brain, &labels);
  ASSERT_EQ(regions.size(), 4u);
  EXPECT_NEAR(regions.at("brain").MAE, 0.02, 1e-6);    // 0.2 over 10 voxels
  EXPECT_NEAR(regions.at("tumour").MAE, 0.04, 1e-6);   // 0.2 over 5 voxels
  EXPECT_NEAR(regions.at("enhancing").MAE, 0.1, 1e-6); // both enhancing voxels err
  EXPECT_NEAR(regions.at("enhancing").PSNR, 20.0, 1e-4);
  EXPECT_EQ(regions.at("non_tumour").MAE, 0.0);
  EXPECT_EQ(regions.at("tumour").Voxels, 5);
  EXPECT_EQ(regions.at("non_tumour").Voxels, 5);
  // Without a segmentation only the brain; a region without voxels is left out.
  EXPECT_EQ(cdm::CompareRegions(reference, prediction, 1.0, brain).size(), 1u);
  const cdm::Volume noEnhancing = Line({ 0, 0, 0, 0, 0, 2, 2, 1, 1, 1, 0 }, "seg");
  EXPECT_EQ(cdm::CompareRegions(reference, prediction, 1.0, brain, &noEnhancing).count("enhancing"), 0u);
}

TEST(Metrics, UncertaintyThatRanksTheErrorsScoresOneAndItsReverseZero)
{
  std::vector<float> reference(100, 1.0f), prediction(100), brain(100, 1.0f), faithful(100), reversed(100);
  for (int i = 0; i < 100; ++i)
  {
    prediction[i] = 1.0f + 0.01f * static_cast<float>(i); // |error| grows with i
    faithful[i] = 0.5f * static_cast<float>(i);           // any increasing map of |error|
    reversed[i] = static_cast<float>(100 - i);
  }
  const cdm::Volume r = Line(reference, "ref"), p = Line(prediction, "pred"), m = Line(brain, "brain");
  const auto        good = cdm::CompareUncertainty(r, p, Line(faithful, "std"), m, 0.1);
  EXPECT_NEAR(good.Spearman, 1.0, 1e-9);
  EXPECT_NEAR(good.AUROC, 1.0, 1e-9);
  const auto bad = cdm::CompareUncertainty(r, p, Line(reversed, "std"), m, 0.1);
  EXPECT_NEAR(bad.Spearman, -1.0, 1e-9);
  EXPECT_NEAR(bad.AUROC, 0.0, 1e-9);
  // A flat map carries no ranking: AUROC one half.
  const auto flat = cdm::CompareUncertainty(r, p, Line(std::vector<float>(100, 0.0f), "std"), m, 0.1);
  EXPECT_NEAR(flat.AUROC, 0.5, 1e-9);
  EXPECT_EQ(good.Voxels, 100);
  EXPECT_THROW(cdm::CompareUncertainty(r, p, Line(faithful, "std"), m, 0.0), cdm::InputError);
}

TEST(Metrics, NamedIntensityRulesAreThePercentileAndTheMedianOnes)
{
  const cdm::NormalizationRule percentile = cdm::NormalizationRule::Named("percentile");
  EXPECT_EQ(percentile.UpperPercentile, cdm::NormalizationRule{}.UpperPercentile); // the default
  EXPECT_EQ(percentile.Clip, 1.5);
  const cdm::NormalizationRule median = cdm::NormalizationRule::Named("median");
  EXPECT_EQ(median.UpperPercentile, 50.0);
  EXPECT_EQ(median.Clip, 4.0);
  // The median maps to 1 whatever the bright tail: a tenth of the voxels made 10x brighter leave it in place.
  std::vector<float> values;
  for (int i = 1; i <= 100; ++i)
  {
    values.push_back(i <= 90 ? 1.0f + 0.001f * static_cast<float>(i) : 10.0f);
  }
  const cdm::Volume line = Line(values, "line");
  EXPECT_NEAR(median.ComputeScale(line), 1.0505, 1e-3);
  EXPECT_GT(percentile.ComputeScale(line), 9.0);
  EXPECT_THROW(cdm::NormalizationRule::Named("zscore"), cdm::InputError);
}
} // namespace
