/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
// Model::Impl: the networks of a model and the tensor operations training and inference share.
#include "cdmError.h"
#include "cdmModelImpl.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>

namespace cdm
{

at::Tensor
PadToMultiple(const at::Tensor & x, int64_t multiple)
{
  std::vector<int64_t> pads; // constant_pad_nd lists the last axis first
  bool                 needed = false;
  for (int64_t d = x.dim() - 1; d >= 2; --d)
  {
    const int64_t extra = (multiple - x.size(d) % multiple) % multiple;
    pads.push_back(0);
    pads.push_back(extra);
    needed = needed || extra > 0;
  }
  return needed ? torch::constant_pad_nd(x, pads, 0.0) : x;
}

at::Tensor
CropTo(const at::Tensor & x, const std::vector<int64_t> & spatialSizes)
{
  at::Tensor y = x;
  for (size_t i = 0; i < spatialSizes.size(); ++i)
  {
    y = y.narrow(static_cast<int64_t>(i) + 2, 0, spatialSizes[i]);
  }
  return y;
}

at::Tensor
SeededNoise(const std::vector<int64_t> & shape, uint64_t seed, const c10::Device & device)
{
  at::Generator generator = at::detail::createCPUGenerator(seed);
  return torch::randn(shape, generator, torch::kFloat32).to(device);
}

std::vector<float>
Representation::Mean() const
{
  std::vector<float> mean(static_cast<size_t>(Cells * Dim), 0.0f);
  for (int k = 0; k < Samples; ++k)
  {
    for (size_t i = 0; i < mean.size(); ++i)
    {
      mean[i] += Values[k * mean.size() + i] / static_cast<float>(Samples);
    }
  }
  return mean;
}

/** Normalises each source with the given scales (computing them when absent). */
std::map<std::string, std::vector<float>>
NormaliseSources(const ModelConfig & config, const SourceVolumes & sources, std::map<std::string, double> & scales)
{
  std::map<std::string, std::vector<float>> normalised;
  for (const auto & [name, volume] : sources)
  {
    if (scales.count(name) == 0)
    {
      scales[name] = config.Normalization.ComputeScale(volume);
    }
    normalised[name] = volume.Voxels;
    config.Normalization.Apply(normalised[name], scales[name]);
  }
  return normalised;
}

std::map<std::string, const std::vector<float> *>
Pointers(const std::map<std::string, std::vector<float>> & values)
{
  std::map<std::string, const std::vector<float> *> pointers;
  for (const auto & [name, v] : values)
  {
    pointers[name] = &v;
  }
  return pointers;
}

Model::Impl::Impl(const ModelConfig & config, const c10::Device & device)
    : Config(config)
    , Device(device)
{
  Config.Validate();
  const int             dimension = static_cast<int>(Config.Dimension);
  const NetworkConfig & n = Config.Network;
  if (Config.ModelKind == "cdm")
  {
    MrmEncoder = nn::ImageEncoder(dimension, 1, n);
    MrmDecoder = nn::FeatureDecoder(dimension, MrmEncoder->FeatureChannels(), n);
    SourceEncoder = nn::ImageEncoder(dimension, SourceChannels(), n);
    Denoiser = nn::Denoiser(n);
    UNet = nn::CrossConditionedUNet(dimension, SourceChannels(), n.RepresentationDim, n);
  }
  else if (Config.ModelKind == "unet")
  {
    UNet = nn::CrossConditionedUNet(dimension, SourceChannels(), 0, n); // no guidance: a plain UNet regressor
  }
  else
  {
    // ddim: the same UNet over [noisy target, sources], conditioned on the timestep instead of z.
    UNet = nn::CrossConditionedUNet(dimension, 1 + SourceChannels(), n.RepresentationDim, n);
    TimeEmbedding = nn::TimeEmbedding(n.RepresentationDim);
  }
  Schedule = std::make_unique<DiffusionSchedule>(Config.Diffusion);
  for (auto & [name, network] : Networks())
  {
    network->to(Device);
  }
  SetTraining(false);
}

std::vector<std::pair<std::string, torch::nn::Module *>>
Model::Impl::Networks() const
{
  std::vector<std::pair<std::string, torch::nn::Module *>> networks;
  const auto                                               add = [&](const char * name, torch::nn::Module * network) {
    if (network)
    {
      networks.emplace_back(name, network);
    }
  };
  add("mrm_encoder", MrmEncoder ? MrmEncoder.get() : nullptr);
  add("mrm_decoder", MrmDecoder ? MrmDecoder.get() : nullptr);
  add("source_encoder", SourceEncoder ? SourceEncoder.get() : nullptr);
  add("denoiser", Denoiser ? Denoiser.get() : nullptr);
  add("time_embedding", TimeEmbedding ? TimeEmbedding.get() : nullptr);
  add("unet", UNet.get());
  return networks;
}

safetensors::NamedTensors
Model::Impl::NamedParameters() const
{
  safetensors::NamedTensors named;
  for (const auto & [prefix, network] : Networks())
  {
    for (const auto & item : network->named_parameters(true))
    {
      named.emplace_back(prefix + "." + item.key(), item.value());
    }
  }
  return named;
}

void
Model::Impl::AssignParameters(const safetensors::NamedTensors & tensors, const std::string & path)
{
  std::map<std::string, at::Tensor> byName(tensors.begin(), tensors.end());
  torch::NoGradGuard                noGrad;
  for (auto & [name, parameter] : NamedParameters())
  {
    const auto found = byName.find(name);
    if (found == byName.end())
    {
      throw ModelFileError("model file '" + path + "': tensor '" + name + "' is missing for a '" + Config.Preset +
                           "' " + std::to_string(Config.Dimension) + "D network");
    }
    if (found->second.sizes() != parameter.sizes())
    {
      throw ModelFileError("model file '" + path + "': tensor '" + name + "' has shape " +
                           c10::str(found->second.sizes()) + "; the network expects " + c10::str(parameter.sizes()));
    }
    parameter.copy_(found->second.to(parameter.device()));
    byName.erase(found);
  }
  if (!byName.empty())
  {
    throw ModelFileError("model file '" + path + "': tensor '" + byName.begin()->first +
                         "' does not belong to the network described by its header");
  }
}

void
Model::Impl::SetTraining(bool training)
{
  for (const auto & [name, network] : Networks())
  {
    network->train(training);
  }
}

at::Tensor
Model::Impl::SourceTensor(const std::map<std::string, const std::vector<float> *> & normalised,
                          const std::array<int64_t, 3> &                            size) const
{
  const std::vector<int64_t> shape{ size[2], size[1], size[0] };
  std::vector<at::Tensor>    channels;
  for (const auto & name : Config.Sources)
  {
    const auto found = normalised.find(name);
    if (found == normalised.end() || found->second == nullptr)
    {
      channels.push_back(torch::zeros(shape));
      channels.push_back(torch::zeros(shape));
    }
    else
    {
      channels.push_back(torch::from_blob(const_cast<float *>(found->second->data()), shape, torch::kFloat32).clone());
      channels.push_back(torch::ones(shape));
    }
  }
  return torch::stack(channels, 0);
}

at::Tensor
Model::Impl::ToNetworkLayout(const at::Tensor & channelsZYX) const
{
  if (Config.Dimension == 3)
  {
    return channelsZYX.unsqueeze(0);
  }
  // [C, Z, Y, X]: volume axis a lives in tensor dimension 3 - a.
  switch (Config.SliceAxis)
  {
    case 2:
      return channelsZYX.permute({ 1, 0, 2, 3 });
    case 1:
      return channelsZYX.permute({ 2, 0, 1, 3 });
    default:
      return channelsZYX.permute({ 3, 0, 1, 2 });
  }
}

at::Tensor
Model::Impl::FromNetworkLayout(const at::Tensor & batch) const
{
  if (Config.Dimension == 3)
  {
    return batch.squeeze(0);
  }
  switch (Config.SliceAxis)
  {
    case 2:
      return batch.permute({ 1, 0, 2, 3 });
    case 1:
      return batch.permute({ 1, 2, 0, 3 });
    default:
      return batch.permute({ 1, 2, 3, 0 });
  }
}

int64_t
Model::Impl::LayoutAxis(int volumeAxis) const
{
  if (Config.Dimension == 3)
  {
    return 4 - volumeAxis; // [1, C, Z, Y, X]
  }
  if (volumeAxis == Config.SliceAxis)
  {
    return 0;
  }
  // The two in-plane axes keep their [Z, Y, X] order after the slice axis moved out.
  std::vector<int> inPlane;
  for (int a = 2; a >= 0; --a)
  {
    if (a != Config.SliceAxis)
    {
      inPlane.push_back(a);
    }
  }
  return volumeAxis == inPlane[0] ? 2 : 3;
}

at::Tensor
Model::Impl::EncodeTarget(const at::Tensor & target) const
{
  return MrmEncoder->forward(PadToMultiple(target, int64_t{ 1 } << Config.Network.EncoderLevels)).second;
}

at::Tensor
Model::Impl::EncodeSources(const at::Tensor & sources) const
{
  return SourceEncoder->forward(PadToMultiple(sources, int64_t{ 1 } << Config.Network.EncoderLevels)).second;
}

at::Tensor
Model::Impl::SampleRepresentation(const at::Tensor &                     condition,
                                  const at::Tensor &                     zStart,
                                  double                                 eta,
                                  const DiffusionSchedule::NoiseSource & noise) const
{
  const auto denoise = [&](const at::Tensor & zt, const at::Tensor & t, int) {
    return Denoiser->forward(zt, condition, t);
  };
  return Schedule->Sample(denoise, zStart, Config.Diffusion.SamplingSteps, eta, noise);
}

at::Tensor
Model::Impl::SynthesizeBatch(const at::Tensor & sources, const at::Tensor & z) const
{
  return UNet->forward(sources, z);
}

at::Tensor
Model::Impl::PredictNoise(const at::Tensor & sources, const at::Tensor & xt, const at::Tensor & t) const
{
  return UNet->forward(torch::cat({ xt, sources }, 1), TimeEmbedding->forward(t));
}

at::Tensor
Model::Impl::SampleImage(const at::Tensor &                     sources,
                         const at::Tensor &                     noise,
                         double                                 eta,
                         const DiffusionSchedule::NoiseSource & stepNoise) const
{
  const double clip = Config.Normalization.Clip;
  const auto   denoise = [&](const at::Tensor & xt, const at::Tensor & t, int step) {
    const double     abar = Schedule->AlphaBar(step);
    const at::Tensor epsilon = PredictNoise(sources, xt, t);
    return ((xt - std::sqrt(1.0 - abar) * epsilon) / std::sqrt(abar)).clamp(0.0, clip);
  };
  return Schedule->Sample(denoise, noise, Config.Diffusion.SamplingSteps, eta, stepNoise);
}

std::pair<at::Tensor, at::Tensor>
Model::Impl::ReconstructMasked(const at::Tensor & target) const
{
  const int64_t        alignment = int64_t{ 1 } << Config.Network.EncoderLevels;
  const at::Tensor     padded = PadToMultiple(target, alignment);
  const int64_t        patch = Config.Network.MaskPatchSize;
  std::vector<int64_t> cells{ padded.size(0), 1 };
  for (int64_t d = 2; d < padded.dim(); ++d)
  {
    cells.push_back((padded.size(d) + patch - 1) / patch);
  }
  at::Tensor mask = (torch::rand(cells, padded.options()) < Config.Network.MaskRatio).to(torch::kFloat32);
  for (int64_t d = 2; d < padded.dim(); ++d)
  {
    mask = mask.repeat_interleave(patch, d).narrow(d, 0, padded.size(d));
  }
  const auto           encoded = MrmEncoder->forward(padded * (1.0 - mask));
  const at::Tensor     reconstruction = MrmDecoder->forward(encoded.first, encoded.second);
  std::vector<int64_t> sizes;
  for (int64_t d = 2; d < target.dim(); ++d)
  {
    sizes.push_back(target.size(d));
  }
  return { CropTo(reconstruction, sizes), CropTo(mask, sizes) };
}

} // namespace cdm
