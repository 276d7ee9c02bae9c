/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#include "cdmTrainingStages.h"
#include "cdmError.h"

#include <torch/torch.h>

namespace cdm
{

LossTerms
MeanLoss(const at::Tensor & values)
{
  return { { values.sum(), torch::full({}, static_cast<double>(values.numel()), values.options()) },
           [](const std::vector<at::Tensor> & sums) { return sums[0] / sums[1]; } };
}

LossTerms
WeightedMeanLoss(const at::Tensor & values, const at::Tensor & weights)
{
  return { { (values * weights).sum(), weights.sum().detach() },
           [](const std::vector<at::Tensor> & sums) { return sums[0] / sums[1].clamp_min(1.0); } };
}

at::Tensor
MaskedMean(const at::Tensor & values, const at::Tensor & mask)
{
  return WeightedMeanLoss(values, mask).Value();
}

LossTerms
operator+(const LossTerms & a, const LossTerms & b)
{
  LossTerms  sum;
  const auto split = static_cast<std::ptrdiff_t>(a.Sums.size());
  sum.Sums = a.Sums;
  sum.Sums.insert(sum.Sums.end(), b.Sums.begin(), b.Sums.end());
  sum.Combine = [split, first = a.Combine, second = b.Combine](const std::vector<at::Tensor> & sums) {
    return first(std::vector<at::Tensor>(sums.begin(), sums.begin() + split)) +
           second(std::vector<at::Tensor>(sums.begin() + split, sums.end()));
  };
  return sum;
}

LossTerms
SynthesisLoss(const at::Tensor & prediction, const Batch & batch, double tumourWeight, const std::string & kind)
{
  const at::Tensor difference = prediction - batch.Target;
  const at::Tensor error = kind == "l2" ? difference.pow(2) : difference.abs();
  if (tumourWeight <= 0.0)
  {
    return MeanLoss(error);
  }
  return WeightedMeanLoss(error, 1.0 + tumourWeight * batch.Tumour);
}

LossTerms
SegmentationLoss(const at::Tensor & scores, const Batch & batch)
{
  const at::Tensor labels = batch.Target.squeeze(1).round().to(torch::kLong);
  const at::Tensor crossEntropy = torch::nn::functional::cross_entropy(
    scores, labels, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
  const at::Tensor     probabilities = scores.softmax(1);
  const at::Tensor     truth = torch::one_hot(labels, SegmentationClasses).movedim(-1, 1).to(probabilities.dtype());
  std::vector<int64_t> sumOver{ 0 }; // the batch and every spatial axis: one Dice per class
  for (int64_t d = 2; d < scores.dim(); ++d)
  {
    sumOver.push_back(d);
  }
  const LossTerms dice{ { (probabilities * truth).sum(sumOver), probabilities.sum(sumOver) + truth.sum(sumOver) },
                        [](const std::vector<at::Tensor> & sums) {
                          // The tumour labels only: background is easy and large.
                          return (1.0 - (2.0 * sums[0] + 1.0) / (sums[1] + 1.0)).slice(0, 1).mean();
                        } };
  return MeanLoss(crossEntropy) + dice;
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
  // one random step per item.
  const auto trainingRepresentation =
    [&impl, trainSteps, unrolled](const at::Tensor & condition, const at::Tensor & z, ItemGenerators & generators) {
      if (unrolled)
      {
        const at::Tensor start = impl.Schedule->QSample(z, trainSteps - 1, generators.Normal(z.sizes(), z.device()));
        return impl.SampleRepresentation(condition, start, 0.0, {});
      }
      const at::Tensor t = generators.Integers(trainSteps, z.device());
      const at::Tensor zt = impl.Schedule->QSample(z, t, generators.Normal(z.sizes(), z.device()));
      return impl.Denoiser->forward(zt, condition, t.to(torch::kFloat32) / trainSteps);
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
  const auto teacherRepresentation = [&impl, &options](const Batch & b, ItemGenerators & generators) {
    at::Tensor z = impl.EncodeTarget(b.Target);
    if (!options.TeacherEncoder)
    {
      z = z.detach();
    }
    if (options.RepresentationNoise > 0.0)
    {
      // Relative to each item's own spread, so that an item's noise does not depend on the rest of the batch.
      std::vector<int64_t> itemAxes;
      for (int64_t d = 1; d < z.dim(); ++d)
      {
        itemAxes.push_back(d);
      }
      z = z +
          options.RepresentationNoise * z.detach().std(itemAxes, true, true) * generators.Normal(z.sizes(), z.device());
    }
    return z;
  };

  std::map<std::string, StageDefinition> stages;
  stages["mrm"] = { "mrm",
                    { "mrm_encoder", "mrm_decoder" },
                    1.0,
                    [&impl](const Batch & b, ItemGenerators & generators) {
                      const auto [prediction, mask] = impl.ReconstructMasked(b.Target, generators);
                      return WeightedMeanLoss((prediction - b.Target).pow(2), mask);
                    },
                    [&impl, &options](const Batch & b) {
                      ItemGenerators generators(
                        std::vector<uint64_t>(static_cast<size_t>(b.Target.size(0)), options.Seed + 29));
                      return impl.ReconstructMasked(b.Target, generators).first;
                    } };
  // "target_embedding" (a unified model's only) trains wherever the condition or the guidance does.
  stages["cunet"] = {
    "cunet",
    options.TeacherEncoder ? std::vector<std::string>{ "unet", "target_embedding", "mrm_encoder" }
                           : std::vector<std::string>{ "unet", "target_embedding" },
    1.0,
    [&impl, teacherRepresentation, guidance, tumourWeight, lossKind](const Batch & b, ItemGenerators & generators) {
      return SynthesisLoss(
        impl.SynthesizeBatch(b.Sources, guidance(b, teacherRepresentation(b, generators))), b, tumourWeight, lossKind);
    },
    [&impl, guidance](const Batch & b) {
      return impl.SynthesizeBatch(b.Sources, guidance(b, impl.EncodeTarget(b.Target)));
    }
  };
  stages["mdn"] = { "mdn",
                    { "source_encoder", "denoiser", "target_embedding" },
                    1.0,
                    [&impl, trainingRepresentation, condition](const Batch & b, ItemGenerators & generators) {
                      const at::Tensor z = impl.EncodeTarget(b.Target).detach();
                      return MeanLoss((trainingRepresentation(condition(b), z, generators) - z).abs());
                    },
                    [&impl, sampledRepresentation, guidance](const Batch & b) {
                      return impl.SynthesizeBatch(b.Sources, guidance(b, sampledRepresentation(b)));
                    } };
  stages["finetune"] = { "finetune",
                         { "source_encoder", "denoiser", "unet", "target_embedding" },
                         0.2,
                         [&impl, trainingRepresentation, condition, guidance, tumourWeight, lossKind](
                           const Batch & b, ItemGenerators & generators) {
                           const at::Tensor z = impl.EncodeTarget(b.Target).detach();
                           const at::Tensor zHat = trainingRepresentation(condition(b), z, generators);
                           return SynthesisLoss(
                                    impl.SynthesizeBatch(b.Sources, guidance(b, zHat)), b, tumourWeight, lossKind) +
                                  MeanLoss((zHat - z).abs());
                         },
                         stages["mdn"].Predict };
  // The baselines, trained by the same loop: a UNet regressor, and image-space diffusion predicting noise.
  stages["unet"] = { "unet",
                     { "unet" },
                     1.0,
                     [&impl, tumourWeight, lossKind](const Batch & b, ItemGenerators &) {
                       return SynthesisLoss(impl.SynthesizeBatch(b.Sources, {}), b, tumourWeight, lossKind);
                     },
                     [&impl](const Batch & b) { return impl.SynthesizeBatch(b.Sources, {}); } };
  // The segmenter: the same UNet, a label per voxel (BraSyn's second score).
  stages["segment"] = { "segment",
                        { "unet" },
                        1.0,
                        [&impl](const Batch & b, ItemGenerators &) {
                          return SegmentationLoss(impl.SynthesizeBatch(b.Sources, {}), b);
                        },
                        [&impl](const Batch & b) { return MostProbableLabels(impl.SynthesizeBatch(b.Sources, {})); } };
  stages["ddim"] = { "ddim",
                     { "unet", "time_embedding" },
                     1.0,
                     [&impl, trainSteps](const Batch & b, ItemGenerators & generators) {
                       const at::Tensor t = generators.Integers(trainSteps, b.Target.device());
                       const at::Tensor noise = generators.Normal(b.Target.sizes(), b.Target.device());
                       const at::Tensor xt = impl.Schedule->QSample(b.Target, t, noise);
                       const at::Tensor fraction = t.to(torch::kFloat32) / trainSteps;
                       return MeanLoss((impl.PredictNoise(b.Sources, xt, fraction) - noise).pow(2));
                     },
                     [&impl, &options](const Batch & b) {
                       const std::vector<int64_t> shape = b.Target.sizes().vec();
                       return impl.SampleImage(b.Sources, SeededNoise(shape, options.Seed + 17, impl.Device), 0.0, {});
                     } };
  return stages;
}

} // namespace cdm
