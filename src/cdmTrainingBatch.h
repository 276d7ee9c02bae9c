/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#ifndef cdmTrainingBatch_h
#define cdmTrainingBatch_h

// Internal header of the core engine (src/ only): training batches and the sampling rule that draws them.
#include "cdmDataset.h"
#include "cdmModelImpl.h"

#include <random>
#include <vector>

namespace cdm
{

/** A batch in network layout: sources [B, 2S, ...]; target, foreground and tumour masks [B, 1, ...]. */
struct Batch
{
  at::Tensor                        Sources;
  at::Tensor                        Target;
  at::Tensor                        Mask;
  at::Tensor                        Tumour;      ///< 1 where the case's segmentation is > 0 (zeros without one)
  at::Tensor                        TargetIndex; ///< [B] long: each item's target in SynthesizedModalities()
  std::vector<std::vector<int64_t>> ValidSizes;  ///< spatial sizes before padding, per item

  Batch
  To(const c10::Device & device) const;
};

/** \brief Random slices (2D) or patches (3D) of the training cases, in the layout the networks use.
 *
 * A share `tumourFraction` of the items is centred on a random voxel of a random case's tumour (BraTS training
 * practice: the tumour is a few percent of the brain, so a uniform draw rarely shows it); the rest are uniform
 * over the slices with foreground. Cases without a segmentation only take uniform draws. For a unified model each
 * case enters once per target (its other modalities as the sources, the target's channels absent), so that the
 * targets are drawn alike. */
class PatchSampler
{
public:
  PatchSampler(const Dataset &             data,
               const std::vector<size_t> & cases,
               const Model::Impl &         impl,
               int64_t                     patch,
               double                      tumourFraction);

  /** A random batch, cropped and padded to the patch size: item i is drawn by a generator seeded with itemSeeds[i]
   *  (where it lies and, with `dropProbability` > 0, which of its sources are hidden, at least one staying), so that
   *  a seed gives the same item in any batch (distributed training splits a batch's items over processes). */
  Batch
  Sample(const std::vector<uint64_t> & itemSeeds, double dropProbability = 0.0) const;

  /** Up to `count` whole slices (2D) or centred patches (3D), spread evenly over the cases, every second one
   *  through the middle of a tumour when the cases have one: for validation. */
  std::vector<Batch>
  Fixed(int64_t count, int64_t perBatch) const;

  /** True when some case has a tumour (a segmentation with labels > 0). */
  bool
  HasTumour() const
  {
    return !m_TumourEntries.empty();
  }

private:
  struct Entry
  {
    at::Tensor           Sources; // [N, 2S, ...] (2D) or [1, 2S, Z, Y, X] (3D)
    at::Tensor           Target;
    at::Tensor           Mask;
    at::Tensor           Tumour;
    at::Tensor           TumourVoxels; // [K, 1 + spatial]: (slice, position...) of every tumour voxel
    std::vector<int64_t> Slices;
    int64_t              TargetIndex{ 0 };
  };
  struct Item
  {
    at::Tensor           Sources, Target, Mask, Tumour; // [C, ...] cropped and padded to the patch
    std::vector<int64_t> ValidSize;
    int64_t              TargetIndex{ 0 };
  };

  /** The item at `slice`: centred on `centre` (spatial position) when given, else at a random (or, without a
   *  generator, centred) position. */
  Item
  Crop(const Entry & entry, int64_t slice, std::mt19937_64 * random, const std::vector<int64_t> * centre) const;

  /** The item centred on `voxel`, a row (slice, position...) of an entry's TumourVoxels. */
  Item
  CropAround(const Entry & entry, const at::Tensor & voxel) const;

  static Batch
  Stack(const std::vector<Item> & items);

  int64_t             m_Patch;
  double              m_TumourFraction;
  std::vector<Entry>  m_Entries;
  std::vector<size_t> m_TumourEntries; // entries with at least one tumour voxel
};

} // namespace cdm

#endif
