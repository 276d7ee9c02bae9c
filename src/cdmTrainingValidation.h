/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#ifndef cdmTrainingValidation_h
#define cdmTrainingValidation_h

// Internal header of the core engine (src/ only): the validation figures a training stage reports.
#include "cdmMetrics.h"
#include "cdmTrainingBatch.h"

#include <functional>
#include <vector>

namespace cdm
{

struct ValidationFigures
{
  double PSNR{ 0.0 };       ///< mean over items, inside the target's foreground
  double SSIM{ 0.0 };       ///< mean over items, inside the target's foreground
  double TumourPSNR{ 0.0 }; ///< mean over the items that show a tumour, inside it (0 when none does)
  int    TumourItems{ 0 };
};

/** PSNR/SSIM of `predict` on the validation items, on normalised intensities (data range 1). */
ValidationFigures
Validate(const std::vector<Batch> &                       batches,
         const std::function<at::Tensor(const Batch &)> & predict,
         const c10::Device &                              device);

/** A segmenter's Dice (BraTS's regions) of `predict` on the validation items, their voxels pooled. */
SegmentationDice
ValidateSegmentation(const std::vector<Batch> &                       batches,
                     const std::function<at::Tensor(const Batch &)> & predict,
                     const c10::Device &                              device);

} // namespace cdm

#endif
