/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
// Inference's first half: checking sources, encoding a target, sampling z from the sources (source encoder + MDN).
#include "cdmModel.h"
#include "cdmError.h"
#include "cdmModelImpl.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

namespace cdm
{

void
RefuseSegmenter(const ModelConfig & config)
{
  if (config.IsSegmenter())
  {
    throw InputError("this model is a segmenter: it labels the tumour (cdm segment, Model::Segment) and synthesizes "
                     "no image; expected a synthesis model (kind cdm, unet or ddim)");
  }
}

void
Model::CheckSources(const SourceVolumes & sources, bool allowAbsentSources) const
{
  const ModelConfig & config = m_Impl->Config;
  const std::string   expected = JoinNames(config.Sources);
  if (sources.empty())
  {
    throw InputError("no source image given; the model expects " + expected);
  }
  for (const auto & [name, volume] : sources)
  {
    if (config.SourceIndex(name) < 0)
    {
      throw InputError("source '" + name + "' ('" + volume.Description + "') is not an input of this model; expected " +
                       expected + (name == config.Target ? " (it is the model's target)" : ""));
    }
  }
  if (!config.SourcesOptional && !allowAbsentSources)
  {
    for (const auto & name : config.Sources)
    {
      if (sources.count(name) == 0)
      {
        throw InputError("source '" + name + "' is missing; this model requires " + expected);
      }
    }
  }
  const Volume & first = sources.begin()->second;
  for (const auto & [name, volume] : sources)
  {
    std::string why;
    if (!SameGeometry(first, volume, &why))
    {
      throw InputError("sources disagree in geometry: " + why);
    }
    CheckFinite(volume);
  }
  if (config.Dimension == 3 && (first.Dimension < 3 || first.Size[2] < 2))
  {
    throw InputError("'" + first.Description + "' is a 2D image but the model is 3D; expected a volume");
  }
}

std::string
Model::ResolveTarget(const SourceVolumes & sources, const std::string & target) const
{
  const ModelConfig & config = m_Impl->Config;
  RefuseSegmenter(config);
  const std::vector<std::string> targets = config.SynthesizedModalities();
  const std::string              list = JoinNames(targets);
  if (target.empty())
  {
    if (!config.IsUnified())
    {
      return config.Target;
    }
    std::vector<std::string> lacking;
    for (const auto & t : targets)
    {
      if (sources.count(t) == 0)
      {
        lacking.push_back(t);
      }
    }
    if (lacking.size() == 1)
    {
      return lacking.front(); // the one gap, as in BraSyn
    }
    throw InputError("this model synthesizes any of " + list + " and the sources lack " +
                     std::to_string(lacking.size()) + " of them; name the target (--target, SetTargetModality, " +
                     "target=)");
  }
  if (config.TargetIndex(target) < 0)
  {
    throw InputError("target '" + target + "' is not one this model synthesizes; expected " + list);
  }
  if (sources.count(target))
  {
    throw InputError("target '" + target + "' is also given as a source ('" + sources.at(target).Description +
                     "'); a synthesis is made from the other modalities");
  }
  return target;
}

Representation
Model::Encode(const Volume & target, const std::string & modality) const
{
  c10::InferenceMode  guard;
  const Impl &        impl = *m_Impl;
  const ModelConfig & config = impl.Config;
  if (config.ModelKind != "cdm")
  {
    throw InputError("a '" + config.ModelKind + "' model has no MRM encoder; expected a cdm model");
  }
  CheckFinite(target);
  if (config.Dimension == 3 && (target.Dimension < 3 || target.Size[2] < 2))
  {
    throw InputError("'" + target.Description + "' is a 2D image but the model is 3D; expected a volume");
  }
  std::vector<float> normalised(target.Data(), target.Data() + target.StoredVoxels());
  config.Normalization.Apply(normalised, config.Normalization.ComputeScale(target));
  const at::Tensor image =
    torch::from_blob(normalised.data(), { 1, target.Size[2], target.Size[1], target.Size[0] }, torch::kFloat32);
  const at::Tensor        batch = impl.ToNetworkLayout(image);
  std::vector<at::Tensor> parts;
  for (int64_t start = 0; start < batch.size(0); start += 16)
  {
    const int64_t count = std::min<int64_t>(16, batch.size(0) - start);
    parts.push_back(impl.EncodeTarget(batch.narrow(0, start, count).to(impl.Device)).cpu());
  }
  const at::Tensor z = torch::cat(parts, 0).contiguous();
  Representation   representation;
  representation.Target = modality.empty() ? config.Target : modality;
  if (config.TargetIndex(representation.Target) < 0)
  {
    throw InputError("modality '" + representation.Target + "' is not one this model synthesizes");
  }
  representation.Cells = z.size(0);
  representation.Dim = static_cast<int>(z.size(1));
  representation.Samples = 1;
  representation.Values.assign(z.data_ptr<float>(), z.data_ptr<float>() + z.numel());
  return representation;
}

Representation
Model::ReplaceRepresentation(const Representation & sampled, const std::string & mode, const Volume * reference) const
{
  if (mode == "sampled")
  {
    return sampled;
  }
  Representation replaced = sampled;
  replaced.Samples = 1;
  if (mode == "zero")
  {
    replaced.Values.assign(static_cast<size_t>(sampled.Cells * sampled.Dim), 0.0f);
    return replaced;
  }
  if (mode != "oracle")
  {
    throw InputError("representation '" + mode + "' is unknown; expected sampled, oracle or zero");
  }
  if (!reference)
  {
    throw InputError("the oracle representation needs a reference image of the target modality (" +
                     m_Impl->Config.Target + ")");
  }
  const Representation oracle = Encode(*reference, sampled.Target);
  if (oracle.Cells != sampled.Cells || oracle.Dim != sampled.Dim)
  {
    throw InputError("reference '" + reference->Description + "' gives " + std::to_string(oracle.Cells) +
                     " representation cell(s); expected " + std::to_string(sampled.Cells) +
                     " as the sources give (the same size and slice axis)");
  }
  replaced.Values = oracle.Values;
  return replaced;
}

Representation
Model::SampleRepresentation(const SourceVolumes & sources, const SynthesisOptions & options) const
{
  CheckSources(sources);
  if (options.Samples < 1)
  {
    throw InputError("samples must be at least 1, got " + std::to_string(options.Samples));
  }
  c10::InferenceMode  guard;
  const Impl &        impl = *m_Impl;
  const ModelConfig & config = impl.Config;
  Representation      representation;
  representation.Target = ResolveTarget(sources, options.Target);
  CompleteSourceScales(config, sources, representation.SourceScales);
  const Volume & first = sources.begin()->second;
  if (config.ModelKind != "cdm")
  {
    // The baselines have no representation: only the sources' normalisation travels to the synthesis.
    representation.Cells = config.Dimension == 2 ? first.Size[config.SliceAxis] : 1;
    representation.Dim = 0;
    representation.Samples = options.Samples;
    return representation;
  }
  // c = E_src(sources): a 2D model's slices a few at a time, a 3D model's volume in tiles; each call reads only its
  // window of the sources.
  at::Tensor condition;
  {
    const ReducedPrecisionScope precision(impl.Device, options.NetworkPrecision); // the MDN's steps stay float32
    std::vector<at::Tensor>     conditions;
    if (config.Dimension == 2)
    {
      const int64_t slices = first.Size[config.SliceAxis];
      const int64_t perCall = impl.SlicesPerCall(options, first.Size);
      for (int64_t start = 0; start < slices; start += perCall)
      {
        Region window;
        window.Size = first.Size;
        window.Index[config.SliceAxis] = start;
        window.Size[config.SliceAxis] = std::min(perCall, slices - start);
        const at::Tensor batch =
          impl.ToNetworkLayout(impl.SourceWindow(sources, representation.SourceScales, window)).to(impl.Device);
        conditions.push_back(impl.EncodeSources(batch));
      }
    }
    else
    {
      conditions.push_back(
        impl.EncodeSourceVolume(sources, representation.SourceScales, first.Size, options.VoxelsPerCall));
    }
    condition = torch::cat(conditions, 0).to(torch::kFloat32);
    condition = impl.ConditionFor(condition, impl.TargetIndices(representation.Target, condition.size(0)));
  }
  const double  eta = options.Eta < 0.0 ? config.Diffusion.Eta : options.Eta;
  const int64_t d = config.Network.RepresentationDim;
  representation.Cells = condition.size(0);
  representation.Dim = static_cast<int>(d);
  representation.Samples = options.Samples;
  for (int k = 0; k < options.Samples; ++k)
  {
    // Sample k starts from its own seeded noise; eta > 0 draws further seeded noise per step.
    const uint64_t sampleSeed = options.Seed * 1000003ull + static_cast<uint64_t>(k);
    uint64_t       step = 0;
    const auto     noise = [&]() {
      return SeededNoise({ condition.size(0), d }, sampleSeed * 7919ull + (++step), impl.Device);
    };
    const at::Tensor zStart = SeededNoise({ condition.size(0), d }, sampleSeed, impl.Device);
    const at::Tensor z = impl.SampleRepresentation(condition, zStart, eta, noise).cpu().contiguous();
    representation.Values.insert(representation.Values.end(), z.data_ptr<float>(), z.data_ptr<float>() + z.numel());
  }
  return representation;
}

} // namespace cdm
