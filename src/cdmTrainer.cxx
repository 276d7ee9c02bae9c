/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#include "cdmTrainer.h"
#include "cdmError.h"
#include "cdmMetrics.h"
#include "cdmModelImpl.h"

#include <nlohmann/json.hpp>
#include <torch/torch.h>
#include <torch/version.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <numeric>
#include <random>

namespace cdm
{

std::string
CheckpointPath(const std::string & output)
{
  return output + ".ckpt";
}

namespace
{
using Clock = std::chrono::steady_clock;

/** splitmix64 of (seed, stage, iteration): every iteration's random stream depends on nothing else. */
uint64_t
MixSeed(uint64_t seed, uint64_t stage, uint64_t iteration)
{
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + stage * 0xBF58476D1CE4E5B9ull + iteration * 0x94D049BB133111EBull + 1;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/** A batch in network layout: sources [B, 2S, ...], target and foreground mask [B, 1, ...]. */
struct Batch
{
  at::Tensor                        Sources;
  at::Tensor                        Target;
  at::Tensor                        Mask;
  std::vector<std::vector<int64_t>> ValidSizes; ///< spatial sizes before padding, per item

  Batch
  To(const c10::Device & device) const
  {
    return { Sources.to(device), Target.to(device), Mask.to(device), ValidSizes };
  }
};

/** Random slices (2D) or patches (3D) of the training cases, in the layout the networks use. */
class PatchSampler
{
public:
  PatchSampler(const Dataset & data, const std::vector<size_t> & cases, const Model::Impl & impl, int64_t patch)
      : m_Patch(patch)
  {
    const ModelConfig & config = impl.Config;
    for (const size_t index : cases)
    {
      const TrainingCase &                              c = data.Cases()[index];
      const Volume &                                    target = c.Images.at(config.Target);
      std::map<std::string, const std::vector<float> *> sources;
      for (const auto & name : config.Sources)
      {
        sources[name] = &c.Images.at(name).Voxels;
      }
      Entry entry;
      entry.Sources = impl.ToNetworkLayout(impl.SourceTensor(sources, target.Size)).contiguous();
      const std::vector<int64_t> shape{ 1, target.Size[2], target.Size[1], target.Size[0] };
      entry.Target =
        impl.ToNetworkLayout(torch::from_blob(const_cast<float *>(target.Voxels.data()), shape, torch::kFloat32))
          .contiguous();
      const std::vector<uint8_t> mask = data.Rule().ForegroundMask(target);
      entry.Mask = impl
                     .ToNetworkLayout(
                       torch::from_blob(const_cast<uint8_t *>(mask.data()), shape, torch::kUInt8).to(torch::kFloat32))
                     .contiguous();
      // Slices (2D) worth training on: at least a quarter of the largest foreground area.
      const at::Tensor area = entry.Mask.flatten(1).sum(1);
      const double     largest = area.max().item<double>();
      for (int64_t s = 0; s < area.size(0); ++s)
      {
        if (largest > 0 && area[s].item<double>() >= 0.25 * largest)
        {
          entry.Slices.push_back(s);
        }
      }
      if (!entry.Slices.empty())
      {
        m_Entries.push_back(std::move(entry));
      }
    }
    if (m_Entries.empty())
    {
      throw InputError("training data: no case has foreground in the target modality");
    }
  }

  /** A random batch of slices (2D) or patches (3D), cropped at random positions and padded to the patch size. */
  Batch
  Sample(std::mt19937_64 & random, int64_t batchSize) const
  {
    std::vector<Item> items;
    for (int64_t i = 0; i < batchSize; ++i)
    {
      const Entry & entry = m_Entries[random() % m_Entries.size()];
      const int64_t slice = entry.Slices[random() % entry.Slices.size()];
      items.push_back(Crop(entry, slice, &random));
    }
    return Stack(items);
  }

  /** Up to `count` whole slices (2D) or centred patches (3D), spread evenly over the cases: for validation. */
  std::vector<Batch>
  Fixed(int64_t count, int64_t perBatch) const
  {
    std::vector<Item> items;
    for (int64_t i = 0; i < count; ++i)
    {
      const Entry & entry = m_Entries[static_cast<size_t>(i) % m_Entries.size()];
      const size_t  round = static_cast<size_t>(i) / m_Entries.size();
      const size_t  pick =
        (entry.Slices.size() * (2 * round + 1)) / (2 * ((count + m_Entries.size() - 1) / m_Entries.size()));
      items.push_back(Crop(entry, entry.Slices[std::min(pick, entry.Slices.size() - 1)], nullptr));
    }
    std::vector<Batch> batches;
    for (size_t start = 0; start < items.size(); start += static_cast<size_t>(perBatch))
    {
      const auto end = std::min(items.size(), start + static_cast<size_t>(perBatch));
      batches.push_back(Stack(std::vector<Item>(items.begin() + static_cast<std::ptrdiff_t>(start),
                                                items.begin() + static_cast<std::ptrdiff_t>(end))));
    }
    return batches;
  }

private:
  struct Entry
  {
    at::Tensor           Sources; // [N, 2S, ...] (2D) or [1, 2S, Z, Y, X] (3D)
    at::Tensor           Target;
    at::Tensor           Mask;
    std::vector<int64_t> Slices;
  };
  struct Item
  {
    at::Tensor           Sources, Target, Mask; // [C, ...] cropped and padded to the patch
    std::vector<int64_t> ValidSize;
  };

  Item
  Crop(const Entry & entry, int64_t slice, std::mt19937_64 * random) const
  {
    at::Tensor           sources = entry.Sources[slice];
    at::Tensor           target = entry.Target[slice];
    at::Tensor           mask = entry.Mask[slice];
    Item                 item;
    std::vector<int64_t> pads;
    for (int64_t d = 1; d < sources.dim(); ++d)
    {
      const int64_t size = sources.size(d);
      const int64_t keep = std::min(size, m_Patch);
      const int64_t offset =
        size > keep ? (random ? static_cast<int64_t>((*random)() % (size - keep + 1)) : (size - keep) / 2) : 0;
      sources = sources.narrow(d, offset, keep);
      target = target.narrow(d, offset, keep);
      mask = mask.narrow(d, offset, keep);
      item.ValidSize.push_back(keep);
    }
    for (int64_t d = sources.dim() - 1; d >= 1; --d)
    {
      pads.push_back(0);
      pads.push_back(m_Patch - sources.size(d));
    }
    item.Sources = torch::constant_pad_nd(sources, pads, 0.0);
    item.Target = torch::constant_pad_nd(target, pads, 0.0);
    item.Mask = torch::constant_pad_nd(mask, pads, 0.0);
    return item;
  }

  static Batch
  Stack(const std::vector<Item> & items)
  {
    std::vector<at::Tensor> sources, targets, masks;
    Batch                   batch;
    for (const auto & item : items)
    {
      sources.push_back(item.Sources);
      targets.push_back(item.Target);
      masks.push_back(item.Mask);
      batch.ValidSizes.push_back(item.ValidSize);
    }
    batch.Sources = torch::stack(sources);
    batch.Target = torch::stack(targets);
    batch.Mask = torch::stack(masks);
    return batch;
  }

  int64_t            m_Patch;
  std::vector<Entry> m_Entries;
};

/** Zeroes whole sources (image and availability channels) at random, keeping at least one per item. */
void
DropSources(Batch & batch, double probability, std::mt19937_64 & random)
{
  if (probability <= 0.0)
  {
    return;
  }
  const int64_t                          sources = batch.Sources.size(1) / 2;
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  for (int64_t b = 0; b < batch.Sources.size(0); ++b)
  {
    std::vector<int64_t> dropped;
    for (int64_t s = 0; s < sources; ++s)
    {
      if (uniform(random) < probability)
      {
        dropped.push_back(s);
      }
    }
    if (static_cast<int64_t>(dropped.size()) == sources)
    {
      dropped.pop_back();
    }
    for (const int64_t s : dropped)
    {
      batch.Sources[b].narrow(0, 2 * s, 2).zero_();
    }
  }
}

/** One training stage: which networks it trains and its loss. */
struct StageDefinition
{
  std::string                              Name;
  std::vector<std::string>                 Networks;
  double                                   LearningRateFactor{ 1.0 };
  std::function<at::Tensor(const Batch &)> Loss;
  std::function<at::Tensor(const Batch &)> Predict; // for validation, under NoGradGuard
};

at::Tensor
MaskedMean(const at::Tensor & values, const at::Tensor & mask)
{
  return (values * mask).sum() / mask.sum().clamp_min(1.0);
}

struct PresetDefaults
{
  int     BatchSize;
  int64_t Patch2D;
  int64_t Patch3D;
  double  LearningRate;
};

PresetDefaults
DefaultsFor(const std::string & preset)
{
  if (preset == "small")
  {
    return { 8, 256, 64, 5e-4 };
  }
  if (preset == "paper")
  {
    return { 4, 256, 96, 2e-4 };
  }
  return { 8, 256, 32, 3e-3 };
}

nlohmann::json
ReadTrainingState(const safetensors::Header & header, const std::string & path)
{
  const auto found = header.Metadata.find("training");
  if (found == header.Metadata.end())
  {
    throw InputError("checkpoint '" + path + "' holds no training state");
  }
  return nlohmann::json::parse(found->second);
}

/** Saves weights, Adam moments and progress in one file (atomic), so that a kill never splits them. */
void
SaveCheckpoint(const Model::Impl &               impl,
               const std::string &               path,
               const nlohmann::json &            state,
               const torch::optim::Adam *        optimizer,
               const safetensors::NamedTensors & stageParameters)
{
  safetensors::NamedTensors tensors = impl.NamedParameters();
  nlohmann::json            steps = nlohmann::json::object();
  if (optimizer)
  {
    for (const auto & [name, parameter] : stageParameters)
    {
      const auto found = optimizer->state().find(parameter.unsafeGetTensorImpl());
      if (found == optimizer->state().end())
      {
        continue;
      }
      const auto & adam = static_cast<const torch::optim::AdamParamState &>(*found->second);
      tensors.emplace_back("optimizer." + name + ".exp_avg", adam.exp_avg());
      tensors.emplace_back("optimizer." + name + ".exp_avg_sq", adam.exp_avg_sq());
      steps[name] = adam.step();
    }
  }
  nlohmann::json full = state;
  full["optimizer_steps"] = steps;
  safetensors::Write(
    path,
    { { "cdm", impl.Config.ToJson() }, { "format", "itk-cdm-checkpoint" }, { "training", full.dump() } },
    tensors);
}

void
RestoreOptimizer(torch::optim::Adam &              optimizer,
                 const safetensors::NamedTensors & stored,
                 const nlohmann::json &            steps,
                 const safetensors::NamedTensors & stageParameters)
{
  std::map<std::string, at::Tensor> byName(stored.begin(), stored.end());
  for (const auto & [name, parameter] : stageParameters)
  {
    if (!steps.contains(name))
    {
      continue;
    }
    auto state = std::make_unique<torch::optim::AdamParamState>();
    state->step(steps.at(name).get<int64_t>());
    state->exp_avg(byName.at("optimizer." + name + ".exp_avg").to(parameter.device()));
    state->exp_avg_sq(byName.at("optimizer." + name + ".exp_avg_sq").to(parameter.device()));
    optimizer.state()[parameter.unsafeGetTensorImpl()] = std::move(state);
  }
}

struct ValidationFigures
{
  double PSNR{ 0.0 };
  double SSIM{ 0.0 };
};

/** Mean PSNR/SSIM over validation items, inside the target's foreground, normalised intensities (range 1). */
ValidationFigures
Validate(const std::vector<Batch> &                       batches,
         const std::function<at::Tensor(const Batch &)> & predict,
         const c10::Device &                              device)
{
  ValidationFigures figures;
  int64_t           items = 0;
  for (const auto & host : batches)
  {
    const Batch      batch = host.To(device);
    const at::Tensor prediction = predict(batch).to(torch::kCPU, torch::kFloat32).contiguous();
    for (int64_t b = 0; b < prediction.size(0); ++b)
    {
      at::Tensor reference = host.Target[b][0];
      at::Tensor predicted = prediction[b][0];
      at::Tensor mask = host.Mask[b][0];
      for (size_t d = 0; d < host.ValidSizes[b].size(); ++d)
      {
        reference = reference.narrow(static_cast<int64_t>(d), 0, host.ValidSizes[b][d]);
        predicted = predicted.narrow(static_cast<int64_t>(d), 0, host.ValidSizes[b][d]);
        mask = mask.narrow(static_cast<int64_t>(d), 0, host.ValidSizes[b][d]);
      }
      reference = reference.contiguous();
      predicted = predicted.contiguous();
      const at::Tensor maskBytes = mask.to(torch::kUInt8).contiguous();
      if (maskBytes.sum().item<int64_t>() == 0)
      {
        continue;
      }
      // Network layout keeps the last axis fastest, as Volume's x.
      std::array<int64_t, 3> size{ 1, 1, 1 };
      for (int64_t d = 0; d < reference.dim(); ++d)
      {
        size[static_cast<size_t>(reference.dim() - 1 - d)] = reference.size(d);
      }
      const std::vector<float>   r(reference.data_ptr<float>(), reference.data_ptr<float>() + reference.numel());
      const std::vector<float>   p(predicted.data_ptr<float>(), predicted.data_ptr<float>() + predicted.numel());
      const std::vector<uint8_t> m(maskBytes.data_ptr<uint8_t>(), maskBytes.data_ptr<uint8_t>() + maskBytes.numel());
      const ImageMetrics         metrics = CompareImages(r, p, size, 1.0, &m);
      figures.PSNR += metrics.PSNR;
      figures.SSIM += metrics.SSIM;
      ++items;
    }
  }
  if (items > 0)
  {
    figures.PSNR /= static_cast<double>(items);
    figures.SSIM /= static_cast<double>(items);
  }
  return figures;
}

double
Median(std::vector<double> values)
{
  std::sort(values.begin(), values.end());
  return values.empty() ? 1.0 : values[values.size() / 2];
}
} // namespace

TrainingReport
Train(const Dataset &                                       data,
      const TrainingOptions &                               options,
      const std::function<void(const TrainingProgress &)> & progress,
      const std::atomic<bool> *                             stopRequested)
{
  const auto runStart = Clock::now();
  if (options.Output.empty())
  {
    throw InputError("training: no output model file given (--out)");
  }
  if (options.Iterations < 1)
  {
    throw InputError("training: iterations must be at least 1, got " + std::to_string(options.Iterations));
  }
  // The stages of this model kind (validates the kind too).
  const std::vector<std::string> stageOrder =
    ModelConfig::FromPreset("tiny", 2, { "t1n" }, "t1c", options.ModelKind).Stages();
  std::vector<std::string> stages;
  if (options.Stage == "all")
  {
    stages = stageOrder;
  }
  else if (std::find(stageOrder.begin(), stageOrder.end(), options.Stage) != stageOrder.end())
  {
    stages = { options.Stage };
  }
  else
  {
    std::string expected = "all";
    for (const auto & name : stageOrder)
    {
      expected += ", " + name;
    }
    throw InputError("training stage '" + options.Stage + "' is not one of a '" + options.ModelKind +
                     "' model; expected " + expected);
  }
  for (const auto & [name, count] : options.StageIterations)
  {
    if (std::find(stageOrder.begin(), stageOrder.end(), name) == stageOrder.end())
    {
      throw InputError("training: --stage-iterations names stage '" + name + "', which a '" + options.ModelKind +
                       "' model does not have");
    }
    if (count < 1)
    {
      throw InputError("training: --stage-iterations " + name + "=" + std::to_string(count) +
                       ": iterations must be at least 1");
    }
  }
  if (data.Cases().empty())
  {
    throw InputError("training: no usable case in the data set");
  }
  for (const auto & c : data.Cases())
  {
    for (const auto & name : options.Sources)
    {
      if (c.Images.count(name) == 0)
      {
        throw InputError("training: case '" + c.Name + "' has no '" + name + "' image");
      }
    }
    if (c.Images.count(options.Target) == 0)
    {
      throw InputError("training: case '" + c.Name + "' has no '" + options.Target + "' image");
    }
  }

  // The model: fresh, or the checkpoint's.
  const std::string         checkpoint = CheckpointPath(options.Output);
  nlohmann::json            state = { { "stage", "" }, { "iteration", 0 }, { "completed", nlohmann::json::object() } };
  safetensors::NamedTensors stored;
  std::shared_ptr<Model::Impl> implPointer;
  if (options.Resume)
  {
    if (!std::filesystem::exists(checkpoint))
    {
      throw InputError("--resume: checkpoint '" + checkpoint + "' does not exist; expected one from an earlier run");
    }
    safetensors::Header header;
    stored = safetensors::Read(checkpoint, &header);
    const ModelConfig config = ModelConfig::FromJson(header.Metadata.at("cdm"));
    if (config.Target != options.Target || config.Sources != options.Sources || config.Dimension != options.Dimension ||
        config.Preset != options.Preset || config.ModelKind != options.ModelKind)
    {
      throw InputError("--resume: checkpoint '" + checkpoint + "' was made for a '" + config.Preset + "' " +
                       std::to_string(config.Dimension) + "D model of target " + config.Target +
                       "; the options ask for another");
    }
    state = ReadTrainingState(header, checkpoint);
    implPointer = std::make_shared<Model::Impl>(config, ToTorchDevice(ResolveDevice(options.Device)));
    safetensors::NamedTensors weights;
    for (const auto & item : stored)
    {
      if (item.first.rfind("optimizer.", 0) != 0)
      {
        weights.push_back(item);
      }
    }
    implPointer->AssignParameters(weights, checkpoint);
  }
  else
  {
    ModelConfig config =
      ModelConfig::FromPreset(options.Preset, options.Dimension, options.Sources, options.Target, options.ModelKind);
    config.SliceAxis = options.SliceAxis;
    config.SourcesOptional = options.SourceDropout > 0.0;
    config.Normalization = data.Rule();
    std::vector<double> scales;
    for (const auto & c : data.Cases())
    {
      scales.push_back(c.Scales.at(options.Target));
    }
    config.TargetScale = Median(scales);
    torch::manual_seed(options.Seed);
    implPointer = std::make_shared<Model::Impl>(config, ToTorchDevice(ResolveDevice(options.Device)));
  }
  Model::Impl &       impl = *implPointer;
  const ModelConfig & config = impl.Config;

  // Training and validation cases: the last ValidationFraction of the (sorted) cases are held out.
  const size_t total = data.Cases().size();
  size_t held = total > 1 ? std::max<size_t>(1, static_cast<size_t>(options.ValidationFraction * total + 0.5)) : 0;
  held = std::min(held, total - 1);
  std::vector<size_t> trainCases(total - held), validationCases;
  std::iota(trainCases.begin(), trainCases.end(), 0);
  for (size_t i = total - held; i < total; ++i)
  {
    validationCases.push_back(i);
  }
  if (validationCases.empty())
  {
    validationCases = trainCases;
  }
  const PresetDefaults defaults = DefaultsFor(config.Preset);
  const int64_t        alignment = std::max(config.UNetAlignment(), int64_t{ 1 } << config.Network.EncoderLevels);
  int64_t              patch =
    options.PatchSize > 0 ? options.PatchSize : (config.Dimension == 2 ? defaults.Patch2D : defaults.Patch3D);
  if (config.Dimension == 2 && options.PatchSize <= 0)
  {
    // Whole slices when they fit: the representation then sees what it sees at inference.
    int64_t largest = 0;
    for (const auto & c : data.Cases())
    {
      const Volume & v = c.Images.at(config.Target);
      for (int a = 0; a < 3; ++a)
      {
        if (a != config.SliceAxis)
        {
          largest = std::max(largest, v.Size[a]);
        }
      }
    }
    patch = std::min(patch, largest);
  }
  patch = (patch + alignment - 1) / alignment * alignment;
  const int    batchSize = options.BatchSize > 0 ? options.BatchSize : defaults.BatchSize;
  const double learningRate = options.LearningRate > 0.0 ? options.LearningRate : defaults.LearningRate;

  const PatchSampler trainSampler(data, trainCases, impl, patch);
  const PatchSampler validationSampler(
    data, validationCases, impl, config.Dimension == 2 ? std::max<int64_t>(patch, alignment) : patch);
  const std::vector<Batch> validation = validationSampler.Fixed(8, 4);

  TrainingReport report;
  {
    // The constant baseline: the mean foreground intensity everywhere.
    const auto constant = [](const Batch & b) { return torch::ones_like(b.Target) * MaskedMean(b.Target, b.Mask); };
    torch::NoGradGuard      noGrad;
    const ValidationFigures figures = Validate(validation, constant, torch::kCPU);
    report.ConstantBaselinePSNR = figures.PSNR;
    report.ConstantBaselineSSIM = figures.SSIM;
  }

  // The stages (DESIGN.md section 1).
  const int  trainSteps = config.Diffusion.TrainSteps;
  const bool unrolled = config.Diffusion.SamplingSteps <= 16;
  const auto trainingRepresentation = [&](const at::Tensor & condition, const at::Tensor & z) {
    // DiffIR: unroll every reverse step from q(z_{T-1} | z) with gradients; long schedules: one random step.
    if (unrolled)
    {
      const at::Tensor start = impl.Schedule->QSample(z, trainSteps - 1, torch::randn_like(z));
      return impl.SampleRepresentation(condition, start, 0.0, {});
    }
    const int        t = static_cast<int>(torch::randint(trainSteps, { 1 }).item<int64_t>());
    const at::Tensor zt = impl.Schedule->QSample(z, t, torch::randn_like(z));
    return impl.Denoiser->forward(
      zt, condition, torch::full({ z.size(0) }, static_cast<double>(t) / trainSteps, z.options()));
  };
  const auto sampledRepresentation = [&](const Batch & b) {
    const at::Tensor condition = impl.EncodeSources(b.Sources);
    const at::Tensor start = SeededNoise({ condition.size(0), condition.size(1) }, options.Seed + 17, impl.Device);
    return impl.SampleRepresentation(condition, start, 0.0, {});
  };
  std::map<std::string, StageDefinition> definitions;
  definitions["mrm"] = { "mrm",
                         { "mrm_encoder", "mrm_decoder" },
                         1.0,
                         [&](const Batch & b) {
                           const auto [prediction, mask] = impl.ReconstructMasked(b.Target);
                           return MaskedMean((prediction - b.Target).pow(2), mask);
                         },
                         [&](const Batch & b) {
                           torch::manual_seed(options.Seed + 29);
                           return impl.ReconstructMasked(b.Target).first;
                         } };
  definitions["cunet"] = { "cunet",
                           { "unet" },
                           1.0,
                           [&](const Batch & b) {
                             const at::Tensor z = impl.EncodeTarget(b.Target).detach();
                             return (impl.SynthesizeBatch(b.Sources, z) - b.Target).abs().mean();
                           },
                           [&](const Batch & b) {
                             return impl.SynthesizeBatch(b.Sources, impl.EncodeTarget(b.Target));
                           } };
  definitions["mdn"] = { "mdn",
                         { "source_encoder", "denoiser" },
                         1.0,
                         [&](const Batch & b) {
                           const at::Tensor z = impl.EncodeTarget(b.Target).detach();
                           return (trainingRepresentation(impl.EncodeSources(b.Sources), z) - z).abs().mean();
                         },
                         [&](const Batch & b) { return impl.SynthesizeBatch(b.Sources, sampledRepresentation(b)); } };
  definitions["finetune"] = { "finetune",
                              { "source_encoder", "denoiser", "unet" },
                              0.2,
                              [&](const Batch & b) {
                                const at::Tensor z = impl.EncodeTarget(b.Target).detach();
                                const at::Tensor zHat = trainingRepresentation(impl.EncodeSources(b.Sources), z);
                                return (impl.SynthesizeBatch(b.Sources, zHat) - b.Target).abs().mean() +
                                       (zHat - z).abs().mean();
                              },
                              definitions["mdn"].Predict };
  // The baselines, trained by the same loop: a UNet regressor, and image-space diffusion predicting noise.
  definitions["unet"] = { "unet",
                          { "unet" },
                          1.0,
                          [&](const Batch & b) {
                            return (impl.SynthesizeBatch(b.Sources, {}) - b.Target).abs().mean();
                          },
                          [&](const Batch & b) { return impl.SynthesizeBatch(b.Sources, {}); } };
  definitions["ddim"] = { "ddim",
                          { "unet", "time_embedding" },
                          1.0,
                          [&](const Batch & b) {
                            const int64_t    batch = b.Target.size(0);
                            const at::Tensor t = torch::randint(trainSteps, { batch }, torch::kLong);
                            const at::Tensor alphaBars =
                              torch::tensor(impl.Schedule->AlphaBars(), torch::kFloat64).index_select(0, t);
                            std::vector<int64_t> shape(static_cast<size_t>(b.Target.dim()), 1);
                            shape[0] = batch;
                            const at::Tensor abar = alphaBars.to(torch::kFloat32).view(shape).to(impl.Device);
                            const at::Tensor noise = torch::randn_like(b.Target);
                            const at::Tensor xt = abar.sqrt() * b.Target + (1.0 - abar).sqrt() * noise;
                            const at::Tensor fraction = (t.to(torch::kFloat32) / trainSteps).to(impl.Device);
                            return (impl.PredictNoise(b.Sources, xt, fraction) - noise).pow(2).mean();
                          },
                          [&](const Batch & b) {
                            const std::vector<int64_t> shape = b.Target.sizes().vec();
                            return impl.SampleImage(
                              b.Sources, SeededNoise(shape, options.Seed + 17, impl.Device), 0.0, {});
                          } };

  for (const std::string & stageName : stages)
  {
    const StageDefinition & stage = definitions.at(stageName);
    const auto              stageIndex =
      static_cast<uint64_t>(std::find(stageOrder.begin(), stageOrder.end(), stageName) - stageOrder.begin());
    const int iterations = options.IterationsOf(stageName);
    int       firstIteration = state["completed"].value(stageName, 0);
    if (firstIteration >= iterations)
    {
      continue;
    }
    safetensors::NamedTensors parameters;
    for (const auto & [name, tensor] : impl.NamedParameters())
    {
      for (const auto & network : stage.Networks)
      {
        if (name.rfind(network + ".", 0) == 0)
        {
          parameters.emplace_back(name, tensor);
        }
      }
    }
    std::vector<at::Tensor> tensors;
    for (const auto & item : parameters)
    {
      tensors.push_back(item.second);
    }
    torch::optim::Adam optimizer(tensors, torch::optim::AdamOptions(learningRate * stage.LearningRateFactor));
    if (state.value("stage", "") == stageName)
    {
      firstIteration = state.value("iteration", firstIteration);
      RestoreOptimizer(optimizer, stored, state.value("optimizer_steps", nlohmann::json::object()), parameters);
    }
    const auto checkpointState = [&](int iteration, bool inProgress) {
      nlohmann::json s = state;
      s["stage"] = inProgress ? stageName : "";
      s["iteration"] = inProgress ? iteration : 0;
      if (!inProgress)
      {
        s["completed"][stageName] = iteration;
      }
      s["seed"] = options.Seed;
      return s;
    };

    StageReport stageReport;
    stageReport.Stage = stageName;
    stageReport.FirstIteration = firstIteration;
    std::vector<double> losses;
    const auto          stageStart = Clock::now();
    impl.SetTraining(true);
    int iteration = firstIteration;
    for (; iteration < iterations; ++iteration)
    {
      const uint64_t  seed = MixSeed(options.Seed, stageIndex, static_cast<uint64_t>(iteration));
      std::mt19937_64 random(seed);
      torch::manual_seed(seed);
      Batch batch = trainSampler.Sample(random, batchSize);
      DropSources(batch, options.SourceDropout, random);
      batch = batch.To(impl.Device);
      optimizer.zero_grad();
      const at::Tensor loss = stage.Loss(batch);
      loss.backward();
      optimizer.step();
      losses.push_back(loss.item<double>());

      TrainingProgress line;
      line.Stage = stageName;
      line.Iteration = iteration + 1;
      line.Iterations = iterations;
      line.Loss = losses.back();
      const double seconds = std::chrono::duration<double>(Clock::now() - stageStart).count();
      line.IterationsPerSecond = static_cast<double>(iteration + 1 - firstIteration) / std::max(seconds, 1e-9);
      line.EtaSeconds = (iterations - iteration - 1) / std::max(line.IterationsPerSecond, 1e-9);
      const bool last = iteration + 1 == iterations;
      if ((iteration + 1) % std::max(1, options.ValidationInterval) == 0 || last)
      {
        impl.SetTraining(false);
        torch::NoGradGuard      noGrad;
        const ValidationFigures figures = Validate(validation, stage.Predict, impl.Device);
        impl.SetTraining(true);
        line.HasValidation = true;
        line.ValidationPSNR = stageReport.ValidationPSNR = figures.PSNR;
        line.ValidationSSIM = stageReport.ValidationSSIM = figures.SSIM;
      }
      if (progress)
      {
        progress(line);
      }
      const bool stop = stopRequested && stopRequested->load();
      if (stop || (!last && (iteration + 1) % std::max(1, options.CheckpointInterval) == 0))
      {
        SaveCheckpoint(impl, checkpoint, checkpointState(iteration + 1, true), &optimizer, parameters);
      }
      if (stop)
      {
        ++iteration;
        break;
      }
    }
    impl.SetTraining(false);
    const size_t window = std::min<size_t>(5, losses.size());
    stageReport.LastIteration = iteration;
    if (window > 0)
    {
      stageReport.FirstLoss =
        std::accumulate(losses.begin(), losses.begin() + static_cast<std::ptrdiff_t>(window), 0.0) / window;
      stageReport.LastLoss =
        std::accumulate(losses.end() - static_cast<std::ptrdiff_t>(window), losses.end(), 0.0) / window;
    }
    stageReport.Seconds = std::chrono::duration<double>(Clock::now() - stageStart).count();
    report.Stages.push_back(stageReport);
    if (iteration < iterations)
    {
      report.Interrupted = true;
      report.Seconds = std::chrono::duration<double>(Clock::now() - runStart).count();
      return report;
    }
    state = checkpointState(iterations, false);
    SaveCheckpoint(impl, checkpoint, state, nullptr, {});
  }

  // The model file: weights and the configuration with its provenance.
  nlohmann::json provenance = nlohmann::json::parse(impl.Config.ProvenanceJson, nullptr, false);
  if (!provenance.is_object())
  {
    provenance = nlohmann::json::object();
  }
  provenance["trainer"] = "itk-cdm " CDM_VERSION_STRING;
  provenance["torch"] = TORCH_VERSION;
  provenance["seed"] = options.Seed;
  provenance["device"] = impl.Device.str();
  provenance["iterations_per_stage"] = options.Iterations;
  for (const auto & [name, count] : options.StageIterations)
  {
    provenance["stage_iterations"][name] = count;
  }
  provenance["stages_completed"] = state["completed"];
  provenance["training_cases"] = trainCases.size();
  provenance["validation_cases"] =
    validationCases.size() == trainCases.size() && held == 0 ? 0 : validationCases.size();
  provenance["batch_size"] = batchSize;
  provenance["patch_size"] = patch;
  provenance["learning_rate"] = learningRate;
  provenance["source_dropout"] = options.SourceDropout;
  if (!report.Stages.empty())
  {
    provenance["validation_psnr"] = report.Stages.back().ValidationPSNR;
    provenance["validation_ssim"] = report.Stages.back().ValidationSSIM;
  }
  impl.Config.ProvenanceJson = provenance.dump();
  Model(implPointer).Save(options.Output);
  report.Seconds = std::chrono::duration<double>(Clock::now() - runStart).count();
  return report;
}

} // namespace cdm
