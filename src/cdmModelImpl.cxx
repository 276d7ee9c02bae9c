/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
// Model::Impl: the networks of a model and the tensor operations training and inference share.
#include "cdmError.h"
#include "cdmModelImpl.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <stdexcept>

namespace cdm
{

Precision
ParsePrecision(const std::string & name, const std::string & parameter)
{
  if (name == "fp32")
  {
    return Precision::Float32;
  }
  if (name == "bf16")
  {
    return Precision::BFloat16;
  }
  if (name == "fp16")
  {
    return Precision::Float16;
  }
  throw InputError(parameter + " '" + name + "' is unknown; expected fp32, bf16 or fp16");
}

std::string
PrecisionName(Precision precision)
{
  switch (precision)
  {
    case Precision::BFloat16:
      return "bf16";
    case Precision::Float16:
      return "fp16";
    default:
      return "fp32";
  }
}

ReducedPrecisionScope::ReducedPrecisionScope(const c10::Device & device, Precision precision)
    : m_DeviceType(device.type())
    , m_Active(precision != Precision::Float32)
{
  if (!m_Active)
  {
    return;
  }
  m_WasEnabled = at::autocast::is_autocast_enabled(m_DeviceType);
  m_PreviousType = at::autocast::get_autocast_dtype(m_DeviceType);
  at::autocast::set_autocast_dtype(m_DeviceType, precision == Precision::BFloat16 ? at::kBFloat16 : at::kHalf);
  at::autocast::set_autocast_enabled(m_DeviceType, true);
}

ReducedPrecisionScope::~ReducedPrecisionScope()
{
  if (!m_Active)
  {
    return;
  }
  at::autocast::set_autocast_enabled(m_DeviceType, m_WasEnabled);
  at::autocast::set_autocast_dtype(m_DeviceType, m_PreviousType);
  if (!m_WasEnabled)
  {
    at::autocast::clear_cache(); // the weights cast for this scope
  }
}

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

at::Generator
NewGenerator(uint64_t seed)
{
  return at::detail::createCPUGenerator(seed);
}

at::Tensor
Noise(at::IntArrayRef shape, at::Generator & generator, const c10::Device & device)
{
  return torch::randn(shape, generator, torch::kFloat32).to(device);
}

ItemGenerators::ItemGenerators(const std::vector<uint64_t> & seeds)
{
  for (const uint64_t seed : seeds)
  {
    m_Generators.push_back(NewGenerator(seed));
  }
}

namespace
{
/** [items, ...] from one draw per item of shape [1, ...]. */
template <typename TDraw>
at::Tensor
PerItem(at::IntArrayRef shape, int64_t items, const c10::Device & device, TDraw && draw)
{
  if (shape.empty() || shape[0] != items)
  {
    throw std::logic_error("random draws per item: expected " + std::to_string(items) + " items");
  }
  std::vector<int64_t> itemShape = shape.vec();
  itemShape[0] = 1;
  std::vector<at::Tensor> parts;
  for (int64_t i = 0; i < items; ++i)
  {
    parts.push_back(draw(itemShape, static_cast<size_t>(i)));
  }
  return torch::cat(parts, 0).to(device);
}
} // namespace

at::Tensor
ItemGenerators::Normal(at::IntArrayRef shape, const c10::Device & device)
{
  return PerItem(shape, Size(), device, [this](const std::vector<int64_t> & itemShape, size_t i) {
    return torch::randn(itemShape, m_Generators[i], torch::kFloat32);
  });
}

at::Tensor
ItemGenerators::Uniform(at::IntArrayRef shape, const c10::Device & device)
{
  return PerItem(shape, Size(), device, [this](const std::vector<int64_t> & itemShape, size_t i) {
    return torch::rand(itemShape, m_Generators[i], torch::kFloat32);
  });
}

at::Tensor
ItemGenerators::Integers(int64_t high, const c10::Device & device)
{
  return PerItem({ Size() }, Size(), device, [this, high](const std::vector<int64_t> & itemShape, size_t i) {
    return torch::randint(high, itemShape, m_Generators[i], torch::kLong);
  });
}

at::Tensor
SeededNoise(const std::vector<int64_t> & shape, uint64_t seed, const c10::Device & device)
{
  at::Generator generator = NewGenerator(seed);
  return Noise(shape, generator, device);
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

void
CompleteSourceScales(const ModelConfig & config, const SourceVolumes & sources, std::map<std::string, double> & scales)
{
  for (const auto & [name, volume] : sources)
  {
    if (scales.count(name) == 0)
    {
      scales[name] = config.Normalization.ComputeScale(volume);
    }
  }
}

Model::Impl::Impl(const ModelConfig & config, const c10::Device & device, std::optional<uint64_t> initialSeed)
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
    if (Config.IsUnified())
    {
      TargetEmbedding =
        nn::TargetEmbedding(static_cast<int64_t>(Config.Targets.size()), static_cast<int64_t>(n.RepresentationDim));
    }
  }
  else if (Config.ModelKind == "unet")
  {
    UNet = nn::CrossConditionedUNet(dimension, SourceChannels(), 0, n); // no guidance: a plain UNet regressor
  }
  else if (Config.IsSegmenter())
  {
    // The same UNet with one output channel per label: scores whose softmax is each label's probability.
    UNet = nn::CrossConditionedUNet(dimension, SourceChannels(), 0, n, SegmentationClasses);
  }
  else
  {
    // ddim: the same UNet over [noisy target, sources], conditioned on the timestep instead of z.
    UNet = nn::CrossConditionedUNet(dimension, 1 + SourceChannels(), n.RepresentationDim, n);
    TimeEmbedding = nn::TimeEmbedding(n.RepresentationDim);
  }
  Schedule = std::make_unique<DiffusionSchedule>(Config.Diffusion);
  std::optional<at::Generator> generator;
  if (initialSeed)
  {
    generator = NewGenerator(*initialSeed);
  }
  for (auto & [name, network] : Networks())
  {
    if (generator)
    {
      nn::InitializeParameters(*network, *generator); // on the CPU, before the move: the same weights on any device
    }
    network->to(Device);
  }
  SetTraining(false);
}

double
Model::Impl::ParameterCount(const ModelConfig & config)
{
  // The networks the constructor above builds, kind by kind.
  const int             dimension = static_cast<int>(config.Dimension);
  const NetworkConfig & n = config.Network;
  const double          sources = 2.0 * static_cast<double>(config.Sources.size());
  if (config.ModelKind == "cdm")
  {
    return nn::ImageEncoderParameters(dimension, 1, n) +
           nn::FeatureDecoderParameters(dimension, static_cast<double>(nn::ImageEncoderFeatureChannels(n)), n) +
           nn::ImageEncoderParameters(dimension, sources, n) + nn::DenoiserParameters(n) +
           nn::CrossConditionedUNetParameters(dimension, sources, n.RepresentationDim, n) +
           nn::TargetEmbeddingParameters(static_cast<double>(config.Targets.size()), n.RepresentationDim);
  }
  if (config.ModelKind == "unet")
  {
    return nn::CrossConditionedUNetParameters(dimension, sources, 0, n);
  }
  if (config.IsSegmenter())
  {
    return nn::CrossConditionedUNetParameters(dimension, sources, 0, n, SegmentationClasses);
  }
  return nn::CrossConditionedUNetParameters(dimension, 1 + sources, n.RepresentationDim, n) +
         nn::TimeEmbeddingParameters(n.RepresentationDim);
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
  add("target_embedding", TargetEmbedding ? TargetEmbedding.get() : nullptr);
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
Model::Impl::SourceWindow(const SourceVolumes &                 sources,
                          const std::map<std::string, double> & scales,
                          const Region &                        window) const
{
  const int64_t sourceCount = static_cast<int64_t>(Config.Sources.size());
  at::Tensor    input = torch::empty({ 2 * sourceCount, window.Size[2], window.Size[1], window.Size[0] });
  for (int64_t i = 0; i < sourceCount; ++i)
  {
    const auto found = sources.find(Config.Sources[static_cast<size_t>(i)]);
    at::Tensor image = input[2 * i];
    if (found == sources.end())
    {
      image.zero_();
      input[2 * i + 1].zero_();
      continue;
    }
    const Volume & volume = found->second;
    image.copy_(torch::from_blob(const_cast<float *>(volume.Data()),
                                 { volume.Size[2], volume.Size[1], volume.Size[0] },
                                 torch::kFloat32)
                  .narrow(0, window.Index[2], window.Size[2])
                  .narrow(1, window.Index[1], window.Size[1])
                  .narrow(2, window.Index[0], window.Size[0]));
    Config.Normalization.Apply(image.data_ptr<float>(), static_cast<size_t>(image.numel()), scales.at(found->first));
    input[2 * i + 1].fill_(1.0);
  }
  return input;
}

at::Tensor
Model::Impl::SourceSlab(const SourceVolumes &                 sources,
                        const std::map<std::string, double> & scales,
                        Region                                window,
                        int64_t                               first,
                        int64_t                               end,
                        int64_t                               depth,
                        int64_t                               padY,
                        int64_t                               padX) const
{
  const int64_t imageEnd = std::min(end, depth);
  if (imageEnd <= first)
  {
    return torch::zeros({ 1, SourceChannels(), end - first, window.Size[1] + padY, window.Size[0] + padX });
  }
  window.Index[2] = first;
  window.Size[2] = imageEnd - first;
  return torch::constant_pad_nd(
    ToNetworkLayout(SourceWindow(sources, scales, window)), { 0, padX, 0, padY, 0, end - imageEnd }, 0.0);
}

int64_t
Model::Impl::SlicesPerCall(const SynthesisOptions & options, const std::array<int64_t, 3> & imageSize) const
{
  if (options.SlicesPerBatch > 0)
  {
    return options.SlicesPerBatch;
  }
  // A voxel budget rather than a slice count: 16 slices of 128x128, 4 of 240x240 (the C-UNet's activations of a
  // call scale with its voxels; more slices per call buy no speed on a CPU).
  int64_t sliceVoxels = 1;
  for (int a = 0; a < 3; ++a)
  {
    sliceVoxels *= a == Config.SliceAxis ? 1 : std::max<int64_t>(1, imageSize[a]);
  }
  return std::max<int64_t>(1, (options.VoxelsPerCall > 0 ? options.VoxelsPerCall : int64_t{ 1 } << 16) / sliceVoxels);
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
Model::Impl::TargetIndices(const std::string & target, int64_t count) const
{
  const int index = Config.TargetIndex(target);
  if (index < 0)
  {
    throw InputError("target '" + target + "' is not one this model synthesizes");
  }
  return torch::full({ count }, index, torch::TensorOptions(torch::kLong).device(Device));
}

at::Tensor
Model::Impl::ConditionFor(const at::Tensor & c, const at::Tensor & targetIndex) const
{
  return TargetEmbedding ? TargetEmbedding->Condition(c, targetIndex) : c;
}

at::Tensor
Model::Impl::GuidanceFor(const at::Tensor & z, const at::Tensor & targetIndex) const
{
  return TargetEmbedding ? TargetEmbedding->Guidance(z, targetIndex) : z;
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
Model::Impl::EncodeSourceVolume(SourceAccess &                        sources,
                                const std::map<std::string, double> & scales,
                                int64_t                               voxelsPerCall) const
{
  // The whole-volume encoder pads z, y and x to the alignment and averages every feature cell of the padded volume.
  // Streamed along z slab by slab (each plane once; the encoder's layers keep the planes they still need), the
  // feature planes are summed as they come.
  const std::array<int64_t, 3> & size = sources.ImageSize();
  const int64_t                  alignment = int64_t{ 1 } << Config.Network.EncoderLevels;
  const auto                     alignUp = [&](int64_t v) { return (v + alignment - 1) / alignment * alignment; };
  const int64_t                  paddedDepth = alignUp(size[2]);
  const int64_t                  padY = alignUp(size[1]) - size[1];
  const int64_t                  padX = alignUp(size[0]) - size[0];
  const int64_t                  budget = voxelsPerCall > 0 ? voxelsPerCall : DefaultVoxelsPerSlab;
  const int64_t                  slab = std::max<int64_t>(1, budget / (alignUp(size[0]) * alignUp(size[1])));
  nn::EncoderStreamState         state = SourceEncoder->NewStreamState();
  at::Tensor                     featureSum;
  int64_t                        cells = 0;
  for (int64_t z0 = 0; z0 < paddedDepth; z0 += slab)
  {
    const int64_t z1 = std::min(paddedDepth, z0 + slab);
    at::Tensor    input;
    if (z0 < size[2])
    {
      Region window;
      window.Size = size;
      window.Index[2] = z0;
      window.Size[2] = std::min(z1, size[2]) - z0;
      Region                local;
      const SourceVolumes & held = sources.Hold(window, 2, local);
      const int64_t         offset = window.Index[2] - local.Index[2]; // where the held volumes start along z
      input = SourceSlab(held, scales, local, z0 - offset, z1 - offset, size[2] - offset, padY, padX);
    }
    else
    {
      input = torch::zeros({ 1, SourceChannels(), z1 - z0, size[1] + padY, size[0] + padX }); // padding planes
    }
    const nn::PlaneRun features = SourceEncoder->FeaturesPlanes({ input.to(Device), z0, z1 == paddedDepth }, state);
    if (features.Count() > 0)
    {
      const at::Tensor sum = features.Values.sum({ 2, 3, 4 }, false, torch::kFloat32);
      featureSum = featureSum.defined() ? featureSum + sum : sum;
      cells += features.Values.size(2) * features.Values.size(3) * features.Values.size(4);
    }
  }
  return SourceEncoder->Represent(featureSum / static_cast<double>(cells));
}

at::Tensor
Model::Impl::EncodeSourceSlices(SourceAccess &                        sources,
                                const std::map<std::string, double> & scales,
                                const SynthesisOptions &              options) const
{
  const std::array<int64_t, 3> & size = sources.ImageSize();
  const int                      axis = static_cast<int>(Config.SliceAxis);
  const int64_t                  slices = size[axis];
  const int64_t                  perCall = SlicesPerCall(options, size);
  std::vector<at::Tensor>        conditions;
  for (int64_t start = 0; start < slices; start += perCall)
  {
    Region window;
    window.Size = size;
    window.Index[axis] = start;
    window.Size[axis] = std::min(perCall, slices - start);
    Region                local;
    const SourceVolumes & held = sources.Hold(window, axis, local);
    conditions.push_back(EncodeSources(ToNetworkLayout(SourceWindow(held, scales, local)).to(Device)));
  }
  return torch::cat(conditions, 0);
}

int
StreamedAxis(const std::array<int64_t, 3> & imageSize)
{
  return imageSize[2] > 1 ? 2 : 1;
}

SourceAccess::SourceAccess(const SourceVolumes & whole)
    : m_Whole(&whole)
    , m_ImageSize(whole.begin()->second.Size)
{}

SourceAccess::SourceAccess(SourceWindowReader read, const std::array<int64_t, 3> & imageSize, int64_t voxelsPerRead)
    : m_Read(std::move(read))
    , m_ImageSize(imageSize)
    , m_VoxelsPerRead(voxelsPerRead)
{}

int64_t
SourceAccess::PlanesPerRead(int axis) const
{
  if (m_Whole)
  {
    return m_ImageSize[axis];
  }
  const int64_t planeVoxels =
    m_ImageSize[0] * m_ImageSize[1] * m_ImageSize[2] / std::max<int64_t>(1, m_ImageSize[axis]);
  return std::clamp<int64_t>(m_VoxelsPerRead / std::max<int64_t>(1, planeVoxels), 1, m_ImageSize[axis]);
}

const SourceVolumes &
SourceAccess::Hold(const Region & window, int axis, Region & local)
{
  local = window;
  if (m_Whole)
  {
    return *m_Whole;
  }
  const auto inside = [](const Region & inner, const Region & outer) {
    for (int a = 0; a < 3; ++a)
    {
      if (inner.Index[a] < outer.Index[a] || inner.Index[a] + inner.Size[a] > outer.Index[a] + outer.Size[a])
      {
        return false;
      }
    }
    return true;
  };
  if (!m_HeldRegion || !inside(window, *m_HeldRegion))
  {
    Region read = window;
    read.Size[axis] = std::max(window.Size[axis], PlanesPerRead(axis));
    read.Size[axis] = std::min(read.Size[axis], m_ImageSize[axis] - read.Index[axis]);
    m_Held.clear(); // the last window goes before the next is read: one window in memory at a time
    m_HeldRegion.reset();
    m_Held = m_Read(read);
    m_HeldRegion = read;
  }
  for (int a = 0; a < 3; ++a)
  {
    local.Index[a] = window.Index[a] - m_HeldRegion->Index[a];
  }
  return m_Held;
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
Model::Impl::ReconstructMasked(const at::Tensor & target, ItemGenerators & generators) const
{
  const int64_t        alignment = int64_t{ 1 } << Config.Network.EncoderLevels;
  const at::Tensor     padded = PadToMultiple(target, alignment);
  const int64_t        patch = Config.Network.MaskPatchSize;
  std::vector<int64_t> cells{ padded.size(0), 1 };
  for (int64_t d = 2; d < padded.dim(); ++d)
  {
    cells.push_back((padded.size(d) + patch - 1) / patch);
  }
  at::Tensor mask = (generators.Uniform(cells, padded.device()) < Config.Network.MaskRatio).to(torch::kFloat32);
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

at::Tensor
MostProbableLabels(const at::Tensor & scores)
{
  return scores.argmax(1, true).to(torch::kFloat32);
}

} // namespace cdm
