/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#ifndef cdmTrainingStages_h
#define cdmTrainingStages_h

// Internal header of the core engine (src/ only): the training stages of every model kind, defined in one place.
#include "cdmTrainer.h"
#include "cdmTrainingBatch.h"

#include <functional>
#include <map>
#include <string>
#include <vector>

namespace cdm
{

/** \brief A training loss as a function of sums over a batch's items. A batch split over several processes then has
 *  the loss, and the gradient, of the whole batch: the processes add their sums before combining them
 *  (TrainingStep). Every loss of the engine is written so. */
struct LossTerms
{
  std::vector<at::Tensor>                                    Sums;    ///< differentiable sums over the items
  std::function<at::Tensor(const std::vector<at::Tensor> &)> Combine; ///< the loss from (the whole batch's) sums

  /** The loss of these sums alone (one process). */
  at::Tensor
  Value() const
  {
    return Combine(Sums);
  }
};

/** The mean of every element of `values`: sums {values, count}. */
LossTerms
MeanLoss(const at::Tensor & values);

/** sum(values * weights) / max(sum(weights), 1): a weighted (or masked) mean. */
LossTerms
WeightedMeanLoss(const at::Tensor & values, const at::Tensor & weights);

/** The sum of two losses. */
LossTerms
operator+(const LossTerms & a, const LossTerms & b);

/** One training stage: which networks it trains, its loss, and its prediction for validation. */
struct StageDefinition
{
  std::string              Name;
  std::vector<std::string> Networks; ///< parameter prefixes in the model file
  double                   LearningRateFactor{ 1.0 };
  /** The training loss of a batch; each item's random draws come from its own generator. */
  std::function<LossTerms(const Batch &, ItemGenerators &)> Loss;
  std::function<at::Tensor(const Batch &)>                  Predict; ///< run under NoGradGuard, repeatable
};

/** The stages of every model kind by name (README.md, "The model"): mrm, cunet, mdn, finetune (cdm), unet, ddim,
 *  segment (segmenter). The
 *  returned functions refer to `impl` and `options`, which must outlive them. */
std::map<std::string, StageDefinition>
DefineStages(const Model::Impl & impl, const TrainingOptions & options);

/** The mean of `values` where `mask` is 1 (0 for an empty mask). */
at::Tensor
MaskedMean(const at::Tensor & values, const at::Tensor & mask);

/** The synthesis loss L_Syn: L1 or L2 (`kind` "l1" or "l2"), weighted 1 + tumourWeight inside the tumour (a mean
 *  over normal tissue would otherwise drown the few tumour voxels), normalised by the total weight. */
LossTerms
SynthesisLoss(const at::Tensor & prediction, const Batch & batch, double tumourWeight, const std::string & kind);

/** A segmenter's loss on label scores [B, SegmentationClasses, ...] against the batch's label map (its Target):
 *  cross-entropy plus the soft Dice loss of the tumour labels (nnU-Net's pairing: cross-entropy for every voxel,
 *  Dice so that the small enhancing rim counts as much as the oedema). */
LossTerms
SegmentationLoss(const at::Tensor & scores, const Batch & batch);

} // namespace cdm

#endif
