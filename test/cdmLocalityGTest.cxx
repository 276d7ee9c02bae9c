/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
// The C-UNet is local (README.md, "Design notes"): its output at a voxel depends only on the inputs within the
// receptive field radius, so aligned tiles padded by that halo reproduce the whole-image synthesis.
#include "cdmError.h"
#include "cdmModelImpl.h"
#include "cdmTestData.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <limits>

namespace
{
class Locality : public ::testing::TestWithParam<std::string>
{};

TEST_P(Locality, OutputIgnoresInputOutsideTheReceptiveField)
{
  const cdm::ModelConfig config = cdm::ModelConfig::FromPreset(GetParam(), 2, { "t1n", "t2w", "t2f" }, "t1c");
  torch::manual_seed(0); // the test's inputs below
  cdm::Model::Impl   impl(config, torch::kCPU, 0);
  c10::InferenceMode guard;
  const int64_t      radius = config.UNetReceptiveRadius();
  const int64_t      edge = 2 * radius + 3 * config.UNetAlignment() * 4;
  const int64_t      size = (edge + config.UNetAlignment() - 1) / config.UNetAlignment() * config.UNetAlignment();
  const at::Tensor   input = torch::rand({ 1, impl.SourceChannels(), size, size });
  const at::Tensor   z = torch::randn({ 1, config.Network.RepresentationDim });
  const int64_t      px = size / 2 + 1;
  const int64_t      py = size / 2 - 2;
  const float        reference = impl.SynthesizeBatch(input, z)[0][0][py][px].item<float>();

  // Change everything farther than the radius (Chebyshev distance) from (py, px).
  at::Tensor outside = torch::ones({ size, size });
  outside.narrow(0, py - radius, 2 * radius + 1).narrow(1, px - radius, 2 * radius + 1).zero_();
  const at::Tensor changedFar = input + 5.0 * torch::rand_like(input) * outside;
  const float      far = impl.SynthesizeBatch(changedFar, z)[0][0][py][px].item<float>();
  EXPECT_NEAR(far, reference, 1e-5) << "receptive radius " << radius;

  // A change near the voxel does move it: the test can fail.
  at::Tensor changedNear = input.clone();
  changedNear.narrow(2, py - 1, 3).narrow(3, px - 1, 3).add_(3.0);
  const float near = impl.SynthesizeBatch(changedNear, z)[0][0][py][px].item<float>();
  EXPECT_GT(std::abs(near - reference), 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Presets, Locality, ::testing::Values("tiny", "small"));

double
MaxDifference(const cdm::Volume & a, const cdm::Volume & b)
{
  EXPECT_EQ(a.Voxels.size(), b.Voxels.size());
  double difference = 0.0;
  for (size_t i = 0; i < a.Voxels.size(); ++i)
  {
    difference = std::max(difference, static_cast<double>(std::abs(a.Voxels[i] - b.Voxels[i])));
  }
  return difference;
}

double
Range(const cdm::Volume & v)
{
  const auto [low, high] = std::minmax_element(v.Voxels.begin(), v.Voxels.end());
  return static_cast<double>(*high - *low);
}

struct TilingCase
{
  unsigned int           Dimension;
  std::array<int64_t, 3> ImageSize;
  int64_t                Tile;
};

class Tiling : public ::testing::TestWithParam<TilingCase>
{};

TEST_P(Tiling, TiledAndRegionSynthesisEqualWholeImageSynthesis)
{
  const TilingCase param = GetParam();
  torch::manual_seed(4);
  const cdm::Model model =
    cdm::Model::Create(cdm::ModelConfig::FromPreset("tiny", param.Dimension, { "t1n", "t2w", "t2f" }, "t1c"),
                       4,
                       cdm::testing::TestDevice());
  cdm::testing::RandomizeFilm(model, 4); // z, and so each sample's z, changes the output
  auto sources = cdm::testing::MakeCase(2, param.ImageSize);
  sources.erase("t1c");
  const cdm::Representation  representation = model.SampleRepresentation(sources);
  const cdm::SynthesisResult whole = model.SynthesizeRegion(sources, representation, cdm::Region{});
  const double               range = Range(whole.Image);
  ASSERT_GT(range, 0.0);

  cdm::SynthesisOptions tiled;
  tiled.TileSize = { param.Tile, param.Tile, param.Tile };
  tiled.SlicesPerBatch = 2;
  const cdm::SynthesisResult tiles = model.SynthesizeRegion(sources, representation, cdm::Region{}, tiled);
  EXPECT_LE(MaxDifference(whole.Image, tiles.Image) / range, 1e-5);

  // An odd sub-region equals the same part of the whole image, and carries its own origin.
  cdm::Region region;
  region.Index = { 5, 9, param.ImageSize[2] > 2 ? 1 : 0 };
  region.Size = { param.ImageSize[0] - 12,
                  param.ImageSize[1] - 17,
                  param.ImageSize[2] > 2 ? param.ImageSize[2] - 3 : 1 };
  const cdm::SynthesisResult part = model.SynthesizeRegion(sources, representation, region, tiled);
  ASSERT_EQ(part.Image.Size, region.Size);
  double difference = 0.0;
  for (int64_t z = 0; z < region.Size[2]; ++z)
  {
    for (int64_t y = 0; y < region.Size[1]; ++y)
    {
      for (int64_t x = 0; x < region.Size[0]; ++x)
      {
        const auto & w = whole.Image;
        const float  a = w.Voxels[static_cast<size_t>(
          (x + region.Index[0]) + w.Size[0] * ((y + region.Index[1]) + w.Size[1] * (z + region.Index[2])))];
        const float  b = part.Image.Voxels[static_cast<size_t>(x + region.Size[0] * (y + region.Size[1] * z))];
        difference = std::max(difference, static_cast<double>(std::abs(a - b)));
      }
    }
  }
  EXPECT_LE(difference / range, 1e-5);

  // Zero copy (what the ITK filters do with float images): sources that view caller-owned buffers, and a result
  // written into caller-owned buffers, give the same voxels, and the returned volumes view those buffers.
  cdm::SourceVolumes views;
  for (auto & [name, volume] : sources)
  {
    views[name] = volume.View(volume.Voxels.data(), volume.Description);
  }
  cdm::SynthesisOptions twoSamples = tiled;
  twoSamples.Samples = 2;
  const cdm::Representation       sampledTwice = model.SampleRepresentation(views, twoSamples);
  const cdm::SynthesisResult      owned = model.SynthesizeRegion(sources, sampledTwice, region, tiled);
  const size_t                    regionVoxels = static_cast<size_t>(region.Size[0] * region.Size[1] * region.Size[2]);
  std::vector<float>              imageBuffer(regionVoxels, -1.0f), uncertaintyBuffer(regionVoxels, -1.0f);
  const cdm::SynthesisDestination destination{ imageBuffer.data(), uncertaintyBuffer.data() };
  const cdm::SynthesisResult      written =
    model.SynthesizeRegion(views, sampledTwice, region, tiled, {}, nullptr, destination);
  EXPECT_EQ(written.Image.Data(), imageBuffer.data());
  EXPECT_EQ(written.Uncertainty.Data(), uncertaintyBuffer.data());
  EXPECT_EQ(written.Image.Size, region.Size);
  EXPECT_EQ(imageBuffer, owned.Image.Voxels);
  EXPECT_EQ(uncertaintyBuffer, owned.Uncertainty.Voxels);
  EXPECT_GT(*std::max_element(uncertaintyBuffer.begin(), uncertaintyBuffer.end()), 0.0f);

  // Streaming: sources cropped to the required region (halo-padded, aligned) give the same part.
  const cdm::Region required = model.RequiredSourceRegion(region, param.ImageSize);
  EXPECT_LT(required.Size[0], param.ImageSize[0] + 1);
  cdm::SourceVolumes cropped;
  for (const auto & [name, volume] : sources)
  {
    cdm::Volume block = volume.BoxGeometry(required.Index, required.Size, volume.Description);
    block.Allocate();
    for (int64_t z = 0; z < required.Size[2]; ++z)
      for (int64_t y = 0; y < required.Size[1]; ++y)
        for (int64_t x = 0; x < required.Size[0]; ++x)
        {
          block.Voxels[static_cast<size_t>(x + required.Size[0] * (y + required.Size[1] * z))] =
            volume.Voxels[static_cast<size_t>((x + required.Index[0]) +
                                              volume.Size[0] *
                                                ((y + required.Index[1]) + volume.Size[1] * (z + required.Index[2])))];
        }
    cropped[name] = block;
  }
  const cdm::SourceExtent    extent{ param.ImageSize, required };
  const cdm::SynthesisResult streamed = model.SynthesizeRegion(cropped, representation, region, tiled, {}, &extent);
  EXPECT_LE(MaxDifference(streamed.Image, part.Image) / range, 1e-5);
  for (int r = 0; r < 3; ++r)
  {
    EXPECT_NEAR(streamed.Image.Origin[r], part.Image.Origin[r], 1e-9);
  }
  // Sources that miss part of the halo are refused.
  cdm::SourceExtent  tooSmall = extent;
  cdm::SourceVolumes shrunk = cropped;
  if (required.Index[0] + required.Size[0] < param.ImageSize[0] || required.Index[0] > 0)
  {
    cdm::Region       inner = region;
    const cdm::Region innerRequired = inner;
    tooSmall.Buffered = innerRequired;
    for (auto & [name, volume] : shrunk)
    {
      volume.Size = innerRequired.Size;
      volume.Allocate();
    }
    EXPECT_THROW(model.SynthesizeRegion(shrunk, representation, region, tiled, {}, &tooSmall), cdm::InputError);
  }
  const auto & direction = whole.Image.Direction;
  for (int r = 0; r < 3; ++r)
  {
    double expected = whole.Image.Origin[r];
    for (int a = 0; a < 3; ++a)
    {
      expected += direction[3 * r + a] * region.Index[a] * whole.Image.Spacing[a];
    }
    EXPECT_NEAR(part.Image.Origin[r], expected, 1e-9);
  }
}

INSTANTIATE_TEST_SUITE_P(Sizes,
                         Tiling,
                         ::testing::Values(TilingCase{ 2, { 61, 47, 5 }, 16 },
                                           TilingCase{ 2, { 64, 64, 1 }, 24 },
                                           TilingCase{ 3, { 37, 29, 21 }, 12 }),
                         [](const ::testing::TestParamInfo<TilingCase> & info) {
                           const auto & p = info.param;
                           return std::to_string(p.Dimension) + "DModel_" + std::to_string(p.ImageSize[0]) + "x" +
                                  std::to_string(p.ImageSize[1]) + "x" + std::to_string(p.ImageSize[2]) + "_Tile" +
                                  std::to_string(p.Tile);
                         });
TEST(SourceEncoderTiling, SlabsEqualTheWholeVolume)
{
  // A 3D model encodes a volume's sources streamed in z slabs; the feature sums make the same z as one call over the
  // whole volume (different budgets, float rounding apart).
  torch::manual_seed(5);
  cdm::ModelConfig config = cdm::ModelConfig::FromPreset("tiny", 3, { "t1n", "t2w", "t2f" }, "t1c");
  const cdm::Model model = cdm::Model::Create(config, 4, cdm::testing::TestDevice());
  auto             sources = cdm::testing::MakeCase(3, { 24, 20, 61 });
  sources.erase("t1c");
  cdm::SynthesisOptions oneCall;
  oneCall.VoxelsPerCall = int64_t{ 1 } << 30;
  cdm::SynthesisOptions slabs;
  slabs.VoxelsPerCall = 24 * 24 * 3; // three planes of the padded 24 x 24 a slab
  cdm::SynthesisOptions someSlabs;
  someSlabs.VoxelsPerCall = 24 * 24 * 40;
  const cdm::Representation whole = model.SampleRepresentation(sources, oneCall);
  ASSERT_EQ(whole.Values.size(), static_cast<size_t>(whole.Dim));
  double scale = 0.0;
  for (const float v : whole.Values)
  {
    scale = std::max(scale, static_cast<double>(std::abs(v)));
  }
  ASSERT_GT(scale, 0.0);
  for (const auto & options : { slabs, someSlabs })
  {
    const cdm::Representation tiled = model.SampleRepresentation(sources, options);
    ASSERT_EQ(tiled.Values.size(), whole.Values.size());
    for (size_t i = 0; i < whole.Values.size(); ++i)
    {
      EXPECT_NEAR(tiled.Values[i], whole.Values[i], 1e-5 * scale) << "element " << i;
    }
  }

  // Streamed, the encoder's condition c equals its plain (unstreamed) pass over the whole volume.
  const cdm::Model::Impl & impl = model.GetImpl();
  c10::InferenceMode       guard;
  cdm::Region              all;
  all.Size = { 24, 20, 61 };
  const at::Tensor reference =
    impl.EncodeSources(impl.ToNetworkLayout(impl.SourceWindow(sources, whole.SourceScales, all)).to(impl.Device));
  const double referenceScale = reference.abs().max().item<double>();
  ASSERT_GT(referenceScale, 0.0);
  for (const int64_t budget : { int64_t{ 24 * 20 }, int64_t{ 24 * 24 * 7 }, int64_t{ 1 } << 30 })
  {
    cdm::SourceAccess access(sources);
    const at::Tensor  streamed = impl.EncodeSourceVolume(access, whole.SourceScales, budget);
    EXPECT_LE((streamed - reference).abs().max().item<double>(), 1e-5 * referenceScale) << "budget " << budget;
  }
}

struct StreamedSamplerCase
{
  std::string Kind;
  int         Dimension;
  int         SliceAxis;
};

class StreamedSampler : public ::testing::TestWithParam<StreamedSamplerCase>
{};

/** A reader over whole volumes that hands out owned copies of each window (what a pipeline gives: only the window
 *  exists), recording every window asked for. */
cdm::SourceWindowReader
CopyingReader(const cdm::SourceVolumes & sources, std::vector<cdm::Region> & windows)
{
  return [&sources, &windows](const cdm::Region & window) {
    windows.push_back(window);
    cdm::SourceVolumes copies;
    for (const auto & [name, volume] : sources)
    {
      copies[name] = cdm::CropVolume(volume, window.Index, window.Size);
    }
    return copies;
  };
}

TEST_P(StreamedSampler, WindowsReadOnceEachPassGiveTheWholeImagesRepresentation)
{
  const StreamedSamplerCase param = GetParam();
  cdm::ModelConfig config = cdm::ModelConfig::FromPreset("tiny", param.Dimension, { "t1n", "t2w", "t2f" }, "t1c");
  config.ModelKind = param.Kind;
  config.SliceAxis = param.SliceAxis;
  const cdm::Model             model = cdm::Model::Create(config, 4, cdm::testing::TestDevice());
  const std::array<int64_t, 3> size{ 20, 18, 29 };
  auto                         sources = cdm::testing::MakeCase(6, size);
  sources.erase("t1c");
  cdm::SynthesisOptions options;
  options.Samples = 2;
  options.Seed = 3;
  options.VoxelsPerCall = 20 * 18 * 2; // the encoder's calls: two slices, or a 3D slab of one padded plane
  options.VoxelsPerRead = 20 * 18 * 4; // four planes of z a read (slabs of x: as many voxels)
  const cdm::Representation whole = model.SampleRepresentation(sources, options);

  std::vector<cdm::Region>  windows;
  const cdm::Representation streamed = model.SampleRepresentation(CopyingReader(sources, windows), size, options);
  EXPECT_EQ(streamed.SourceScales, whole.SourceScales);
  EXPECT_EQ(streamed.Cells, whole.Cells);
  EXPECT_EQ(streamed.Target, whole.Target);
  ASSERT_EQ(streamed.Values.size(), whole.Values.size());
  for (size_t i = 0; i < whole.Values.size(); ++i)
  {
    ASSERT_EQ(streamed.Values[i], whole.Values[i]) << "element " << i; // the same windows, the same arithmetic
  }
  // Every voxel read once per pass (scales, then the encoder of a cdm model), never more than a read's budget at once.
  int64_t readVoxels = 0;
  for (const auto & window : windows)
  {
    const int64_t voxels = window.Size[0] * window.Size[1] * window.Size[2];
    EXPECT_LE(voxels, options.VoxelsPerRead);
    readVoxels += voxels;
  }
  const int64_t imageVoxels = size[0] * size[1] * size[2];
  EXPECT_EQ(readVoxels, (param.Kind == "cdm" ? 2 : 1) * imageVoxels);
  EXPECT_GT(windows.size(), 2u);
}

INSTANTIATE_TEST_SUITE_P(Models,
                         StreamedSampler,
                         ::testing::Values(StreamedSamplerCase{ "cdm", 2, 2 },
                                           StreamedSamplerCase{ "cdm", 2, 0 },
                                           StreamedSamplerCase{ "cdm", 3, 2 },
                                           StreamedSamplerCase{ "unet", 2, 2 }),
                         [](const ::testing::TestParamInfo<StreamedSamplerCase> & info) {
                           return info.param.Kind + std::to_string(info.param.Dimension) + "DSliceAxis" +
                                  std::to_string(info.param.SliceAxis);
                         });

TEST(StreamedSampler, AWindowThatIsNotWhatWasAskedForIsRefusedByName)
{
  const cdm::Model model = cdm::Model::Create(
    cdm::ModelConfig::FromPreset("tiny", 2, { "t1n", "t2w", "t2f" }, "t1c"), 4, cdm::testing::TestDevice());
  const std::array<int64_t, 3> size{ 16, 16, 12 };
  auto                         sources = cdm::testing::MakeCase(2, size);
  sources.erase("t1c");
  for (auto & [name, volume] : sources)
  {
    volume.Description = "case " + name;
  }
  cdm::SynthesisOptions options;
  options.VoxelsPerRead = 16 * 16 * 4;
  std::vector<cdm::Region> windows;
  const auto               copying = CopyingReader(sources, windows);
  const auto               expectError = [&](const cdm::SourceWindowReader & read, const std::string & expected) {
    try
    {
      model.SampleRepresentation(read, size, options);
      ADD_FAILURE() << "no error; expected one saying " << expected;
    }
    catch (const cdm::InputError & error)
    {
      EXPECT_NE(std::string(error.what()).find(expected), std::string::npos) << error.what();
    }
  };
  // A window one plane short.
  expectError(
    [&](const cdm::Region & window) {
      cdm::Region shorter = window;
      shorter.Size[2] = std::max<int64_t>(1, window.Size[2] - 1);
      return copying(shorter);
    },
    "came back");
  // The second window carries a NaN in t2w: named by its description.
  expectError(
    [&](const cdm::Region & window) {
      cdm::SourceVolumes volumes = copying(window);
      if (window.Index[2] > 0)
      {
        volumes.at("t2w").Voxels[3] = std::numeric_limits<float>::quiet_NaN();
      }
      return volumes;
    },
    "'case t2w'");
  // A later window lacks a source.
  expectError(
    [&](const cdm::Region & window) {
      cdm::SourceVolumes volumes = copying(window);
      if (window.Index[2] > 0)
      {
        volumes.erase("t2f");
      }
      return volumes;
    },
    "but the first had");
  // A source the model does not know, in the first window.
  expectError(
    [&](const cdm::Region & window) {
      cdm::SourceVolumes volumes = copying(window);
      volumes["t1c"] = volumes.at("t1n");
      return volumes;
    },
    "'t1c'");
}

} // namespace

TEST(StreamedSynthesis, PiecesAlongZCarryOnAndEqualTheWholeVolume)
{
  // What ITK's streaming does: pieces of the output along z, in order, each given only the sources it needs (the
  // halo-padded region). A 3D model with a non-zero Condition Embedding and two samples (image and uncertainty).
  const cdm::Model model = cdm::Model::Create(
    cdm::ModelConfig::FromPreset("tiny", 3, { "t1n", "t2w", "t2f" }, "t1c"), 4, cdm::testing::TestDevice());
  cdm::testing::RandomizeFilm(model, 9);
  const std::array<int64_t, 3> size{ 37, 29, 45 };
  auto                         sources = cdm::testing::MakeCase(3, size);
  sources.erase("t1c");
  cdm::SynthesisOptions twoSamples;
  twoSamples.Samples = 2;
  const cdm::Representation  representation = model.SampleRepresentation(sources, twoSamples);
  const cdm::SynthesisResult whole = model.SynthesizeRegion(sources, representation, cdm::Region{});
  const double               range = Range(whole.Image);
  ASSERT_GT(range, 0.0);
  ASSERT_GT(Range(whole.Uncertainty), 0.0);

  cdm::SynthesisOptions slabs;
  slabs.VoxelsPerCall = 2 * 40 * 32 * 3; // three planes of the padded 40 x 32 window, two samples
  cdm::SynthesisContinuation continuation;
  EXPECT_EQ(continuation.NextPlane(), -1);
  const auto piece = [&](int64_t z0, int64_t z1) {
    cdm::Region region;
    region.Index = { 0, 0, z0 };
    region.Size = { size[0], size[1], z1 - z0 };
    const cdm::Region  required = model.RequiredSourceRegion(region, size);
    cdm::SourceVolumes cropped;
    for (const auto & [name, volume] : sources)
    {
      cropped[name] = cdm::CropVolume(volume, required.Index, required.Size);
    }
    const cdm::SourceExtent    extent{ size, required };
    const cdm::SynthesisResult result =
      model.SynthesizeRegion(cropped, representation, region, slabs, {}, &extent, {}, &continuation);
    EXPECT_LE(MaxDifference(result.Image, cdm::CropVolume(whole.Image, region.Index, region.Size)) / range, 1e-5)
      << "planes " << z0 << ".." << z1;
    EXPECT_LE(MaxDifference(result.Uncertainty, cdm::CropVolume(whole.Uncertainty, region.Index, region.Size)) / range,
              1e-5)
      << "planes " << z0 << ".." << z1;
  };
  const std::vector<int64_t> cuts{ 0, 6, 17, 23, 36, 45 };
  for (size_t i = 0; i + 1 < cuts.size(); ++i)
  {
    piece(cuts[i], cuts[i + 1]);
    // Carried to the next piece; at the image's end nothing is left to carry (and its memory is freed).
    EXPECT_EQ(continuation.NextPlane(), i + 2 < cuts.size() ? cuts[i + 1] : -1);
  }
  EXPECT_EQ(continuation.Continuations(), 4);
  // Out of order, or after Reset(): a fresh start, still the same planes.
  piece(17, 23);
  EXPECT_EQ(continuation.Continuations(), 4);
  piece(23, 30);
  EXPECT_EQ(continuation.Continuations(), 5);
  continuation.Reset();
  EXPECT_EQ(continuation.NextPlane(), -1);
  piece(30, 45);
  EXPECT_EQ(continuation.Continuations(), 5);
}
