/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#include "cdmTrainingBatch.h"
#include "cdmError.h"

#include <torch/torch.h>

#include <algorithm>

namespace cdm
{

Batch
Batch::To(const c10::Device & device) const
{
  return {
    Sources.to(device), Target.to(device), Mask.to(device), Tumour.to(device), TargetIndex.to(device), ValidSizes
  };
}

PatchSampler::PatchSampler(const Dataset &             data,
                           const std::vector<size_t> & cases,
                           const Model::Impl &         impl,
                           int64_t                     patch,
                           double                      tumourFraction)
    : m_Patch(patch)
    , m_TumourFraction(tumourFraction)
{
  if (!(tumourFraction >= 0.0 && tumourFraction <= 1.0))
  {
    throw InputError("training: the tumour share of the patches must lie in [0, 1], got " +
                     std::to_string(tumourFraction));
  }
  const ModelConfig &            config = impl.Config;
  const std::vector<std::string> targets = config.SynthesizedModalities();
  for (size_t entryIndex = 0; entryIndex < cases.size() * targets.size(); ++entryIndex)
  {
    const TrainingCase & c = data.Cases()[cases[entryIndex / targets.size()]];
    const std::string &  targetName = targets[entryIndex % targets.size()];
    // A segmenter's target is the case's label map (its masks then come from the first source).
    const Volume & target = config.IsSegmenter() ? c.Segmentation : c.Images.at(targetName);
    const Volume & anatomy = config.IsSegmenter() ? c.Images.at(config.Sources.front()) : target;
    if (config.IsSegmenter() && target.StoredVoxels() != anatomy.NumberOfVoxels())
    {
      throw InputError("training a segmenter: case '" + c.Name + "' has no segmentation (a '-seg' file)");
    }
    std::map<std::string, const std::vector<float> *> sources;
    for (const auto & name : config.Sources)
    {
      if (name != targetName) // a unified model's target is among its sources, absent
      {
        sources[name] = &c.Images.at(name).Voxels;
      }
    }
    const std::vector<int64_t> shape{ 1, target.Size[2], target.Size[1], target.Size[0] };
    const auto                 layout = [&](const at::Tensor & channelsZYX) {
      return impl.ToNetworkLayout(channelsZYX.to(torch::kFloat32)).contiguous();
    };
    Entry entry;
    entry.TargetIndex = static_cast<int64_t>(entryIndex % targets.size());
    entry.Sources = layout(impl.SourceTensor(sources, target.Size));
    entry.Target = layout(torch::from_blob(const_cast<float *>(target.Voxels.data()), shape, torch::kFloat32));
    const std::vector<uint8_t> mask = data.Rule().ForegroundMask(anatomy);
    entry.Mask = layout(torch::from_blob(const_cast<uint8_t *>(mask.data()), shape, torch::kUInt8));
    if (c.Segmentation.StoredVoxels() == 0)
    {
      entry.Tumour = torch::zeros_like(entry.Mask);
    }
    else
    {
      const at::Tensor labels =
        torch::from_blob(const_cast<float *>(c.Segmentation.Voxels.data()), shape, torch::kFloat32);
      entry.Tumour = layout(labels.gt(0.5));
    }
    entry.TumourVoxels = entry.Tumour.select(1, 0).nonzero();
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
      if (entry.TumourVoxels.size(0) > 0)
      {
        m_TumourEntries.push_back(m_Entries.size());
      }
      m_Entries.push_back(std::move(entry));
    }
  }
  if (m_Entries.empty())
  {
    throw InputError("training data: no case has foreground in the target modality");
  }
}

namespace
{
/** Zeroes whole sources of an item (image and availability channels [2S, ...]) at random, among those present (a
 *  unified model's target is absent already), keeping at least one. */
void
DropSources(at::Tensor & sources, double probability, std::mt19937_64 & random)
{
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  std::vector<int64_t>                   present, dropped;
  for (int64_t s = 0; s < sources.size(0) / 2; ++s)
  {
    if (sources[2 * s + 1].max().item<float>() > 0.0f)
    {
      present.push_back(s);
    }
  }
  for (const int64_t s : present)
  {
    if (uniform(random) < probability)
    {
      dropped.push_back(s);
    }
  }
  if (!dropped.empty() && dropped.size() == present.size())
  {
    dropped.pop_back();
  }
  for (const int64_t s : dropped)
  {
    sources.narrow(0, 2 * s, 2).zero_();
  }
}
} // namespace

Batch
PatchSampler::Sample(const std::vector<uint64_t> & itemSeeds, double dropProbability) const
{
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  std::vector<Item>                      items;
  for (const uint64_t seed : itemSeeds)
  {
    std::mt19937_64 random(seed);
    // The draw is made for every item, so the random stream does not depend on which cases have tumours.
    const bool onTumour = uniform(random) < m_TumourFraction && !m_TumourEntries.empty();
    if (onTumour)
    {
      const Entry &    entry = m_Entries[m_TumourEntries[random() % m_TumourEntries.size()]];
      const at::Tensor voxel = entry.TumourVoxels[static_cast<int64_t>(random() % entry.TumourVoxels.size(0))];
      items.push_back(CropAround(entry, voxel));
    }
    else
    {
      const Entry & entry = m_Entries[random() % m_Entries.size()];
      const int64_t slice = entry.Slices[random() % entry.Slices.size()];
      items.push_back(Crop(entry, slice, &random, nullptr));
    }
    if (dropProbability > 0.0)
    {
      items.back().Sources = items.back().Sources.clone(); // a view of the case's tensor before this
      DropSources(items.back().Sources, dropProbability, random);
    }
  }
  return Stack(items);
}

std::vector<Batch>
PatchSampler::Fixed(int64_t count, int64_t perBatch) const
{
  std::vector<Item> items;
  for (int64_t i = 0; i < count; ++i)
  {
    if (i % 2 == 1 && !m_TumourEntries.empty())
    {
      // Through the middle of a tumour (its voxels are listed in slice order).
      const Entry & entry = m_Entries[m_TumourEntries[static_cast<size_t>(i / 2) % m_TumourEntries.size()]];
      items.push_back(CropAround(entry, entry.TumourVoxels[entry.TumourVoxels.size(0) / 2]));
      continue;
    }
    const Entry & entry = m_Entries[static_cast<size_t>(i) % m_Entries.size()];
    const size_t  round = static_cast<size_t>(i) / m_Entries.size();
    const size_t  pick =
      (entry.Slices.size() * (2 * round + 1)) / (2 * ((count + m_Entries.size() - 1) / m_Entries.size()));
    items.push_back(Crop(entry, entry.Slices[std::min(pick, entry.Slices.size() - 1)], nullptr, nullptr));
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

PatchSampler::Item
PatchSampler::CropAround(const Entry & entry, const at::Tensor & voxel) const
{
  std::vector<int64_t> centre;
  for (int64_t d = 1; d < voxel.size(0); ++d)
  {
    centre.push_back(voxel[d].item<int64_t>());
  }
  return Crop(entry, voxel[0].item<int64_t>(), nullptr, &centre);
}

PatchSampler::Item
PatchSampler::Crop(const Entry &                entry,
                   int64_t                      slice,
                   std::mt19937_64 *            random,
                   const std::vector<int64_t> * centre) const
{
  at::Tensor           sources = entry.Sources[slice];
  at::Tensor           target = entry.Target[slice];
  at::Tensor           mask = entry.Mask[slice];
  at::Tensor           tumour = entry.Tumour[slice];
  Item                 item;
  std::vector<int64_t> pads;
  for (int64_t d = 1; d < sources.dim(); ++d)
  {
    const int64_t size = sources.size(d);
    const int64_t keep = std::min(size, m_Patch);
    int64_t       offset = 0;
    if (size > keep)
    {
      if (centre)
      {
        offset = std::clamp((*centre)[static_cast<size_t>(d - 1)] - keep / 2, int64_t{ 0 }, size - keep);
      }
      else
      {
        offset = random ? static_cast<int64_t>((*random)() % (size - keep + 1)) : (size - keep) / 2;
      }
    }
    sources = sources.narrow(d, offset, keep);
    target = target.narrow(d, offset, keep);
    mask = mask.narrow(d, offset, keep);
    tumour = tumour.narrow(d, offset, keep);
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
  item.Tumour = torch::constant_pad_nd(tumour, pads, 0.0);
  item.TargetIndex = entry.TargetIndex;
  return item;
}

Batch
PatchSampler::Stack(const std::vector<Item> & items)
{
  std::vector<at::Tensor> sources, targets, masks, tumours;
  std::vector<int64_t>    targetIndices;
  Batch                   batch;
  for (const auto & item : items)
  {
    targetIndices.push_back(item.TargetIndex);
    sources.push_back(item.Sources);
    targets.push_back(item.Target);
    masks.push_back(item.Mask);
    tumours.push_back(item.Tumour);
    batch.ValidSizes.push_back(item.ValidSize);
  }
  batch.Sources = torch::stack(sources);
  batch.Target = torch::stack(targets);
  batch.Mask = torch::stack(masks);
  batch.Tumour = torch::stack(tumours);
  batch.TargetIndex = torch::tensor(targetIndices, torch::kLong);
  return batch;
}

} // namespace cdm
