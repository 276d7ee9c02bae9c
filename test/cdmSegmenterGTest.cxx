/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
// BraSyn's second score (issue 13, part 4): Dice in BraTS's regions on known masks, and the segmenter model kind
// (shapes, refusals, model file, training).
#include "cdmError.h"
#include "cdmMetrics.h"
#include "cdmModel.h"
#include "cdmSafetensors.h"
#include "cdmTestData.h"
#include "cdmTrainer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>

namespace
{
namespace fs = std::filesystem;

const std::vector<std::string> AllModalities{ "t1n", "t1c", "t2w", "t2f" };

/** A 10x1x1 label map from its labels. */
cdm::Volume
Labels(const std::vector<float> & labels, const std::string & description)
{
  cdm::Volume volume;
  volume.Size = { static_cast<int64_t>(labels.size()), 1, 1 };
  volume.Voxels = labels;
  volume.Description = description;
  return volume;
}


TEST(SegmentationDice, BraTSRegionsOnKnownMasks)
{
  //                                  0  1  2  3  4  5  6  7  8  9
  const cdm::Volume           reference = Labels({ 0, 1, 1, 2, 2, 2, 3, 3, 0, 0 }, "reference");
  const cdm::Volume           prediction = Labels({ 0, 1, 3, 2, 2, 0, 3, 1, 2, 0 }, "prediction");
  const cdm::SegmentationDice dice = cdm::CompareSegmentations(reference, prediction);
  // ET (3): reference {6, 7}, prediction {2, 6}: 2 * 1 / 4.
  EXPECT_DOUBLE_EQ(dice.EnhancingTumour, 0.5);
  // TC (1, 3): reference {1, 2, 6, 7}, prediction {1, 2, 6, 7}: 1.
  EXPECT_DOUBLE_EQ(dice.TumourCore, 1.0);
  // WT (1, 2, 3): reference {1..7}, prediction {1, 2, 3, 4, 6, 7, 8}: 2 * 6 / 14.
  EXPECT_DOUBLE_EQ(dice.WholeTumour, 12.0 / 14.0);
  // Against itself every region scores 1; a region empty in both counts as 1, in one only as 0.
  const cdm::SegmentationDice same = cdm::CompareSegmentations(reference, reference);
  EXPECT_DOUBLE_EQ(same.EnhancingTumour, 1.0);
  EXPECT_DOUBLE_EQ(same.WholeTumour, 1.0);
  const cdm::Volume           noEnhancing = Labels({ 0, 1, 1, 2, 2, 2, 1, 1, 0, 0 }, "no enhancing");
  const cdm::SegmentationDice both = cdm::CompareSegmentations(noEnhancing, noEnhancing);
  EXPECT_DOUBLE_EQ(both.EnhancingTumour, 1.0);
  EXPECT_DOUBLE_EQ(cdm::CompareSegmentations(noEnhancing, reference).EnhancingTumour, 0.0);
  // Pooled over several images, as validation does: the counts add up before the ratio.
  cdm::SegmentationOverlap overlap;
  overlap.Add(reference.Data(), prediction.Data(), 10);
  overlap.Add(reference.Data(), reference.Data(), 10);
  EXPECT_DOUBLE_EQ(overlap.Dice().EnhancingTumour, 2.0 * 3 / 8);
}

TEST(SegmentationDice, NamesWhatItCannotScore)
{
  const cdm::Volume reference = Labels({ 0, 1, 2, 3, 0, 0, 0, 0, 0, 0 }, "case-seg.nii.gz");
  const std::string brats2021 = cdm::testing::InputErrorOf([&] {
    cdm::CompareSegmentations(reference, Labels({ 0, 1, 2, 4, 0, 0, 0, 0, 0, 0 }, "old.nii.gz"));
  });
  EXPECT_NE(brats2021.find("old.nii.gz"), std::string::npos) << brats2021;
  EXPECT_NE(brats2021.find("relabel it 3"), std::string::npos) << brats2021;
  const std::string image = cdm::testing::InputErrorOf([&] {
    cdm::CompareSegmentations(reference, Labels({ 0.5f, 1, 2, 3, 0, 0, 0, 0, 0, 0 }, "t1c.nii"));
  });
  EXPECT_NE(image.find("expected labels 0 to 3"), std::string::npos) << image;
  const std::string grid = cdm::testing::InputErrorOf([&] {
    cdm::CompareSegmentations(reference, Labels({ 0, 1 }, "short.nii"));
  });
  EXPECT_NE(grid.find("different grids"), std::string::npos) << grid;
}

cdm::Model
TinySegmenter(unsigned int dimension = 2)
{
  return cdm::Model::Create(
    cdm::ModelConfig::FromPreset("tiny", dimension, AllModalities, cdm::SegmentationName, "segmenter"),
    5,
    cdm::testing::TestDevice());
}

TEST(Segmenter, LabelsTheSourcesGridIn2DAnd3D)
{
  cdm::Volume       truth;
  const auto        images = cdm::testing::MakeCase(31, { 24, 20, 5 }, &truth);
  const cdm::Volume labels = TinySegmenter().Segment(images);
  std::string       why;
  EXPECT_TRUE(cdm::SameGeometry(labels, images.at("t1n"), &why)) << why;
  ASSERT_EQ(labels.StoredVoxels(), truth.NumberOfVoxels());
  for (const float label : labels.Voxels)
  {
    ASSERT_TRUE(label == 0.0f || label == 1.0f || label == 2.0f || label == 3.0f) << label;
  }
  // The same labels whatever the slices per call (memory, not results).
  cdm::SegmentationOptions oneSlice;
  oneSlice.VoxelsPerCall = 1;
  EXPECT_EQ(TinySegmenter().Segment(images, oneSlice).Voxels, labels.Voxels);
  // A 3D segmenter labels the volume in one call.
  const auto volume = cdm::testing::MakeCase(32, { 16, 16, 8 });
  EXPECT_EQ(TinySegmenter(3).Segment(volume).Size, volume.at("t1n").Size);
}

TEST(Segmenter, RefusesWhatItCannotDo)
{
  const cdm::Model segmenter = TinySegmenter();
  const auto       images = cdm::testing::MakeCase(33, { 16, 16, 3 });
  // It synthesizes nothing, and a synthesis model labels nothing.
  const std::string synthesize = cdm::testing::InputErrorOf([&] { segmenter.Synthesize(images); });
  EXPECT_NE(synthesize.find("segmenter"), std::string::npos) << synthesize;
  const cdm::Model synthesis = cdm::Model::Create(
    cdm::ModelConfig::FromPreset("tiny", 2, { "t1n", "t2w", "t2f" }, "t1c"), 1, cdm::testing::TestDevice());
  const std::string segment = cdm::testing::InputErrorOf([&] { synthesis.Segment(images); });
  EXPECT_NE(segment.find("expected a segmenter"), std::string::npos) << segment;
  // A gap is refused unless asked for as zeros.
  auto three = images;
  three.erase("t1c");
  const std::string missing = cdm::testing::InputErrorOf([&] { segmenter.Segment(three); });
  EXPECT_NE(missing.find("'t1c' is missing"), std::string::npos) << missing;
  cdm::SegmentationOptions zeros;
  zeros.MissingSourcesAsZero = true;
  EXPECT_EQ(segmenter.Segment(three, zeros).Size, images.at("t1n").Size);
  // A segmenter's target is the labels, and a synthesis model's is a modality.
  EXPECT_FALSE(cdm::testing::InputErrorOf([] {
                 cdm::ModelConfig::FromPreset("tiny", 2, AllModalities, "t1c", "segmenter");
               }).empty());
  EXPECT_FALSE(cdm::testing::InputErrorOf([] {
                 cdm::ModelConfig::FromPreset("tiny", 2, { "t1n" }, cdm::SegmentationName, "cdm");
               }).empty());
}

TEST(Segmenter, ModelFileKeepsItsKindAndIsRefusedByVersion1Readers)
{
  const std::string directory = cdm::testing::MakeTemporaryDirectory("segmenter-file");
  const cdm::Model  model = TinySegmenter();
  model.Save(directory + "/seg.cdm");
  cdm::safetensors::Header header;
  cdm::safetensors::Read(directory + "/seg.cdm", &header);
  EXPECT_NE(header.Metadata.at("cdm").find("\"format_version\":2"), std::string::npos);
  const cdm::Model loaded = cdm::Model::Load(directory + "/seg.cdm", cdm::testing::TestDevice());
  EXPECT_TRUE(loaded.Config().IsSegmenter());
  const auto images = cdm::testing::MakeCase(34, { 16, 16, 3 });
  EXPECT_EQ(loaded.Segment(images).Voxels, model.Segment(images).Voxels);
  fs::remove_all(directory);
}

TEST(Segmenter, TrainingLowersItsLossAndLearnsTheTumour)
{
  const std::string    directory = cdm::testing::MakeTemporaryDirectory("segmenter-training");
  const cdm::Dataset   data = cdm::testing::MakeDataset(6, 700, { 32, 32, 6 }, true);
  cdm::TrainingOptions options;
  options.ModelKind = "segmenter";
  options.Output = directory + "/seg.cdm";
  options.Sources = AllModalities;
  options.Iterations = 200; // it finds the tumour from about 120 on (all background before)
  options.ValidationInterval = 200;
  options.CheckpointInterval = 200;
  options.ValidationFraction = 0.34;
  options.LearningRate = 3e-3;
  options.Device = cdm::testing::TestDevice();
  options.Seed = 9;
  const cdm::TrainingReport report = cdm::Train(data, options);
  ASSERT_EQ(report.Stages.size(), 1u);
  EXPECT_EQ(report.Stages[0].Stage, "segment");
  EXPECT_LT(report.Stages[0].LastLoss, 0.8 * report.Stages[0].FirstLoss);
  // Validation (held-out cases) finds the whole tumour: an untrained network's scores are near 0 or scattered.
  EXPECT_GT(report.Stages[0].ValidationDice.WholeTumour, 0.5);
  const cdm::Model model = cdm::Model::Load(options.Output, cdm::testing::TestDevice());
  EXPECT_TRUE(model.Config().IsSegmenter());
  EXPECT_NE(model.Config().ProvenanceJson.find("validation_dice"), std::string::npos);
  // A case without a segmentation cannot train a segmenter.
  const std::string unlabelled =
    cdm::testing::InputErrorOf([&] { cdm::Train(cdm::testing::MakeDataset(2, 710), options); });
  EXPECT_NE(unlabelled.find("no segmentation"), std::string::npos) << unlabelled;
  fs::remove_all(directory);
}
} // namespace
