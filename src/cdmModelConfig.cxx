/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#include "cdmModelConfig.h"
#include "cdmError.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <set>

namespace cdm
{

const std::vector<std::string> &
KnownModalities()
{
  static const std::vector<std::string> modalities{ "t1n", "t1c", "t2w", "t2f", "pd" };
  return modalities;
}

const std::vector<std::string> &
BraTSModalities()
{
  static const std::vector<std::string> modalities{ "t1n", "t1c", "t2w", "t2f" };
  return modalities;
}

std::vector<std::string>
DefaultModalities(const std::vector<std::string> & targets)
{
  static const std::vector<std::string> ixi{ "t1n", "t2w", "pd" };
  for (const std::vector<std::string> * set : { &BraTSModalities(), &ixi })
  {
    if (std::all_of(targets.begin(), targets.end(), [set](const std::string & t) {
          return std::find(set->begin(), set->end(), t) != set->end();
        }))
    {
      return *set;
    }
  }
  throw InputError("targets " + JoinNames(targets) + " are not all in BraTS's set (" + JoinNames(BraTSModalities()) +
                   ") or IXI's (" + JoinNames(ixi) + "); name the sources");
}

std::string
JoinNames(const std::vector<std::string> & names, const std::string & separator)
{
  std::string text;
  for (const auto & name : names)
  {
    text += (text.empty() ? "" : separator) + name;
  }
  return text;
}

ModelConfig
ModelConfig::FromPreset(const std::string &              preset,
                        unsigned int                     dimension,
                        const std::vector<std::string> & sources,
                        const std::string &              target,
                        const std::string &              kind)
{
  ModelConfig config;
  config.ModelKind = kind;
  if (kind == "ddim")
  {
    // The image-space baseline: DDPM's linear schedule, strided DDIM sampling.
    config.Diffusion.Schedule = "linear";
    config.Diffusion.TrainSteps = 1000;
    config.Diffusion.SamplingSteps = 50;
    config.Diffusion.BetaStart = 1e-4;
    config.Diffusion.BetaEnd = 2e-2;
  }
  config.Preset = preset;
  config.Dimension = dimension;
  config.Sources = sources;
  config.Target = target;
  NetworkConfig & n = config.Network;
  if (preset == "tiny")
  {
    n = NetworkConfig{}; // the defaults are the tiny sizes
  }
  else if (preset == "small")
  {
    n.RepresentationDim = 128;
    n.UNetChannels = 24;
    n.UNetMultipliers = { 1, 2, 4 };
    n.UNetBlocks = 1;
    n.EncoderChannels = 16;
    n.EncoderLevels = 3;
    n.EncoderBlocks = 1;
    n.DenoiserWidth = 256;
    n.DenoiserBlocks = 3;
    n.MaskPatchSize = 8;
    n.MaskRatio = 0.6;
  }
  else if (preset == "paper")
  {
    // DiffIR scale: a 256-d prior, 64-channel stems, 5 residual MLP blocks in the denoiser.
    n.RepresentationDim = 256;
    n.UNetChannels = 64;
    n.UNetMultipliers = { 1, 2, 4, 4 };
    n.UNetBlocks = 2;
    n.EncoderChannels = 64;
    n.EncoderLevels = 3;
    n.EncoderBlocks = 2;
    n.DenoiserWidth = 256;
    n.DenoiserBlocks = 5;
    n.MaskPatchSize = 16;
    n.MaskRatio = 0.75;
  }
  else
  {
    throw InputError("preset '" + preset + "' is unknown; expected tiny, small or paper");
  }
  config.Validate();
  return config;
}

void
ModelConfig::Validate() const
{
  const auto fail = [](const std::string & message) { throw InputError(message); };
  if (Dimension != 2 && Dimension != 3)
  {
    fail("dimension " + std::to_string(Dimension) + " is not supported; expected 2 or 3");
  }
  if (ModelKind != "cdm" && ModelKind != "unet" && ModelKind != "ddim" && ModelKind != "segmenter")
  {
    fail("model kind '" + ModelKind + "' is unknown; expected cdm, unet, ddim or segmenter");
  }
  if (SliceAxis < 0 || SliceAxis > 2)
  {
    fail("slice axis " + std::to_string(SliceAxis) + " is out of range; expected 0, 1 or 2");
  }
  const auto & known = KnownModalities();
  const auto   isKnown = [&](const std::string & m) { return std::find(known.begin(), known.end(), m) != known.end(); };
  if (IsSegmenter() && Target != SegmentationName)
  {
    fail("a segmenter's target is '" + std::string(SegmentationName) + "' (the tumour labels); got '" + Target + "'");
  }
  if (!IsSegmenter() && !isKnown(Target))
  {
    fail("target modality '" + Target + "' is unknown; expected one of " + JoinNames(known));
  }
  if (Sources.empty())
  {
    fail("no source modality; expected at least one of " + JoinNames(known));
  }
  std::set<std::string> seen;
  for (const auto & s : Sources)
  {
    if (!isKnown(s))
    {
      fail("source modality '" + s + "' is unknown; expected one of " + JoinNames(known));
    }
    if (s == Target && !IsUnified())
    {
      fail("source modality '" + s + "' is also the target");
    }
    if (!seen.insert(s).second)
    {
      fail("source modality '" + s + "' is listed twice");
    }
  }
  const NetworkConfig & n = Network;
  if (n.RepresentationDim < 1 || n.UNetChannels < 1 || n.EncoderChannels < 1 || n.DenoiserWidth < 1 ||
      n.UNetBlocks < 1 || n.EncoderBlocks < 1 || n.DenoiserBlocks < 1 || n.EncoderLevels < 1 ||
      n.UNetMultipliers.empty() || n.MaskPatchSize < 1 || !(n.MaskRatio > 0.0 && n.MaskRatio < 1.0))
  {
    fail("network sizes must be positive and the mask ratio in (0, 1)");
  }
  if (n.RepresentationGrid != 1)
  {
    fail("representation grid " + std::to_string(n.RepresentationGrid) +
         " is not supported yet; expected 1 (a global vector)");
  }
  const DiffusionConfig & d = Diffusion;
  if (d.Schedule != "diffir" && d.Schedule != "linear")
  {
    fail("diffusion schedule '" + d.Schedule + "' is unknown; expected diffir or linear");
  }
  if (d.TrainSteps < 1 || d.SamplingSteps < 1 || d.SamplingSteps > d.TrainSteps)
  {
    fail("diffusion steps: expected 1 <= sampling steps <= train steps");
  }
  if (!(d.BetaStart > 0.0 && d.BetaEnd < 1.0 && d.BetaStart <= d.BetaEnd) || d.Eta < 0.0)
  {
    fail("diffusion betas must satisfy 0 < start <= end < 1, and eta >= 0");
  }
  if (!(TargetScale > 0.0))
  {
    fail("target scale must be positive");
  }
  if (IsUnified())
  {
    if (ModelKind != "cdm")
    {
      fail("a unified model (several targets) must be of kind cdm; got " + ModelKind);
    }
    if (!SourcesOptional)
    {
      fail("a unified model takes any subset of its sources; expected sources_optional true");
    }
    if (Targets.size() < 2)
    {
      fail("a unified model has at least two targets");
    }
    std::set<std::string> targets;
    for (const auto & t : Targets)
    {
      if (SourceIndex(t) < 0)
      {
        fail("target '" + t + "' of a unified model must also be one of its sources (absent when synthesized)");
      }
      if (!targets.insert(t).second)
      {
        fail("target '" + t + "' is listed twice");
      }
      const auto scale = TargetScales.find(t);
      if (scale == TargetScales.end() || !(scale->second > 0.0))
      {
        fail("target '" + t + "' has no positive output scale");
      }
    }
    if (Target != Targets.front())
    {
      fail("a unified model's target must be its first target");
    }
  }
}

ModelConfig
ModelConfig::UnifiedFromPreset(const std::string &              preset,
                               unsigned int                     dimension,
                               const std::vector<std::string> & modalities,
                               const std::vector<std::string> & targets)
{
  if (targets.size() < 2)
  {
    throw InputError("a unified model needs two or more targets; for one, train a per-target model");
  }
  // The preset's sizes, taken from a per-target configuration of the same modalities.
  std::vector<std::string> others;
  for (const auto & m : modalities)
  {
    if (m != targets.front())
    {
      others.push_back(m);
    }
  }
  ModelConfig config = FromPreset(preset, dimension, others, targets.front(), "cdm");
  config.Sources = modalities;
  config.Targets = targets;
  config.SourcesOptional = true;
  for (const auto & t : targets)
  {
    config.TargetScales[t] = 1.0;
  }
  config.Validate();
  return config;
}

std::vector<std::string>
ModelConfig::SynthesizedModalities() const
{
  return IsUnified() ? Targets : std::vector<std::string>{ Target };
}

int
ModelConfig::TargetIndex(const std::string & target) const
{
  const std::vector<std::string> targets = SynthesizedModalities();
  const auto                     it = std::find(targets.begin(), targets.end(), target);
  return it == targets.end() ? -1 : static_cast<int>(it - targets.begin());
}

double
ModelConfig::ScaleOf(const std::string & target) const
{
  if (!IsUnified())
  {
    return TargetScale;
  }
  const auto it = TargetScales.find(target);
  if (it == TargetScales.end())
  {
    throw InputError("target '" + target + "' is not one this model synthesizes");
  }
  return it->second;
}

std::vector<std::string>
ModelConfig::Stages() const
{
  if (ModelKind == "unet")
  {
    return { "unet" };
  }
  if (ModelKind == "ddim")
  {
    return { "ddim" };
  }
  if (ModelKind == "segmenter")
  {
    return { "segment" };
  }
  return { "mrm", "cunet", "mdn", "finetune" };
}

int
ModelConfig::SourceIndex(const std::string & name) const
{
  const auto it = std::find(Sources.begin(), Sources.end(), name);
  return it == Sources.end() ? -1 : static_cast<int>(it - Sources.begin());
}

int64_t
ModelConfig::UNetAlignment() const
{
  return int64_t{ 1 } << (Network.UNetMultipliers.size() - 1);
}

int64_t
ModelConfig::UNetReceptiveRadius() const
{
  // Walk the C-UNet (cdmNetworks.cxx) adding each layer's reach at its scale.
  const auto    levels = static_cast<int64_t>(Network.UNetMultipliers.size());
  const int64_t blocks = Network.UNetBlocks;
  int64_t       radius = 1; // stem 3x3
  for (int64_t level = 0; level < levels; ++level)
  {
    const int64_t scale = int64_t{ 1 } << level;
    radius += blocks * 2 * scale; // two 3x3 convolutions per residual block
    if (level + 1 < levels)
    {
      radius += scale; // 2x2 stride-2 downsampling
    }
  }
  radius += 2 * (int64_t{ 1 } << (levels - 1)); // middle block
  for (int64_t level = levels - 2; level >= 0; --level)
  {
    const int64_t scale = int64_t{ 1 } << level;
    radius += 2 * scale;          // nearest upsampling + 3x3 convolution
    radius += blocks * 2 * scale; // residual blocks after the skip concatenation
  }
  radius += 1;                     // output 3x3
  return radius + UNetAlignment(); // cell-boundary margin of the coarse grids
}

std::string
ModelConfig::ToJson(int indent) const
{
  const NetworkConfig &   n = Network;
  const DiffusionConfig & d = Diffusion;
  nlohmann::json          j;
  // Per-target synthesis files stay readable by version-1 readers; the kinds they do not know refuse by version.
  j["format_version"] = IsUnified() || IsSegmenter() ? 2 : 1;
  j["model_kind"] = ModelKind;
  j["preset"] = Preset;
  j["dimension"] = Dimension;
  j["slice_axis"] = SliceAxis;
  j["sources"] = Sources;
  j["target"] = Target;
  j["sources_optional"] = SourcesOptional;
  j["network"] = { { "representation_dim", n.RepresentationDim },
                   { "representation_grid", n.RepresentationGrid },
                   { "unet_channels", n.UNetChannels },
                   { "unet_multipliers", n.UNetMultipliers },
                   { "unet_blocks", n.UNetBlocks },
                   { "encoder_channels", n.EncoderChannels },
                   { "encoder_levels", n.EncoderLevels },
                   { "encoder_blocks", n.EncoderBlocks },
                   { "denoiser_width", n.DenoiserWidth },
                   { "denoiser_blocks", n.DenoiserBlocks },
                   { "mask_patch_size", n.MaskPatchSize },
                   { "mask_ratio", n.MaskRatio } };
  j["diffusion"] = {
    { "schedule", d.Schedule },    { "train_steps", d.TrainSteps }, { "sampling_steps", d.SamplingSteps },
    { "beta_start", d.BetaStart }, { "beta_end", d.BetaEnd },       { "eta", d.Eta }
  };
  j["normalization"] = { { "method", Normalization.Method },
                         { "upper_percentile", Normalization.UpperPercentile },
                         { "foreground_fraction", Normalization.ForegroundFraction },
                         { "clip", Normalization.Clip } };
  j["target_scale"] = TargetScale;
  if (IsUnified())
  {
    j["targets"] = Targets;
    j["target_scales"] = TargetScales;
  }
  nlohmann::json provenance = nlohmann::json::parse(ProvenanceJson, nullptr, false);
  j["provenance"] = provenance.is_discarded() ? nlohmann::json::object() : provenance;
  return j.dump(indent);
}

ModelConfig
ModelConfig::FromJson(const std::string & text)
{
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object())
  {
    throw ModelFileError("model header: the cdm configuration is not a JSON object");
  }
  std::string field;
  try
  {
    ModelConfig c;
    const auto  get = [&](const nlohmann::json & object, const char * key, auto & value) {
      field = key;
      if (!object.contains(key))
      {
        throw ModelFileError(std::string("model header: field '") + key + "' is missing");
      }
      object.at(key).get_to(value);
    };
    get(j, "format_version", c.FormatVersion);
    if (c.FormatVersion < 1 || c.FormatVersion > CurrentFormatVersion)
    {
      throw ModelFileError("model header: format version " + std::to_string(c.FormatVersion) +
                           " is not supported; this itk-cdm reads versions 1 to " +
                           std::to_string(CurrentFormatVersion) +
                           (c.FormatVersion > CurrentFormatVersion ? " (the file is newer: update itk-cdm)" : ""));
    }
    get(j, "model_kind", c.ModelKind);
    get(j, "preset", c.Preset);
    get(j, "dimension", c.Dimension);
    get(j, "slice_axis", c.SliceAxis);
    get(j, "sources", c.Sources);
    get(j, "target", c.Target);
    get(j, "sources_optional", c.SourcesOptional);
    field = "network";
    const auto & n = j.at("network");
    get(n, "representation_dim", c.Network.RepresentationDim);
    get(n, "representation_grid", c.Network.RepresentationGrid);
    get(n, "unet_channels", c.Network.UNetChannels);
    get(n, "unet_multipliers", c.Network.UNetMultipliers);
    get(n, "unet_blocks", c.Network.UNetBlocks);
    get(n, "encoder_channels", c.Network.EncoderChannels);
    get(n, "encoder_levels", c.Network.EncoderLevels);
    get(n, "encoder_blocks", c.Network.EncoderBlocks);
    get(n, "denoiser_width", c.Network.DenoiserWidth);
    get(n, "denoiser_blocks", c.Network.DenoiserBlocks);
    get(n, "mask_patch_size", c.Network.MaskPatchSize);
    get(n, "mask_ratio", c.Network.MaskRatio);
    field = "diffusion";
    const auto & d = j.at("diffusion");
    get(d, "schedule", c.Diffusion.Schedule);
    get(d, "train_steps", c.Diffusion.TrainSteps);
    get(d, "sampling_steps", c.Diffusion.SamplingSteps);
    get(d, "beta_start", c.Diffusion.BetaStart);
    get(d, "beta_end", c.Diffusion.BetaEnd);
    get(d, "eta", c.Diffusion.Eta);
    field = "normalization";
    const auto & r = j.at("normalization");
    get(r, "method", c.Normalization.Method);
    get(r, "upper_percentile", c.Normalization.UpperPercentile);
    get(r, "foreground_fraction", c.Normalization.ForegroundFraction);
    get(r, "clip", c.Normalization.Clip);
    get(j, "target_scale", c.TargetScale);
    if (c.FormatVersion >= 2 && j.contains("targets"))
    {
      get(j, "targets", c.Targets);
      get(j, "target_scales", c.TargetScales);
    }
    c.ProvenanceJson = j.contains("provenance") ? j.at("provenance").dump() : "{}";
    c.Validate();
    return c;
  }
  catch (const ModelFileError &)
  {
    throw;
  }
  catch (const InputError & e)
  {
    throw ModelFileError(std::string("model header: ") + e.what());
  }
  catch (const nlohmann::json::exception & e)
  {
    throw ModelFileError("model header: field '" + field + "' has the wrong type or is missing (" + e.what() + ")");
  }
}

} // namespace cdm
