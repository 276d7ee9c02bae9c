/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#include "cdmTrainer.h"
#include "cdmAtomicFile.h"
#include "cdmDistributed.h"
#include "cdmError.h"
#include "cdmModelImpl.h"
#include "cdmTrainingBatch.h"
#include "cdmTrainingCheckpoint.h"
#include "cdmTrainingStages.h"
#include "cdmTrainingValidation.h"

#include <nlohmann/json.hpp>
#include <torch/torch.h>
#include <torch/version.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
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

/** A 64-bit digest of the training data as loaded: case names, normalisation scales, voxels and segmentations. */
std::string
DataDigest(const Dataset & data)
{
  uint64_t   digest = 0x84222325CBF29CE4ull;
  const auto mixBytes = [&digest](const void * bytes, size_t count) {
    const auto * p = static_cast<const unsigned char *>(bytes);
    size_t       i = 0;
    for (; i + 8 <= count; i += 8)
    {
      uint64_t word = 0;
      std::memcpy(&word, p + i, 8);
      digest = MixSeed(digest, word, 0);
    }
    for (; i < count; ++i)
    {
      digest = MixSeed(digest, p[i], 1);
    }
  };
  const auto mixVolume = [&](const Volume & volume) {
    mixBytes(volume.Size.data(), sizeof(volume.Size));
    mixBytes(volume.Data(), static_cast<size_t>(volume.StoredVoxels()) * sizeof(float));
  };
  for (const TrainingCase & c : data.Cases())
  {
    mixBytes(c.Name.data(), c.Name.size());
    for (const auto & [modality, image] : c.Images)
    {
      mixBytes(modality.data(), modality.size());
      mixBytes(&c.Scales.at(modality), sizeof(double));
      mixVolume(image);
    }
    mixVolume(c.Segmentation);
  }
  char text[17];
  std::snprintf(text, sizeof(text), "%016llx", static_cast<unsigned long long>(digest));
  return text;
}

/** What makes a run's result, by the `cdm train` option that sets it (effective values: preset defaults resolved),
 *  and the data's digest. A checkpoint keeps it; a resume must match it. Iteration counts may grow (training longer
 *  is a resume's purpose), and the device may change (a run moved to another machine). */
nlohmann::json
TrainingFingerprint(const Dataset &         data,
                    const TrainingOptions & options,
                    int64_t                 patch,
                    int                     batchSize,
                    double                  learningRate)
{
  const NormalizationRule & rule = data.Rule();
  nlohmann::json            fingerprint = {
               { "--seed", options.Seed },
               { "--batch-size", batchSize },
               { "--patch-size", patch },
               { "--learning-rate", learningRate },
               { "--slice-axis", options.SliceAxis },
               { "--validation-fraction", options.ValidationFraction },
               { "--source-dropout", options.SourceDropout },
               { "--tumour-fraction", options.TumourFraction },
               { "--tumour-loss-weight", options.TumourLossWeight },
               { "--synthesis-loss", options.SynthesisLoss },
               { "--teacher-encoder", options.TeacherEncoder },
               { "--mdn-schedule", options.MdnSchedule },
               { "--representation-noise", options.RepresentationNoise },
               { "--film-init", options.FilmInit },
               { "--intensity-rule", rule.Method + " " + std::to_string(rule.UpperPercentile) + " " + std::to_string(rule.Clip) },
               { "--data", std::to_string(data.Cases().size()) + " cases, digest " + DataDigest(data) }
  };
  // Checkpoints from before the option carry no such key and resume unchecked on it (CheckResumeFingerprint).
  fingerprint["--lr-decay"] = options.LearningRateDecayAt > 0.0 ? std::to_string(options.LearningRateDecayAt) + " x" +
                                                                    std::to_string(options.LearningRateDecayFactor)
                                                                : std::string("off");
  return fingerprint;
}

/** Throws InputError naming the first option whose value differs between the checkpoint's run and this one. */
void
CheckResumeFingerprint(const nlohmann::json & stored, const nlohmann::json & current, const std::string & checkpoint)
{
  for (const auto & [option, value] : current.items())
  {
    if (stored.contains(option) && stored.at(option) != value)
    {
      throw InputError("--resume: checkpoint '" + checkpoint + "' was made with " + option + " " +
                       stored.at(option).dump() + " but this run has " + value.dump() +
                       "; a resumed run must repeat every option that shapes the result (or start afresh)");
    }
  }
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

double
Median(std::vector<double> values)
{
  std::sort(values.begin(), values.end());
  return values.empty() ? 1.0 : values[values.size() / 2];
}

/** Validates the options against the data and returns the stages to run (and, in `stageOrderOut`, all of the kind's).
 */
std::vector<std::string>
StagesToRun(const Dataset & data, const TrainingOptions & options, std::vector<std::string> * stageOrderOut)
{
  if (options.Output.empty())
  {
    throw InputError("training: no output model file given (--out)");
  }
  CheckOutputFile(options.Output, "training output (--out)"); // before the training, not at its first checkpoint
  if (options.Iterations < 1)
  {
    throw InputError("training: iterations must be at least 1, got " + std::to_string(options.Iterations));
  }
  if (!(options.LearningRateDecayAt >= 0.0 && options.LearningRateDecayAt < 1.0) ||
      !(options.LearningRateDecayFactor >= 0.0))
  {
    throw InputError("training: --lr-decay-at " + std::to_string(options.LearningRateDecayAt) +
                     " / --lr-decay-factor " + std::to_string(options.LearningRateDecayFactor) +
                     ": expected a fraction of the iterations in [0, 1) and a factor >= 0");
  }
  if (options.MdnSchedule != "diffir" && options.MdnSchedule != "linear")
  {
    throw InputError("training: MDN schedule '" + options.MdnSchedule + "' is unknown; expected diffir or linear");
  }
  if (options.FilmInit != "zero" && options.FilmInit != "small")
  {
    throw InputError("training: FiLM start '" + options.FilmInit + "' is unknown; expected zero or small");
  }
  // The stages of this model kind (validates the kind too).
  const std::vector<std::string> stageOrder =
    ModelConfig::FromPreset(
      "tiny", 2, { "t1n" }, options.ModelKind == "segmenter" ? SegmentationName : "t1c", options.ModelKind)
      .Stages();
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
    if (options.ModelKind == "segmenter")
    {
      if (c.Segmentation.StoredVoxels() == 0)
      {
        throw InputError("training a segmenter: case '" + c.Name + "' has no segmentation (a '" + c.Name +
                         "-seg' file); expected one for every case");
      }
      continue;
    }
    const std::vector<std::string> targets =
      options.Targets.empty() ? std::vector<std::string>{ options.Target } : options.Targets;
    for (const auto & name : targets)
    {
      if (c.Images.count(name) == 0)
      {
        throw InputError("training: case '" + c.Name + "' has no '" + name + "' image");
      }
    }
  }
  if (!options.Targets.empty() && options.ModelKind != "cdm")
  {
    throw InputError("training: one model for several targets (--targets) is of kind cdm; the '" + options.ModelKind +
                     "' baseline trains one model per target");
  }

  *stageOrderOut = stageOrder;
  return stages;
}

/** Where a run starts: a fresh model, or the checkpoint's weights, progress and stored optimiser state. */
struct TrainingStart
{
  std::shared_ptr<Model::Impl> Impl;
  nlohmann::json               State;
  safetensors::NamedTensors    Stored;
};

TrainingStart
StartModel(const Dataset &         data,
           const TrainingOptions & options,
           const std::string &     checkpoint,
           const c10::Device &     device)
{
  nlohmann::json            state = { { "stage", "" }, { "iteration", 0 }, { "completed", nlohmann::json::object() } };
  const std::string         target = options.ModelKind == "segmenter" ? SegmentationName : options.Target;
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
    const bool        sameTask =
      options.Targets.empty() ? !config.IsUnified() && config.Target == target : config.Targets == options.Targets;
    if (!sameTask || config.Sources != options.Sources || config.Dimension != options.Dimension ||
        config.Preset != options.Preset || config.ModelKind != options.ModelKind)
    {
      throw InputError("--resume: checkpoint '" + checkpoint + "' was made for a '" + config.Preset + "' " +
                       std::to_string(config.Dimension) + "D model of target " + config.Target +
                       "; the options ask for another");
    }
    state = ReadTrainingState(header, checkpoint);
    implPointer = std::make_shared<Model::Impl>(config, device);
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
      options.Targets.empty()
        ? ModelConfig::FromPreset(options.Preset, options.Dimension, options.Sources, target, options.ModelKind)
        : ModelConfig::UnifiedFromPreset(options.Preset, options.Dimension, options.Sources, options.Targets);
    config.SliceAxis = options.SliceAxis;
    config.SourcesOptional = config.IsUnified() || options.SourceDropout > 0.0;
    if (options.MdnSchedule == "linear" && config.ModelKind == "cdm")
    {
      config.Diffusion.Schedule = "linear";
      config.Diffusion.TrainSteps = 1000;
      config.Diffusion.SamplingSteps = 20;
      config.Diffusion.BetaStart = 1e-4;
      config.Diffusion.BetaEnd = 2e-2;
    }
    config.Normalization = data.Rule();
    for (const std::string & target :
         config.IsSegmenter() ? std::vector<std::string>{} : config.SynthesizedModalities())
    {
      std::vector<double> scales;
      for (const auto & c : data.Cases())
      {
        scales.push_back(c.Scales.at(target));
      }
      (config.IsUnified() ? config.TargetScales[target] : config.TargetScale) = Median(scales);
    }
    if (config.IsUnified())
    {
      config.TargetScale = config.TargetScales.at(config.Target);
    }
    implPointer = std::make_shared<Model::Impl>(config, device, options.Seed);
    if (options.FilmInit == "small")
    {
      torch::NoGradGuard noGrad;
      at::Generator      generator = NewGenerator(options.Seed + 31);
      const double       bound = 0.1 / std::sqrt(static_cast<double>(config.Network.RepresentationDim));
      for (auto & [name, parameter] : implPointer->NamedParameters())
      {
        if (name.size() >= 11 && name.compare(name.size() - 11, 11, "film.weight") == 0)
        {
          parameter.copy_(torch::empty(parameter.sizes()).uniform_(-bound, bound, generator));
        }
      }
    }
  }
  return { implPointer, state, stored };
}

/** The device of this rank: a CUDA run's ranks each take their own GPU (LOCAL_RANK), as torchrun expects. */
c10::Device
RankDevice(const TrainingOptions & options, const DistributedEnvironment & environment)
{
  const std::string resolved = ResolveDevice(options.Device);
  const bool        chosen = options.Device.find(':') != std::string::npos; // cuda:N names one GPU for every rank
  if (environment.WorldSize > 1 && resolved.rfind("cuda", 0) == 0 && !chosen)
  {
    return ToTorchDevice("cuda:" + std::to_string(environment.LocalRank));
  }
  return ToTorchDevice(resolved);
}

/** Backpropagates a batch's loss and returns its value. Distributed, the ranks first add their sums (the whole
 *  batch's), then each backpropagates the first-order part of the whole batch's loss that its own sums carry:
 *  d loss / d sums at the whole batch's sums, times its sums. The ranks' gradients then add up to the whole batch's
 *  (AllReduceSum), exactly, whatever the loss does with its sums (a ratio, a Dice). */
double
Backpropagate(const LossTerms & terms, ProcessGroup * group)
{
  if (!group)
  {
    const at::Tensor loss = terms.Value();
    loss.backward();
    return loss.item<double>();
  }
  std::vector<at::Tensor> sums;
  for (const at::Tensor & sum : terms.Sums)
  {
    sums.push_back(sum.detach().clone());
  }
  group->AllReduceSum(sums);
  for (at::Tensor & sum : sums)
  {
    sum.requires_grad_(true);
  }
  const at::Tensor              loss = terms.Combine(sums);
  const std::vector<at::Tensor> slopes = torch::autograd::grad({ loss }, sums, {}, false, false, true);
  at::Tensor                    share = torch::zeros({}, loss.options().requires_grad(false));
  for (size_t k = 0; k < sums.size(); ++k)
  {
    if (slopes[k].defined() && terms.Sums[k].requires_grad())
    {
      share = share + (slopes[k].detach() * terms.Sums[k]).sum();
    }
  }
  if (share.requires_grad())
  {
    share.backward();
  }
  return loss.item<double>();
}

} // namespace

TrainingReport
Train(const Dataset &                                       data,
      const TrainingOptions &                               options,
      const std::function<void(const TrainingProgress &)> & progress,
      const std::atomic<bool> *                             stopRequested)
{
  const auto                     runStart = Clock::now();
  std::vector<std::string>       stageOrder;
  const std::vector<std::string> stages = StagesToRun(data, options, &stageOrder);
  const std::string              checkpoint = CheckpointPath(options.Output);
  const DistributedEnvironment   environment =
    options.DistributedBackend == "off" ? DistributedEnvironment{} : DistributedEnvironment::FromProcess();
  TrainingStart                      start = StartModel(data, options, checkpoint, RankDevice(options, environment));
  nlohmann::json &                   state = start.State;
  const safetensors::NamedTensors &  stored = start.Stored;
  const std::shared_ptr<Model::Impl> implPointer = start.Impl;
  Model::Impl &                      impl = *implPointer;
  const ModelConfig &                config = impl.Config;

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
      const Volume & v = c.Images.at(config.Sources.front()); // every modality of a case shares its grid
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
  const int            batchSize = options.BatchSize > 0 ? options.BatchSize : defaults.BatchSize;
  const double         learningRate = options.LearningRate > 0.0 ? options.LearningRate : defaults.LearningRate;
  const nlohmann::json fingerprint = TrainingFingerprint(data, options, patch, batchSize, learningRate);
  if (state.contains("fingerprint")) // checkpoints from before fingerprints carry none, and resume unchecked
  {
    CheckResumeFingerprint(state["fingerprint"], fingerprint, checkpoint);
  }
  state["fingerprint"] = fingerprint;

  // Distributed: the ranks join one process group, start from rank 0's weights and split each global batch evenly.
  std::unique_ptr<ProcessGroup> group;
  if (environment.WorldSize > 1)
  {
    if (batchSize % environment.WorldSize != 0)
    {
      throw InputError("distributed training: the batch size " + std::to_string(batchSize) +
                       " (the global batch) is not a multiple of WORLD_SIZE " + std::to_string(environment.WorldSize) +
                       "; expected --batch-size N x " + std::to_string(environment.WorldSize));
    }
    group = std::make_unique<ProcessGroup>(environment,
                                           options.DistributedBackend,
                                           impl.Device,
                                           std::chrono::seconds(std::max(1, options.DistributedTimeoutSeconds)));
    std::vector<at::Tensor> weights;
    for (auto & [name, tensor] : impl.NamedParameters())
    {
      weights.push_back(tensor.detach());
    }
    group->Broadcast(weights);
  }
  const int  rank = environment.Rank;
  const int  rankBatch = batchSize / environment.WorldSize;
  const bool writer = rank == 0; // checkpoints, the model file and progress lines

  const PatchSampler trainSampler(data, trainCases, impl, patch, options.TumourFraction);
  const PatchSampler validationSampler(
    data, validationCases, impl, config.Dimension == 2 ? std::max<int64_t>(patch, alignment) : patch, 0.0);
  const std::vector<Batch> validation = validationSampler.Fixed(8, 4);

  TrainingReport report;
  if (!config.IsSegmenter()) // a label map has no constant-image baseline worth a PSNR
  {
    // The constant baseline: the mean foreground intensity everywhere.
    const auto constant = [](const Batch & b) { return torch::ones_like(b.Target) * MaskedMean(b.Target, b.Mask); };
    torch::NoGradGuard      noGrad;
    const ValidationFigures figures = Validate(validation, constant, torch::kCPU);
    report.ConstantBaselinePSNR = figures.PSNR;
    report.ConstantBaselineSSIM = figures.SSIM;
  }

  // The stages (README.md, "The model").
  const std::map<std::string, StageDefinition> definitions = DefineStages(impl, options);

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
      // Item g of the global batch draws its crop from (seed, g, 1) and its noise, steps and masks from (seed, g, 2):
      // this rank's items are [rank * rankBatch, (rank + 1) * rankBatch).
      const uint64_t        seed = MixSeed(options.Seed, stageIndex, static_cast<uint64_t>(iteration));
      std::vector<uint64_t> cropSeeds, drawSeeds;
      for (int item = rank * rankBatch; item < (rank + 1) * rankBatch; ++item)
      {
        cropSeeds.push_back(MixSeed(seed, static_cast<uint64_t>(item), 1));
        drawSeeds.push_back(MixSeed(seed, static_cast<uint64_t>(item), 2));
      }
      // The step in the learning rate (LearningRateDecayAt), set for every iteration so that a resumed run has it too.
      const bool decayed = options.LearningRateDecayAt > 0.0 &&
                           iteration >= static_cast<int>(std::ceil(options.LearningRateDecayAt * iterations));
      for (auto & parameterGroup : optimizer.param_groups())
      {
        static_cast<torch::optim::AdamOptions &>(parameterGroup.options())
          .lr(learningRate * stage.LearningRateFactor * (decayed ? options.LearningRateDecayFactor : 1.0));
      }
      const Batch    batch = trainSampler.Sample(cropSeeds, options.SourceDropout).To(impl.Device);
      ItemGenerators generators(drawSeeds);
      optimizer.zero_grad();
      losses.push_back(Backpropagate(stage.Loss(batch, generators), group.get()));
      if (group)
      {
        std::vector<at::Tensor> gradients;
        for (const auto & [name, parameter] : parameters)
        {
          if (parameter.grad().defined())
          {
            gradients.push_back(parameter.mutable_grad());
          }
        }
        group->AllReduceSum(gradients);
      }
      optimizer.step();

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
        torch::NoGradGuard noGrad;
        if (config.IsSegmenter())
        {
          line.HasDice = true;
          line.ValidationDice = stageReport.ValidationDice =
            ValidateSegmentation(validation, stage.Predict, impl.Device);
        }
        else
        {
          const ValidationFigures figures = Validate(validation, stage.Predict, impl.Device);
          line.HasValidation = true;
          line.ValidationPSNR = stageReport.ValidationPSNR = figures.PSNR;
          line.ValidationSSIM = stageReport.ValidationSSIM = figures.SSIM;
          line.HasTumourValidation = figures.TumourItems > 0;
          line.ValidationTumourPSNR = stageReport.ValidationTumourPSNR = figures.TumourPSNR;
        }
        impl.SetTraining(true);
      }
      if (progress && writer)
      {
        progress(line);
      }
      const bool stop = stopRequested && stopRequested->load();
      if (stop || (!last && (iteration + 1) % std::max(1, options.CheckpointInterval) == 0))
      {
        if (writer)
        {
          SaveCheckpoint(impl, checkpoint, checkpointState(iteration + 1, true), &optimizer, parameters);
        }
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
      report.Rank = rank;
      report.WorldSize = environment.WorldSize;
      report.Seconds = std::chrono::duration<double>(Clock::now() - runStart).count();
      return report;
    }
    state = checkpointState(iterations, false);
    if (writer)
    {
      SaveCheckpoint(impl, checkpoint, state, nullptr, {});
    }
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
  if (options.LearningRateDecayAt > 0.0)
  {
    provenance["learning_rate_decay_at"] = options.LearningRateDecayAt;
    provenance["learning_rate_decay_factor"] = options.LearningRateDecayFactor;
  }
  provenance["source_dropout"] = options.SourceDropout;
  provenance["tumour_fraction"] = options.TumourFraction;
  provenance["tumour_loss_weight"] = options.TumourLossWeight;
  provenance["synthesis_loss"] = options.SynthesisLoss;
  provenance["teacher_encoder"] = options.TeacherEncoder;
  provenance["representation_noise"] = options.RepresentationNoise;
  provenance["film_init"] = options.FilmInit;
  provenance["mdn_schedule"] = impl.Config.Diffusion.Schedule;
  if (!report.Stages.empty())
  {
    provenance["validation_psnr"] = report.Stages.back().ValidationPSNR;
    provenance["validation_ssim"] = report.Stages.back().ValidationSSIM;
    provenance["validation_tumour_psnr"] = report.Stages.back().ValidationTumourPSNR;
    if (impl.Config.IsSegmenter())
    {
      const SegmentationDice & dice = report.Stages.back().ValidationDice;
      provenance["validation_dice"] = { { "enhancing_tumour", dice.EnhancingTumour },
                                        { "tumour_core", dice.TumourCore },
                                        { "whole_tumour", dice.WholeTumour } };
    }
  }
  provenance["world_size"] = environment.WorldSize;
  if (group)
  {
    provenance["distributed_backend"] = group->BackendName();
  }
  impl.Config.ProvenanceJson = provenance.dump();
  if (writer)
  {
    Model(implPointer).Save(options.Output);
  }
  report.Rank = rank;
  report.WorldSize = environment.WorldSize;
  report.CommunicationSeconds = group ? group->CommunicationSeconds() : 0.0;
  report.Seconds = std::chrono::duration<double>(Clock::now() - runStart).count();
  return report;
}

} // namespace cdm
