/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
// The BraTS-like phantom: contrasts ordered as MR physics says, labels where the tumour is, seeds reproduce cases.
#include "cdmDataset.h"
#include "cdmError.h"
#include "cdmImageIO.h"
#include "cdmPhantom.h"
#include "cdmTestData.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>

namespace
{
namespace fs = std::filesystem;

/** Mean intensity of `image` where `selector` holds. */
template <typename TSelector>
double
MeanWhere(const cdm::Volume & image, TSelector selector)
{
  double sum = 0.0;
  double count = 0.0;
  for (size_t i = 0; i < image.Voxels.size(); ++i)
  {
    if (selector(i))
    {
      sum += image.Voxels[i];
      count += 1.0;
    }
  }
  EXPECT_GT(count, 0.0) << "no voxel selected in " << image.Description;
  return sum / std::max(count, 1.0);
}

/** Selects the voxels of a case that are mostly `tissue` (fraction above 0.8) and outside the tumour. */
std::function<bool(size_t)>
PureTissue(const cdm::PhantomCase & c, const std::string & tissue)
{
  const std::vector<float> * fraction = &c.TissueFractions.at(tissue).Voxels;
  const std::vector<float> * labels = &c.Segmentation.Voxels;
  return [fraction, labels](size_t i) { return (*fraction)[i] > 0.8f && (*labels)[i] == 0.0f; };
}

cdm::PhantomOptions
SmallOptions(const std::string & anatomy)
{
  cdm::PhantomOptions options;
  options.Anatomy = anatomy;
  options.Size = { 56, 64, 48 };
  options.Spacing = 3.0;
  return options;
}

class Phantom : public ::testing::TestWithParam<std::string>
{};

TEST_P(Phantom, ContrastsFollowMRPhysicsAndLabelsMarkTheTumour)
{
  const cdm::PhantomGenerator generator(SmallOptions(GetParam()));
  const cdm::PhantomCase      c = generator.Generate(3);
  const auto &                seg = c.Segmentation.Voxels;
  const auto                  isCsf = PureTissue(c, "csf");
  const auto                  isGrey = PureTissue(c, "grey");
  const auto                  isWhite = PureTissue(c, "white");
  const auto                  isRim = [&](size_t i) { return seg[i] == 3.0f; };
  const auto &                t1n = c.Images.at("t1n");
  const auto &                t1c = c.Images.at("t1c");
  const auto &                t2w = c.Images.at("t2w");
  const auto &                t2f = c.Images.at("t2f");
  // CSF dark on T1 and FLAIR, bright on T2; white matter brighter than grey on T1, darker on T2.
  EXPECT_LT(MeanWhere(t1n, isCsf), MeanWhere(t1n, isGrey));
  EXPECT_LT(MeanWhere(t1n, isGrey), MeanWhere(t1n, isWhite));
  EXPECT_GT(MeanWhere(t2w, isCsf), MeanWhere(t2w, isGrey));
  EXPECT_GT(MeanWhere(t2w, isGrey), MeanWhere(t2w, isWhite));
  EXPECT_LT(MeanWhere(t2f, isCsf), 0.5 * MeanWhere(t2f, isGrey));
  // Gadolinium: the enhancing rim, relative to white matter, is brighter on t1c than on t1n.
  EXPECT_GT(MeanWhere(t1c, isRim) / MeanWhere(t1c, isWhite), 1.3 * MeanWhere(t1n, isRim) / MeanWhere(t1n, isWhite));
  // Oedema is bright on FLAIR.
  EXPECT_GT(MeanWhere(t2f, [&](size_t i) { return seg[i] == 2.0f; }), MeanWhere(t2f, isWhite));

  // Every BraTS label is present, inside the brain, around the drawn tumour centre.
  const nlohmann::json parameters = nlohmann::json::parse(c.ParametersJson);
  const auto           centre = parameters["tumour"]["centre_mm"].get<std::vector<double>>();
  const double         radius = parameters["tumour"]["radius_mm"].get<double>();
  std::array<int, 4>   counts{};
  const auto &         g = c.Segmentation;
  for (int64_t z = 0; z < g.Size[2]; ++z)
  {
    for (int64_t y = 0; y < g.Size[1]; ++y)
    {
      for (int64_t x = 0; x < g.Size[0]; ++x)
      {
        const size_t i = static_cast<size_t>(x + g.Size[0] * (y + g.Size[1] * z));
        const int    label = static_cast<int>(seg[i]);
        ASSERT_TRUE(label == 0 || label == 1 || label == 2 || label == 3);
        ++counts[label];
        if (label == 1 || label == 3)
        {
          const double dx = g.Origin[0] + x * g.Spacing[0] - centre[0];
          const double dy = g.Origin[1] + y * g.Spacing[1] - centre[1];
          const double dz = g.Origin[2] + z * g.Spacing[2] - centre[2];
          // Stretch <= 1.25 and boundary irregularity >= 0.6 bound the rim at 1.25 / 0.6 radii (+ smoothing).
          EXPECT_LT(std::sqrt(dx * dx + dy * dy + dz * dz), 1.25 / 0.6 * radius + 2.0 * g.Spacing[0]);
          EXPECT_GT(t1n.Voxels[i], 0.0f); // inside the brain
        }
      }
    }
  }
  EXPECT_GT(counts[1], 0);
  EXPECT_GT(counts[2], 0);
  EXPECT_GT(counts[3], 0);
}

TEST_P(Phantom, ASeedReproducesACaseBitForBit)
{
  const cdm::PhantomGenerator generator(SmallOptions(GetParam()));
  const cdm::PhantomCase      a = generator.Generate(11);
  const cdm::PhantomCase      b = generator.Generate(11);
  const cdm::PhantomCase      other = generator.Generate(12);
  for (const std::string m : { "t1n", "t1c", "t2w", "t2f" })
  {
    EXPECT_EQ(a.Images.at(m).Voxels, b.Images.at(m).Voxels) << m;
    EXPECT_NE(a.Images.at(m).Voxels, other.Images.at(m).Voxels) << m;
  }
  EXPECT_EQ(a.Segmentation.Voxels, b.Segmentation.Voxels);
  EXPECT_EQ(a.ParametersJson, b.ParametersJson);
}

TEST_P(Phantom, ProtonDensityContrastIsFlatAndLeavesTheOtherContrastsAsTheyWere)
{
  cdm::PhantomOptions    options = SmallOptions(GetParam());
  const cdm::PhantomCase brats = cdm::PhantomGenerator(options).Generate(7);
  options.Contrasts = { "t1n", "t1c", "t2w", "t2f", "pd" };
  const cdm::PhantomCase all = cdm::PhantomGenerator(options).Generate(7);
  // pd's draws come last: the BraTS contrasts of a seed are the same with it.
  for (const std::string m : { "t1n", "t1c", "t2w", "t2f" })
  {
    EXPECT_EQ(all.Images.at(m).Voxels, brats.Images.at(m).Voxels) << m;
  }
  const auto   isCsf = PureTissue(all, "csf");
  const auto   isGrey = PureTissue(all, "grey");
  const auto   isWhite = PureTissue(all, "white");
  const auto & pd = all.Images.at("pd");
  const auto & t2w = all.Images.at("t2w");
  // Long TR, short TE: the tissues differ by their proton density only (grey about 10 % above white, less than the
  // bias field can shift a region's mean), far less than on T1 or T2; CSF between its T1 darkness and T2 brightness.
  const auto & t1n = all.Images.at("t1n");
  const auto   csfOverWhite = [&](const cdm::Volume & image) {
    return MeanWhere(image, isCsf) / MeanWhere(image, isWhite);
  };
  EXPECT_LT(csfOverWhite(t1n), csfOverWhite(pd));
  EXPECT_LT(csfOverWhite(pd), csfOverWhite(t2w));
  const double pdSpread = std::max({ MeanWhere(pd, isCsf), MeanWhere(pd, isGrey), MeanWhere(pd, isWhite) }) /
                          std::min({ MeanWhere(pd, isCsf), MeanWhere(pd, isGrey), MeanWhere(pd, isWhite) });
  EXPECT_LT(pdSpread, 1.4);
  EXPECT_GT(MeanWhere(t2w, isCsf) / MeanWhere(t2w, isWhite), 2.0 * pdSpread);
  EXPECT_TRUE(nlohmann::json::parse(all.ParametersJson)["sequences"].contains("pd"));
  // The IXI set alone.
  options.Contrasts = { "t1n", "t2w", "pd" };
  const cdm::PhantomCase ixi = cdm::PhantomGenerator(options).Generate(7);
  ASSERT_EQ(ixi.Images.size(), 3u);
  EXPECT_EQ(ixi.Images.at("pd").Voxels, pd.Voxels);
  options.Contrasts = { "t1n", "dwi" };
  EXPECT_THROW(cdm::PhantomGenerator{ options }, cdm::InputError);
}

TEST_P(Phantom, AFixedDoseChangesOnlyTheContrastEnhancedImageInsideTheTumour)
{
  cdm::PhantomOptions options = SmallOptions(GetParam());
  options.Gadolinium = 0.3;
  const cdm::PhantomCase low = cdm::PhantomGenerator(options).Generate(7);
  options.Gadolinium = 0.8;
  const cdm::PhantomCase high = cdm::PhantomGenerator(options).Generate(7);
  for (const std::string m : { "t1n", "t2w", "t2f" })
  {
    EXPECT_EQ(low.Images.at(m).Voxels, high.Images.at(m).Voxels) << m;
  }
  EXPECT_EQ(low.Segmentation.Voxels, high.Segmentation.Voxels);
  EXPECT_DOUBLE_EQ(nlohmann::json::parse(high.ParametersJson)["sequences"]["gadolinium_mM"].get<double>(), 0.8);
  double                     rimLow = 0.0, rimHigh = 0.0, outsideChange = 0.0, outsideLevel = 0.0;
  size_t                     rimCount = 0, outsideCount = 0;
  const std::vector<float> & labels = low.Segmentation.Voxels;
  for (size_t i = 0; i < labels.size(); ++i)
  {
    const double a = low.Images.at("t1c").Voxels[i], b = high.Images.at("t1c").Voxels[i];
    if (labels[i] == 3.0f)
    {
      rimLow += a;
      rimHigh += b;
      ++rimCount;
    }
    else if (labels[i] == 0.0f && a > 0.0)
    {
      outsideChange += std::abs(b - a);
      outsideLevel += a;
      ++outsideCount;
    }
  }
  ASSERT_GT(rimCount, 0u);
  ASSERT_GT(outsideCount, 0u);
  // More gadolinium shortens T1 and brightens the rim; outside the tumour only partial-volume voxels at its edge move.
  EXPECT_GT(rimHigh, 1.1 * rimLow);
  EXPECT_LT(outsideChange, 0.01 * outsideLevel);
}

TEST_P(Phantom, ATumourSlabIsTheWholeCaseCroppedAboutTheTumour)
{
  const cdm::PhantomCase whole = cdm::PhantomGenerator(SmallOptions(GetParam())).Generate(5);
  cdm::PhantomOptions    options = SmallOptions(GetParam());
  options.TumourSlab = 8;
  const cdm::PhantomCase slab = cdm::PhantomGenerator(options).Generate(5);
  const cdm::Volume &    t1c = slab.Images.at("t1c");
  ASSERT_EQ(t1c.Size, (std::array<int64_t, 3>{ 56, 64, 8 }));
  const int64_t first = nlohmann::json::parse(slab.ParametersJson)["tumour_slab"]["first_slice"].get<int64_t>();
  // Same voxels at the same physical points as the whole case.
  EXPECT_EQ(t1c.Voxels, cdm::CropVolume(whole.Images.at("t1c"), { 0, 0, first }, t1c.Size).Voxels);
  EXPECT_NEAR(t1c.Origin[2], whole.Images.at("t1c").Origin[2] + first * whole.Images.at("t1c").Spacing[2], 1e-9);
  // The slab holds the tumour's centroid slice: more tumour per slice than the whole case.
  const auto tumourFraction = [](const cdm::Volume & seg) {
    return std::count_if(seg.Voxels.begin(), seg.Voxels.end(), [](float v) { return v > 0.0f; }) /
           static_cast<double>(seg.Voxels.size());
  };
  EXPECT_GT(tumourFraction(slab.Segmentation), tumourFraction(whole.Segmentation));
  options.TumourSlab = 49;
  EXPECT_THROW(cdm::PhantomGenerator{ options }, cdm::InputError);
}

INSTANTIATE_TEST_SUITE_P(Anatomies, Phantom, ::testing::Values("procedural", "colin27"));

TEST(PhantomOptions, BadOptionsAreRefused)
{
  cdm::PhantomOptions options = SmallOptions("procedural");
  options.Anatomy = "mouse";
  EXPECT_THROW(cdm::PhantomGenerator{ options }, cdm::InputError);
  options = SmallOptions("colin27");
  options.TemplateDirectory = "/nonexistent";
  try
  {
    cdm::PhantomGenerator generator(options);
    ADD_FAILURE() << "missing templates were accepted";
  }
  catch (const cdm::InputError & e)
  {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/ch2better.nii.gz"), std::string::npos) << e.what();
  }
  options = SmallOptions("procedural");
  options.Size = { 4, 64, 64 };
  EXPECT_THROW(cdm::PhantomGenerator{ options }, cdm::InputError);
}

TEST(PhantomCommandLine, WritesTheBraTSLayoutThatTrainingAccepts)
{
  const std::string root = cdm::testing::MakeTemporaryDirectory("phantom");
  const std::string command = std::string(CDM_EXECUTABLE) + " phantom --out " + root +
                              "/data --cases 3 --seed 5 --anatomy procedural --size 48,48,24 --spacing 4 > " + root +
                              "/log.txt 2>&1";
  ASSERT_EQ(std::system(command.c_str()), 0);
  const cdm::DatasetScan scan = cdm::ScanBraTSFolder(root + "/data", { "t1n", "t1c", "t2w", "t2f", "seg" });
  ASSERT_EQ(scan.Cases.size(), 3u);
  EXPECT_EQ(scan.Cases[0].Name, "PHANTOM-00000");
  const cdm::Volume t1n = cdm::ReadVolume(scan.Cases[0].Files.at("t1n"));
  EXPECT_EQ(t1n.Size, (std::array<int64_t, 3>{ 48, 48, 24 }));
  EXPECT_NEAR(t1n.Spacing[2], 4.0, 1e-6);
  const std::string train = std::string(CDM_EXECUTABLE) + " train --data " + root +
                            "/data --target t1c --iterations 2 --validation-interval 2 --device cpu --out " + root +
                            "/m.cdm >> " + root + "/log.txt 2>&1";
  EXPECT_EQ(std::system(train.c_str()), 0);
  EXPECT_TRUE(fs::exists(root + "/m.cdm"));
  // A baseline trains and synthesizes through the same commands.
  const std::string baseline = std::string(CDM_EXECUTABLE) + " train --model-kind unet --data " + root +
                               "/data --target t1c --iterations 2 --validation-interval 2 --device cpu --out " + root +
                               "/unet.cdm >> " + root + "/log.txt 2>&1";
  EXPECT_EQ(std::system(baseline.c_str()), 0);
  const std::string c = root + "/data/PHANTOM-00002/PHANTOM-00002";
  const std::string synthesize = std::string(CDM_EXECUTABLE) + " synthesize --quiet --model " + root +
                                 "/unet.cdm --source t1n=" + c + "-t1n.nii.gz --source t2w=" + c +
                                 "-t2w.nii.gz --source t2f=" + c + "-t2f.nii.gz --output " + root +
                                 "/unet-t1c.nii.gz >> " + root + "/log.txt 2>&1";
  EXPECT_EQ(std::system(synthesize.c_str()), 0);
  EXPECT_EQ(cdm::ReadVolume(root + "/unet-t1c.nii.gz").Size, t1n.Size);
  fs::remove_all(root);
}

TEST(PhantomCommandLine, TheIXISetTrainsAPDModelFromT1AndT2)
{
  const std::string root = cdm::testing::MakeTemporaryDirectory("phantom-ixi");
  const auto        run = [&](const std::string & arguments) {
    return cdm::testing::RunCommand(std::string(CDM_EXECUTABLE) + " " + arguments);
  };
  const cdm::testing::CommandResult phantom = run("phantom --out " + root +
                                                  "/ixi --cases 3 --seed 6 --anatomy "
                                                  "procedural --size 40,40,8 --spacing 5 --contrasts t1n,t2w,pd");
  ASSERT_EQ(phantom.ExitCode, 0) << phantom.Output;
  const std::string c = root + "/ixi/PHANTOM-00002/PHANTOM-00002";
  EXPECT_TRUE(fs::exists(c + "-pd.nii.gz"));
  EXPECT_FALSE(fs::exists(c + "-t1c.nii.gz"));
  // pd's default sources are IXI's others: t1n and t2w.
  const cdm::testing::CommandResult train = run("train --data " + root +
                                                "/ixi --target pd --preset tiny --iterations "
                                                "2 --validation-interval 2 --device cpu --out " +
                                                root + "/pd.cdm");
  ASSERT_EQ(train.ExitCode, 0) << train.Output;
  EXPECT_NE(train.Output.find("target pd from t1n,t2w"), std::string::npos) << train.Output;
  const cdm::testing::CommandResult synthesize =
    run("synthesize --quiet --model " + root + "/pd.cdm --source t1n=" + c + "-t1n.nii.gz --source t2w=" + c +
        "-t2w.nii.gz --output " + root + "/pd.nii.gz");
  ASSERT_EQ(synthesize.ExitCode, 0) << synthesize.Output;
  EXPECT_EQ(cdm::ReadVolume(root + "/pd.nii.gz").Size, cdm::ReadVolume(c + "-pd.nii.gz").Size);
  // A drop among contrasts not written is refused by name.
  const cdm::testing::CommandResult drop =
    run("phantom --out " + root + "/bad --cases 1 --anatomy procedural --contrasts t1n,t2w,pd --drop t1c");
  EXPECT_EQ(drop.ExitCode, 1);
  EXPECT_NE(drop.Output.find("--drop t1c"), std::string::npos) << drop.Output;
  fs::remove_all(root);
}
} // namespace
