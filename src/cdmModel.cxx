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
#include <iterator>

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

namespace
{
/** Known names, the required ones present. */
void
CheckSourceNames(const ModelConfig & config, const SourceVolumes & sources, bool allowAbsentSources)
{
  const std::string expected = JoinNames(config.Sources);
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
}

/** Shared geometry, finite voxels. */
void
CheckSourceVoxels(const SourceVolumes & sources)
{
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
}

std::vector<std::string>
Names(const SourceVolumes & sources)
{
  std::vector<std::string> names;
  for (const auto & entry : sources)
  {
    names.push_back(entry.first);
  }
  return names;
}

/** A 3D model needs a volume. */
void
CheckSourceDimension(const ModelConfig & config, const Volume & first, const std::array<int64_t, 3> & imageSize)
{
  if (config.Dimension == 3 && (first.Dimension < 3 || imageSize[2] < 2))
  {
    throw InputError("'" + first.Description + "' is a 2D image but the model is 3D; expected a volume");
  }
}
} // namespace

void
Model::CheckSources(const SourceVolumes & sources, bool allowAbsentSources) const
{
  CheckSourceNames(m_Impl->Config, sources, allowAbsentSources);
  CheckSourceVoxels(sources);
  CheckSourceDimension(m_Impl->Config, sources.begin()->second, sources.begin()->second.Size);
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

namespace
{
/** Source encoder + MDN: K samples of z_hat from the sources in `access`, normalised with `representation`'s scales
 *  (one implementation for whole and streamed sources). */
void
SampleFromSources(const Model::Impl &      impl,
                  SourceAccess &           access,
                  const SynthesisOptions & options,
                  Representation &         representation)
{
  const ModelConfig & config = impl.Config;
  representation.Samples = options.Samples;
  if (config.ModelKind != "cdm")
  {
    // The baselines have no representation: only the sources' normalisation travels to the synthesis.
    representation.Cells = config.Dimension == 2 ? access.ImageSize()[config.SliceAxis] : 1;
    representation.Dim = 0;
    return;
  }
  // c = E_src(sources): a 2D model's slices a few at a time, a 3D model's volume slab by slab; each call reads only
  // its window of the sources.
  at::Tensor condition;
  {
    const ReducedPrecisionScope precision(impl.Device, options.NetworkPrecision); // the MDN's steps stay float32
    condition = config.Dimension == 2
                  ? impl.EncodeSourceSlices(access, representation.SourceScales, options)
                  : impl.EncodeSourceVolume(access, representation.SourceScales, options.VoxelsPerCall);
    condition = condition.to(torch::kFloat32);
    condition = impl.ConditionFor(condition, impl.TargetIndices(representation.Target, condition.size(0)));
  }
  const double  eta = options.Eta < 0.0 ? config.Diffusion.Eta : options.Eta;
  const int64_t d = config.Network.RepresentationDim;
  representation.Cells = condition.size(0);
  representation.Dim = static_cast<int>(d);
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
}

void
CheckSamples(const SynthesisOptions & options)
{
  if (options.Samples < 1)
  {
    throw InputError("samples must be at least 1, got " + std::to_string(options.Samples));
  }
}

/** Voxels a streamed sampler reads at a time by default: 2^20 (18 planes of 240x240; four of a 3D model's encoder
 *  slabs: fewer, larger reads than the encoder's calls, few enough voxels to be small beside the networks). */
constexpr int64_t DefaultVoxelsPerRead = int64_t{ 1 } << 20;
} // namespace

Representation
Model::SampleRepresentation(const SourceVolumes & sources, const SynthesisOptions & options) const
{
  CheckSources(sources);
  CheckSamples(options);
  c10::InferenceMode guard;
  Representation     representation;
  representation.Target = ResolveTarget(sources, options.Target);
  CompleteSourceScales(m_Impl->Config, sources, representation.SourceScales);
  SourceAccess access(sources);
  SampleFromSources(*m_Impl, access, options, representation);
  return representation;
}

Representation
Model::SampleRepresentation(const SourceWindowReader &     read,
                            const std::array<int64_t, 3> & imageSize,
                            const SynthesisOptions &       options) const
{
  CheckSamples(options);
  for (int a = 0; a < 3; ++a)
  {
    if (imageSize[a] < 1)
    {
      throw InputError("streamed sources: image size " + std::to_string(imageSize[0]) + "x" +
                       std::to_string(imageSize[1]) + "x" + std::to_string(imageSize[2]) +
                       "; expected at least one voxel per axis");
    }
  }
  const ModelConfig & config = m_Impl->Config;
  // Every window is checked as CheckSources checks whole sources; the names (and what errors say of each source) are
  // the first window's, kept without voxels.
  SourceVolumes names;
  const auto    checkedRead = [&](const Region & window) {
    SourceVolumes volumes = read(window);
    if (names.empty())
    {
      CheckSourceNames(config, volumes, false);
      CheckSourceDimension(config, volumes.begin()->second, imageSize);
      for (const auto & [name, volume] : volumes)
      {
        names[name] = volume.GeometryCopy(volume.Description);
      }
    }
    for (const auto & [name, volume] : volumes)
    {
      if (names.count(name) == 0 || volumes.size() != names.size())
      {
        throw InputError("streamed sources: a window has the sources " + JoinNames(Names(volumes)) +
                         " but the first had " + JoinNames(Names(names)));
      }
      if (volume.Size != window.Size || volume.StoredVoxels() != window.Size[0] * window.Size[1] * window.Size[2])
      {
        throw InputError("streamed source '" + name + "' ('" + volume.Description + "'): a window of " +
                         std::to_string(window.Size[0]) + "x" + std::to_string(window.Size[1]) + "x" +
                         std::to_string(window.Size[2]) + " voxels was asked for and " +
                         std::to_string(volume.Size[0]) + "x" + std::to_string(volume.Size[1]) + "x" +
                         std::to_string(volume.Size[2]) + " came back");
      }
    }
    CheckSourceVoxels(volumes);
    return volumes;
  };
  SourceAccess access(checkedRead, imageSize, options.VoxelsPerRead > 0 ? options.VoxelsPerRead : DefaultVoxelsPerRead);

  // Pass 1, the normalisation scales: both thresholds of the rule are percentiles of the positive voxels, so those
  // alone are kept.
  std::map<std::string, std::vector<float>> positive;
  const int                                 axis = StreamedAxis(imageSize);
  for (int64_t start = 0; start < imageSize[axis]; start += access.PlanesPerRead(axis))
  {
    Region window;
    window.Size = imageSize;
    window.Index[axis] = start;
    window.Size[axis] = std::min(access.PlanesPerRead(axis), imageSize[axis] - start);
    Region local;
    for (const auto & [name, volume] : access.Hold(window, axis, local))
    {
      std::copy_if(volume.Data(),
                   volume.Data() + volume.StoredVoxels(),
                   std::back_inserter(positive[name]),
                   [](float v) { return v > 0.0f; });
    }
  }
  c10::InferenceMode guard;
  Representation     representation;
  representation.Target = ResolveTarget(names, options.Target);
  for (auto & [name, values] : positive)
  {
    representation.SourceScales[name] = config.Normalization.ScaleOfPositiveVoxels(values, names.at(name).Description);
    std::vector<float>().swap(values); // freed before the encoder runs
  }
  // Pass 2, the source encoder and the MDN.
  SampleFromSources(*m_Impl, access, options, representation);
  return representation;
}

} // namespace cdm
