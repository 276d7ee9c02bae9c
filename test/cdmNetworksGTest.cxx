/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#include "cdmError.h"
#include "cdmModelImpl.h"
#include "cdmTestData.h"

#include <ATen/autocast_mode.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <iostream>

namespace
{
struct ShapeCase
{
  std::string  Preset;
  unsigned int Dimension;
};

class NetworkShapes : public ::testing::TestWithParam<ShapeCase>
{};

TEST_P(NetworkShapes, EveryNetworkGivesTheDocumentedShape)
{
  const ShapeCase        param = GetParam();
  const cdm::ModelConfig config =
    cdm::ModelConfig::FromPreset(param.Preset, param.Dimension, { "t1n", "t2w", "t2f" }, "t1c");
  // Seeded: the MRM mask is random, and on a 3D `paper` grid of few mask patches an unseeded draw can fall outside
  // the bounds below (it did once in about ten runs).
  cdm::Model::Impl     impl(config, torch::kCPU, 7);
  c10::InferenceMode   guard;
  const int64_t        batch = 2;
  const int64_t        edge = param.Dimension == 2 ? 32 : 16;
  std::vector<int64_t> spatial(param.Dimension, edge);
  spatial.back() = edge + 8; // non-square: axes must not be mixed up
  std::vector<int64_t> sourceShape{ batch, impl.SourceChannels() };
  sourceShape.insert(sourceShape.end(), spatial.begin(), spatial.end());
  std::vector<int64_t> targetShape{ batch, 1 };
  targetShape.insert(targetShape.end(), spatial.begin(), spatial.end());
  const at::Tensor sources = torch::rand(sourceShape);
  const at::Tensor target = torch::rand(targetShape);
  const int64_t    d = config.Network.RepresentationDim;

  const at::Tensor z = impl.EncodeTarget(target);
  EXPECT_EQ(z.sizes(), (std::vector<int64_t>{ batch, d }));
  const at::Tensor c = impl.EncodeSources(sources);
  EXPECT_EQ(c.sizes(), (std::vector<int64_t>{ batch, d }));
  cdm::ItemGenerators maskGenerators(std::vector<uint64_t>(static_cast<size_t>(batch), 7));
  const auto          reconstruction = impl.ReconstructMasked(target, maskGenerators);
  EXPECT_EQ(reconstruction.first.sizes(), target.sizes());
  EXPECT_EQ(reconstruction.second.sizes(), target.sizes());
  const double masked = reconstruction.second.mean().item<double>();
  EXPECT_GT(masked, config.Network.MaskRatio - 0.3);
  EXPECT_LT(masked, config.Network.MaskRatio + 0.3);
  const at::Tensor denoised = impl.Denoiser->forward(torch::randn({ batch, d }), c, torch::full({ batch }, 0.5));
  EXPECT_EQ(denoised.sizes(), (std::vector<int64_t>{ batch, d }));
  const at::Tensor output = impl.SynthesizeBatch(sources, z);
  EXPECT_EQ(output.sizes(), target.sizes());
  EXPECT_TRUE(torch::isfinite(output).all().item<bool>());
}

INSTANTIATE_TEST_SUITE_P(Presets,
                         NetworkShapes,
                         ::testing::Values(ShapeCase{ "tiny", 2 },
                                           ShapeCase{ "tiny", 3 },
                                           ShapeCase{ "small", 2 },
                                           ShapeCase{ "small", 3 },
                                           ShapeCase{ "paper", 2 },
                                           ShapeCase{ "paper", 3 }),
                         [](const ::testing::TestParamInfo<ShapeCase> & info) {
                           return info.param.Preset + std::to_string(info.param.Dimension) + "D";
                         });

TEST(NetworkConfig, PresetsGrowAndUnknownNamesAreRefused)
{
  const auto tiny = cdm::ModelConfig::FromPreset("tiny", 2, { "t1n" }, "t1c");
  const auto small = cdm::ModelConfig::FromPreset("small", 2, { "t1n" }, "t1c");
  const auto paper = cdm::ModelConfig::FromPreset("paper", 2, { "t1n" }, "t1c");
  EXPECT_LT(cdm::Model::Create(tiny, 0, "cpu").NumberOfParameters(),
            cdm::Model::Create(small, 0, "cpu").NumberOfParameters());
  EXPECT_LT(cdm::Model::Create(small, 0, "cpu").NumberOfParameters(),
            cdm::Model::Create(paper, 0, "cpu").NumberOfParameters());
  EXPECT_EQ(paper.Network.RepresentationDim, 256);
  EXPECT_THROW(cdm::ModelConfig::FromPreset("huge", 2, { "t1n" }, "t1c"), cdm::InputError);
  EXPECT_THROW(cdm::ModelConfig::FromPreset("tiny", 4, { "t1n" }, "t1c"), cdm::InputError);
  EXPECT_THROW(cdm::ModelConfig::FromPreset("tiny", 2, { "t1n", "t1c" }, "t1c"), cdm::InputError);
  EXPECT_THROW(cdm::ModelConfig::FromPreset("tiny", 2, { "dwi" }, "t1c"), cdm::InputError);
}

TEST(NetworkConfig, ParameterCountsEqualTheBuiltNetworks)
{
  // Model files are checked against Impl::ParameterCount before any network is built: it must count what the
  // constructors build, for every kind, dimension and preset (and a source set of another size).
  for (const std::string kind : { "cdm", "unet", "ddim", "segmenter" })
  {
    for (const unsigned int dimension : { 2u, 3u })
    {
      for (const std::string preset : { "tiny", "small" })
      {
        for (const std::vector<std::string> & sources :
             { std::vector<std::string>{ "t1n", "t2w", "t2f" }, std::vector<std::string>{ "t2w" } })
        {
          const cdm::ModelConfig config = cdm::ModelConfig::FromPreset(
            preset, dimension, sources, kind == "segmenter" ? cdm::SegmentationName : "t1c", kind);
          const cdm::Model model = cdm::Model::Create(config, 1, "cpu");
          EXPECT_EQ(cdm::Model::Impl::ParameterCount(config), static_cast<double>(model.NumberOfParameters()))
            << kind << " " << dimension << "D " << preset << " with " << sources.size() << " source(s)";
        }
      }
    }
  }
}

TEST(NetworkConfig, JsonRoundTripKeepsEveryField)
{
  cdm::ModelConfig config = cdm::ModelConfig::FromPreset("small", 3, { "t2w", "t2f" }, "t1n");
  config.Diffusion.Schedule = "linear";
  config.Diffusion.TrainSteps = 1000;
  config.Diffusion.SamplingSteps = 50;
  config.Diffusion.BetaStart = 1e-4;
  config.Diffusion.BetaEnd = 2e-2;
  config.TargetScale = 812.5;
  config.SliceAxis = 1;
  config.ProvenanceJson = R"({"seed":3})";
  const cdm::ModelConfig back = cdm::ModelConfig::FromJson(config.ToJson());
  EXPECT_EQ(back.ToJson(), config.ToJson());
  EXPECT_EQ(back.Diffusion.TrainSteps, 1000);
  EXPECT_EQ(back.Sources, config.Sources);
  EXPECT_DOUBLE_EQ(back.TargetScale, 812.5);
}
} // namespace

namespace
{
/** The mean and the largest |a - b| over the voxels, each divided by the range of a. */
std::pair<double, double>
DifferencesOverRange(const cdm::Volume & a, const cdm::Volume & b)
{
  double largest = 0.0;
  double sum = 0.0;
  float  low = a.Voxels.front();
  float  high = low;
  for (size_t i = 0; i < a.Voxels.size(); ++i)
  {
    const double difference = std::abs(static_cast<double>(a.Voxels[i]) - b.Voxels[i]);
    largest = std::max(largest, difference);
    sum += difference;
    low = std::min(low, a.Voxels[i]);
    high = std::max(high, a.Voxels[i]);
  }
  const double range = std::max(1e-12, static_cast<double>(high - low));
  return { sum / static_cast<double>(a.Voxels.size()) / range, largest / range };
}

// Reduced precision runs the convolutions in bf16 / fp16 (autocast). Stated tolerances, from the formats' mantissas
// (bf16 8 bits: 2^-8 = 0.4% per rounding; fp16 11 bits: 0.05%) accumulated over the networks' ~20 layers: the mean
// voxel difference from fp32 within 1% (bf16) and 0.2% (fp16) of the image's range, the largest within 10% and 2%.
// (A first guess, the largest within 5% for bf16, measured 5.4-6.2% on an earlier random model: rounding errors of a
// few ulps meet in the worst of 7,680 voxels.) It must also differ from fp32 (the option is in force), and leave the
// calling thread's own autocast state as it was.
TEST(ReducedPrecision, StaysWithinItsToleranceOfFloat32AndLeavesTheCallersAutocastAlone)
{
  const cdm::Model model =
    cdm::Model::Create(cdm::ModelConfig::FromPreset("tiny", 2, { "t1n", "t2w", "t2f" }, "t1c"), 5, "cpu");
  cdm::testing::RandomizeFilm(model, 5); // z (from the source encoder) shapes the output too
  auto sources = cdm::testing::MakeCase(3, { 48, 40, 4 });
  sources.erase("t1c");
  cdm::SynthesisOptions      options;
  const cdm::SynthesisResult reference = model.Synthesize(sources, options);
  struct Tolerance
  {
    cdm::Precision Precision;
    double         Mean;
    double         Largest;
  };
  for (const Tolerance & tolerance :
       { Tolerance{ cdm::Precision::BFloat16, 1e-2, 1e-1 }, Tolerance{ cdm::Precision::Float16, 2e-3, 2e-2 } })
  {
    SCOPED_TRACE(cdm::PrecisionName(tolerance.Precision));
    options.NetworkPrecision = tolerance.Precision;
    const cdm::SynthesisResult reduced = model.Synthesize(sources, options);
    const auto [mean, largest] = DifferencesOverRange(reference.Image, reduced.Image);
    std::cout << cdm::PrecisionName(tolerance.Precision) << ": difference / range: mean " << mean << ", largest "
              << largest << std::endl;
    EXPECT_GT(largest, 0.0);
    EXPECT_LE(mean, tolerance.Mean);
    EXPECT_LE(largest, tolerance.Largest);
    EXPECT_FALSE(at::autocast::is_autocast_enabled(at::kCPU));
  }
  EXPECT_EQ(cdm::ParsePrecision("bf16"), cdm::Precision::BFloat16);
  EXPECT_THROW(cdm::ParsePrecision("fp8", "--precision"), cdm::InputError);
}
} // namespace

namespace
{
// Model::Create seeds its weights but gives the caller's random stream back untouched (issue 14: no global state).
TEST(CallerRandomState, CreatingAModelLeavesTheDefaultGeneratorAsItWas)
{
  torch::manual_seed(99);
  torch::rand({ 3 });
  const torch::Tensor expected = torch::rand({ 4 });
  torch::manual_seed(99);
  torch::rand({ 3 });
  const cdm::Model first = cdm::Model::Create(cdm::ModelConfig::FromPreset("tiny", 2, { "t1n" }, "t1c"), 5, "cpu");
  EXPECT_TRUE(torch::equal(torch::rand({ 4 }), expected));
  // And the seed still fixes the weights.
  const cdm::Model second = cdm::Model::Create(cdm::ModelConfig::FromPreset("tiny", 2, { "t1n" }, "t1c"), 5, "cpu");
  const auto       a = first.GetImpl().NamedParameters();
  const auto       b = second.GetImpl().NamedParameters();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i)
  {
    EXPECT_EQ(a[i].first, b[i].first);
    EXPECT_TRUE(torch::equal(a[i].second, b[i].second)) << a[i].first;
  }
}
} // namespace

TEST(StreamedUNet, SlabBySlabEqualsTheWholePassForAnySlabSize)
{
  // The small 3D preset (three levels: planes wait at two scales) with a non-zero Condition Embedding, so that z
  // enters every block; an input whose streamed axis is not a multiple of any slab size used.
  const cdm::Model model = cdm::Model::Create(
    cdm::ModelConfig::FromPreset("small", 3, { "t1n", "t2w", "t2f" }, "t1c"), 5, cdm::testing::TestDevice());
  cdm::testing::RandomizeFilm(model, 11);
  cdm::Model::Impl & impl = model.GetImpl();
  c10::InferenceMode guard;
  at::Generator      generator = at::detail::createCPUGenerator(3);
  const int64_t      planes = 36; // a multiple of the alignment (4)
  const at::Tensor   x = at::rand({ 2, impl.SourceChannels(), planes, 12, 20 }, generator).to(impl.Device);
  const at::Tensor   z = at::randn({ 2, impl.Config.Network.RepresentationDim }, generator).to(impl.Device);
  const at::Tensor   whole = impl.UNet->forward(x, z);
  // Each slab size, with the layers free to release all they can, or held to a slab's worth a call (then the end
  // takes calls with no planes until the last output plane has come, and no call returns more than a slab).
  for (const int64_t slab : { int64_t{ 1 }, int64_t{ 3 }, int64_t{ 8 }, planes })
  {
    for (const bool capped : { false, true })
    {
      cdm::nn::UNetStreamState state = impl.UNet->NewStreamState(capped ? slab : 0);
      std::vector<at::Tensor>  pieces;
      int64_t                  next = 0;
      int64_t                  calls = 0;
      bool                     ended = false;
      const auto               take = [&](const cdm::nn::PlaneRun & run) {
        ++calls;
        EXPECT_FALSE(ended) << "planes after the end";
        ended = run.Last;
        if (run.Count() > 0)
        {
          EXPECT_EQ(run.First, next) << "slab " << slab;
          if (capped)
          {
            EXPECT_LE(run.Count(), slab);
          }
          next += run.Count();
          pieces.push_back(run.Values);
        }
      };
      for (int64_t first = 0; first < planes; first += slab)
      {
        const int64_t count = std::min(slab, planes - first);
        take(impl.UNet->ForwardPlanes({ x.narrow(2, first, count), first, first + count == planes }, z, state));
      }
      while (!ended && calls < 10 * planes)
      {
        take(impl.UNet->ForwardPlanes({ at::Tensor(), planes, true }, z, state));
      }
      ASSERT_TRUE(ended) << "slab " << slab;
      ASSERT_EQ(next, planes) << "slab " << slab;
      if (!capped)
      {
        EXPECT_EQ(calls, (planes + slab - 1) / slab); // uncapped, the last slab's call returns the rest
      }
      const at::Tensor streamed = torch::cat(pieces, 2);
      const double     range = (whole.max() - whole.min()).item<double>();
      EXPECT_LE((streamed - whole).abs().max().item<double>(), 1e-5 * range) << "slab " << slab << " " << capped;
    }
  }
  // A plane out of order is a programming error, not a silent wrong image.
  cdm::nn::UNetStreamState state = impl.UNet->NewStreamState();
  EXPECT_THROW(impl.UNet->ForwardPlanes({ x.narrow(2, 4, 4), 4 }, z, state), std::logic_error);
}
