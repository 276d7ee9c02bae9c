/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#include "cdmTrainingStages.h"
#include "cdmError.h"

#include <torch/torch.h>

namespace cdm
{

at::Tensor
MaskedMean(const at::Tensor & values, const at::Tensor & mask)
{
  return (values * mask).sum() / mask.sum().clamp_min(1.0);
}

at::Tensor
SynthesisLoss(const at::Tensor & prediction, const Batch & batch, double tumourWeight, const std::string & kind)
{
  const at::Tensor difference = prediction - batch.Target;
  const at::Tensor error = kind == "l2" ? difference.pow(2) : difference.abs();
  if (tumourWeight <= 0.0)
  {
    return error.mean();
  }
  const at::Tensor weight = 1.0 + tumourWeight * batch.Tumour;
  return (error * weight).sum() / weight.sum();
}

at::Tensor
SegmentationLoss(const at::Tensor & scores, const Batch & batch)
{
  const at::Tensor     labels = batch.Target.squeeze(1).round().to(torch::kLong);
  const at::Tensor     crossEntropy = torch::nn::functional::cross_entropy(scores, labels);
  const at::Tensor     probabilities = scores.softmax(1);
  const at::Tensor     truth = torch::one_hot(labels, SegmentationClasses).movedim(-1, 1).to(probabilities.dtype());
  std::vector<int64_t> sumOver{ 0 }; // the batch and every spatial axis: one Dice per class
  for (int64_t d = 2; d < scores.dim(); ++d)
  {
    sumOver.push_back(d);
  }
  const at::Tensor both = (probabilities * truth).sum(sumOver);
  const at::Tensor total = probabilities.sum(sumOver) + truth.sum(sumOver);
  const at::Tensor dice = (2.0 * both + 1.0) / (total + 1.0);
  return crossEntropy + (1.0 - dice.slice(0, 1)).mean(); // the tumour labels only: background is easy and large
}

std::map<std::string, StageDefinition>
DefineStages(const Model::Impl & impl, const TrainingOptions & options)
{
  const int    trainSteps = impl.Config.Diffusion.TrainSteps;
  const bool   unrolled = impl.Config.Diffusion.SamplingSteps <= 16;
  const double tumourWeight = options.TumourLossWeight;
  if (options.SynthesisLoss != "l1" && options.SynthesisLoss != "l2")
  {
    throw InputError("training: synthesis loss '" + options.SynthesisLoss + "' is unknown; expected l1 or l2");
  }
  const std::string lossKind = options.SynthesisLoss;
  // z_hat during training. DiffIR: unroll every reverse step from q(z_{T-1} | z) with gradients; long schedules:
  // one random step.
  const auto trainingRepresentation =
    [&impl, trainSteps, unrolled](const at::Tensor & condition, const at::Tensor & z, at::Generator & generator) {
      if (unrolled)
      {
        const at::Tensor start = impl.Schedule->QSample(z, trainSteps - 1, Noise(z.sizes(), generator, z.device()));
        return impl.SampleRepresentation(condition, start, 0.0, {});
      }
      const int        t = static_cast<int>(torch::randint(trainSteps, { 1 }, generator).item<int64_t>());
      const at::Tensor zt = impl.Schedule->QSample(z, t, Noise(z.sizes(), generator, z.device()));
      return impl.Denoiser->forward(
        zt, condition, torch::full({ z.size(0) }, static_cast<double>(t) / trainSteps, z.options()));
    };
  // A unified model's MDN condition and C-UNet guidance carry each item's target (unchanged for a per-target model).
  const auto condition = [&impl](const Batch & b) {
    return impl.ConditionFor(impl.EncodeSources(b.Sources), b.TargetIndex);
  };
  const auto guidance = [&impl](const Batch & b, const at::Tensor & z) { return impl.GuidanceFor(z, b.TargetIndex); };
  const auto sampledRepresentation = [&impl, &options, condition](const Batch & b) {
    const at::Tensor c = condition(b);
    const at::Tensor start = SeededNoise({ c.size(0), c.size(1) }, options.Seed + 17, impl.Device);
    return impl.SampleRepresentation(c, start, 0.0, {});
  };
  // The C-UNet stage's z: the target's encoding, trained with the C-UNet when the encoder is a teacher (DiffIR's
  // stage 1: z learns what the synthesis needs and the sources do not show), with optional noise so that the
  // C-UNet tolerates the MDN's estimate.
  const auto teacherRepresentation = [&impl, &options](const Batch & b, at::Generator & generator) {
    at::Tensor z = impl.EncodeTarget(b.Target);
    if (!options.TeacherEncoder)
    {
      z = z.detach();
    }
    if (options.RepresentationNoise > 0.0)
    {
      z = z + options.RepresentationNoise * z.detach().std() * Noise(z.sizes(), generator, z.device());
    }
    return z;
  };

  std::map<std::string, StageDefinition> stages;
  stages["mrm"] = { "mrm",
                    { "mrm_encoder", "mrm_decoder" },
                    1.0,
                    [&impl](const Batch & b, at::Generator & generator) {
                      const auto [prediction, mask] = impl.ReconstructMasked(b.Target, generator);
                      return MaskedMean((prediction - b.Target).pow(2), mask);
                    },
                    [&impl, &options](const Batch & b) {
                      at::Generator generator = NewGenerator(options.Seed + 29);
                      return impl.ReconstructMasked(b.Target, generator).first;
                    } };
  // "target_embedding" (a unified model's only) trains wherever the condition or the guidance does.
  stages["cunet"] = {
    "cunet",
    options.TeacherEncoder ? std::vector<std::string>{ "unet", "target_embedding", "mrm_encoder" }
                           : std::vector<std::string>{ "unet", "target_embedding" },
    1.0,
    [&impl, teacherRepresentation, guidance, tumourWeight, lossKind](const Batch & b, at::Generator & generator) {
      return SynthesisLoss(
        impl.SynthesizeBatch(b.Sources, guidance(b, teacherRepresentation(b, generator))), b, tumourWeight, lossKind);
    },
    [&impl, guidance](const Batch & b) {
      return impl.SynthesizeBatch(b.Sources, guidance(b, impl.EncodeTarget(b.Target)));
    }
  };
  stages["mdn"] = { "mdn",
                    { "source_encoder", "denoiser", "target_embedding" },
                    1.0,
                    [&impl, trainingRepresentation, condition](const Batch & b, at::Generator & generator) {
                      const at::Tensor z = impl.EncodeTarget(b.Target).detach();
                      return (trainingRepresentation(condition(b), z, generator) - z).abs().mean();
                    },
                    [&impl, sampledRepresentation, guidance](const Batch & b) {
                      return impl.SynthesizeBatch(b.Sources, guidance(b, sampledRepresentation(b)));
                    } };
  stages["finetune"] = { "finetune",
                         { "source_encoder", "denoiser", "unet", "target_embedding" },
                         0.2,
                         [&impl, trainingRepresentation, condition, guidance, tumourWeight, lossKind](
                           const Batch & b, at::Generator & generator) {
                           const at::Tensor z = impl.EncodeTarget(b.Target).detach();
                           const at::Tensor zHat = trainingRepresentation(condition(b), z, generator);
                           return SynthesisLoss(
                                    impl.SynthesizeBatch(b.Sources, guidance(b, zHat)), b, tumourWeight, lossKind) +
                                  (zHat - z).abs().mean();
                         },
                         stages["mdn"].Predict };
  // The baselines, trained by the same loop: a UNet regressor, and image-space diffusion predicting noise.
  stages["unet"] = { "unet",
                     { "unet" },
                     1.0,
                     [&impl, tumourWeight, lossKind](const Batch & b, at::Generator &) {
                       return SynthesisLoss(impl.SynthesizeBatch(b.Sources, {}), b, tumourWeight, lossKind);
                     },
                     [&impl](const Batch & b) { return impl.SynthesizeBatch(b.Sources, {}); } };
  // The segmenter: the same UNet, a label per voxel (BraSyn's second score).
  stages["segment"] = { "segment",
                        { "unet" },
                        1.0,
                        [&impl](const Batch & b, at::Generator &) {
                          return SegmentationLoss(impl.SynthesizeBatch(b.Sources, {}), b);
                        },
                        [&impl](const Batch & b) { return MostProbableLabels(impl.SynthesizeBatch(b.Sources, {})); } };
  stages["ddim"] = { "ddim",
                     { "unet", "time_embedding" },
                     1.0,
                     [&impl, trainSteps](const Batch & b, at::Generator & generator) {
                       const int64_t    batch = b.Target.size(0);
                       const at::Tensor t = torch::randint(trainSteps, { batch }, generator, torch::kLong);
                       const at::Tensor alphaBars =
                         torch::tensor(impl.Schedule->AlphaBars(), torch::kFloat64).index_select(0, t);
                       std::vector<int64_t> shape(static_cast<size_t>(b.Target.dim()), 1);
                       shape[0] = batch;
                       const at::Tensor abar = alphaBars.to(torch::kFloat32).view(shape).to(impl.Device);
                       const at::Tensor noise = Noise(b.Target.sizes(), generator, b.Target.device());
                       const at::Tensor xt = abar.sqrt() * b.Target + (1.0 - abar).sqrt() * noise;
                       const at::Tensor fraction = (t.to(torch::kFloat32) / trainSteps).to(impl.Device);
                       return (impl.PredictNoise(b.Sources, xt, fraction) - noise).pow(2).mean();
                     },
                     [&impl, &options](const Batch & b) {
                       const std::vector<int64_t> shape = b.Target.sizes().vec();
                       return impl.SampleImage(b.Sources, SeededNoise(shape, options.Seed + 17, impl.Device), 0.0, {});
                     } };
  return stages;
}

} // namespace cdm
