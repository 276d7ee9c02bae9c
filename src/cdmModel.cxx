/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#include "cdmModel.h"
#include "cdmError.h"
#include "cdmModelImpl.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

namespace cdm
{

// ---------------------------------------------------------------------------------------------------------------
// Devices and threads

bool
CudaAvailable()
{
  return torch::cuda::is_available();
}

std::string
ResolveDevice(const std::string & requested)
{
  if (requested == "auto" || requested.empty())
  {
    return CudaAvailable() ? "cuda:0" : "cpu";
  }
  if (requested == "cpu")
  {
    return "cpu";
  }
  if (requested.rfind("cuda", 0) == 0)
  {
    if (!CudaAvailable())
    {
      throw InputError("device '" + requested +
                       "' is not available: LibTorch sees no CUDA device; expected auto or cpu");
    }
    int index = 0;
    if (requested.size() > 4)
    {
      if (requested[4] != ':' || requested.size() == 5 ||
          requested.find_first_not_of("0123456789", 5) != std::string::npos)
      {
        throw InputError("device '" + requested + "' is not understood; expected auto, cpu, cuda or cuda:N");
      }
      index = std::stoi(requested.substr(5));
    }
    if (index >= static_cast<int>(torch::cuda::device_count()))
    {
      throw InputError("device '" + requested + "' is not available: " + std::to_string(torch::cuda::device_count()) +
                       " CUDA device(s) present");
    }
    return "cuda:" + std::to_string(index);
  }
  throw InputError("device '" + requested + "' is not understood; expected auto, cpu, cuda or cuda:N");
}

c10::Device
ToTorchDevice(const std::string & resolved)
{
  return c10::Device(resolved);
}

void
SetNumberOfThreads(int threads)
{
  if (threads > 0)
  {
    torch::set_num_threads(threads);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Tensor helpers shared by training and inference

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

// ---------------------------------------------------------------------------------------------------------------
// Model::Impl

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
  const auto denoise = [&](const at::Tensor & zt, const at::Tensor & t) { return Denoiser->forward(zt, condition, t); };
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
  const auto   denoise = [&](const at::Tensor & xt, const at::Tensor & t) {
    const int        step = static_cast<int>(std::lround(t[0].item<double>() * Schedule->TrainSteps()));
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

// ---------------------------------------------------------------------------------------------------------------
// Model

Model::Model(std::shared_ptr<Impl> impl)
    : m_Impl(std::move(impl))
{}

Model
Model::Create(const ModelConfig & config, uint64_t seed, const std::string & device)
{
  torch::manual_seed(seed);
  return Model(std::make_shared<Impl>(config, ToTorchDevice(ResolveDevice(device))));
}

Model
Model::Load(const std::string & path, const std::string & device)
{
  safetensors::Header       header;
  safetensors::NamedTensors tensors = safetensors::Read(path, &header);
  const auto                found = header.Metadata.find("cdm");
  if (found == header.Metadata.end())
  {
    throw ModelFileError("model file '" + path + "': the header has no 'cdm' configuration");
  }
  ModelConfig config;
  try
  {
    config = ModelConfig::FromJson(found->second);
  }
  catch (const ModelFileError & e)
  {
    throw ModelFileError("model file '" + path + "': " + e.what());
  }
  auto impl = std::make_shared<Impl>(config, ToTorchDevice(ResolveDevice(device)));
  impl->AssignParameters(tensors, path);
  return Model(impl);
}

void
Model::Save(const std::string & path) const
{
  safetensors::Write(path, { { "cdm", m_Impl->Config.ToJson() }, { "format", "itk-cdm" } }, m_Impl->NamedParameters());
}

ModelFileInfo
ReadModelFileInfo(const std::string & path)
{
  const safetensors::Header header = safetensors::ReadHeader(path);
  const auto                found = header.Metadata.find("cdm");
  if (found == header.Metadata.end())
  {
    throw ModelFileError("model file '" + path + "': the header has no 'cdm' configuration");
  }
  ModelFileInfo info;
  try
  {
    info.Config = ModelConfig::FromJson(found->second);
  }
  catch (const ModelFileError & e)
  {
    throw ModelFileError("model file '" + path + "': " + e.what());
  }
  info.FileBytes = static_cast<int64_t>(header.FileBytes);
  info.Tensors = static_cast<int64_t>(header.Entries.size());
  for (const auto & entry : header.Entries)
  {
    info.Parameters += static_cast<int64_t>((entry.End - entry.Begin) / sizeof(float));
  }
  return info;
}

const ModelConfig &
Model::Config() const
{
  return m_Impl->Config;
}

std::string
Model::DeviceName() const
{
  return m_Impl->Device.str();
}

int64_t
Model::NumberOfParameters() const
{
  int64_t count = 0;
  for (const auto & [name, tensor] : m_Impl->NamedParameters())
  {
    count += tensor.numel();
  }
  return count;
}

void
Model::CheckSources(const SourceVolumes & sources) const
{
  const ModelConfig & config = m_Impl->Config;
  std::string         expected;
  for (const auto & name : config.Sources)
  {
    expected += (expected.empty() ? "" : ", ") + name;
  }
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
  if (!config.SourcesOptional)
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

namespace
{
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
} // namespace

Representation
Model::Encode(const Volume & target) const
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
  std::vector<float> normalised = target.Voxels;
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
  const Representation oracle = Encode(*reference);
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
  const auto          normalised = NormaliseSources(config, sources, representation.SourceScales);
  const Volume &      first = sources.begin()->second;
  if (config.ModelKind != "cdm")
  {
    // The baselines have no representation: only the sources' normalisation travels to the synthesis.
    representation.Cells = config.Dimension == 2 ? first.Size[config.SliceAxis] : 1;
    representation.Dim = 0;
    representation.Samples = options.Samples;
    return representation;
  }
  const at::Tensor        batch = impl.ToNetworkLayout(impl.SourceTensor(Pointers(normalised), first.Size));
  const int64_t           perCall = std::max(1, options.SlicesPerBatch);
  std::vector<at::Tensor> conditions;
  for (int64_t start = 0; start < batch.size(0); start += perCall)
  {
    const int64_t count = std::min(perCall, batch.size(0) - start);
    conditions.push_back(impl.EncodeSources(batch.narrow(0, start, count).to(impl.Device)));
  }
  const at::Tensor condition = torch::cat(conditions, 0);
  const double     eta = options.Eta < 0.0 ? config.Diffusion.Eta : options.Eta;
  const int64_t    d = config.Network.RepresentationDim;
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

namespace
{
/** The network window of an output range [begin, end) on an axis of `extent` voxels: padded by the halo, aligned;
 *  the end may pass the image (the part beyond it is zero padding up to the aligned extent). */
std::pair<int64_t, int64_t>
NetworkWindow(int64_t begin, int64_t end, int64_t extent, int64_t halo, int64_t alignment)
{
  const auto alignDown = [&](int64_t v) { return v / alignment * alignment; };
  const auto alignUp = [&](int64_t v) { return (v + alignment - 1) / alignment * alignment; };
  return { std::max<int64_t>(0, alignDown(begin - halo)), std::min(alignUp(extent), alignUp(end + halo)) };
}
} // namespace

Region
Model::RequiredSourceRegion(const Region & output, const std::array<int64_t, 3> & imageSize) const
{
  const ModelConfig & config = m_Impl->Config;
  Region              required = output;
  for (int a = 0; a < 3; ++a)
  {
    if ((config.Dimension == 2 && a == config.SliceAxis) || imageSize[a] <= 1)
    {
      continue;
    }
    if (config.ModelKind == "ddim")
    {
      // Every reverse step widens the receptive field: the image-space baseline reads whole slices / volumes.
      required.Index[a] = 0;
      required.Size[a] = imageSize[a];
      continue;
    }
    const auto window = NetworkWindow(output.Index[a],
                                      output.Index[a] + output.Size[a],
                                      imageSize[a],
                                      config.UNetReceptiveRadius(),
                                      config.UNetAlignment());
    required.Index[a] = window.first;
    required.Size[a] = std::min(window.second, imageSize[a]) - window.first;
  }
  return required;
}

SynthesisResult
Model::SynthesizeRegion(const SourceVolumes &    sources,
                        const Representation &   representation,
                        const Region &           requested,
                        const SynthesisOptions & options,
                        const ProgressCallback & progress,
                        const SourceExtent *     extent) const
{
  CheckSources(sources);
  c10::InferenceMode           guard;
  const Impl &                 impl = *m_Impl;
  const ModelConfig &          config = impl.Config;
  const Volume &               first = sources.begin()->second;
  const std::array<int64_t, 3> imageSize = extent ? extent->ImageSize : first.Size;
  const std::array<int64_t, 3> offset = extent ? extent->Buffered.Index : std::array<int64_t, 3>{ 0, 0, 0 };
  if (extent && extent->Buffered.Size != first.Size)
  {
    throw InputError("sources hold " + std::to_string(first.NumberOfVoxels()) +
                     " voxels but their extent says another buffered size");
  }

  Region region = requested;
  if (region.Size[0] == 0 && region.Size[1] == 0 && region.Size[2] == 0)
  {
    region.Size = imageSize;
  }
  const Region required = RequiredSourceRegion(region, imageSize);
  for (int a = 0; a < 3; ++a)
  {
    if (region.Index[a] < 0 || region.Size[a] < 1 || region.Index[a] + region.Size[a] > imageSize[a])
    {
      throw InputError("requested region (index " + std::to_string(region.Index[a]) + ", size " +
                       std::to_string(region.Size[a]) + " on axis " + std::to_string(a) +
                       ") lies outside the image of size " + std::to_string(imageSize[a]));
    }
    if (required.Index[a] < offset[a] || required.Index[a] + required.Size[a] > offset[a] + first.Size[a])
    {
      throw InputError("the sources cover voxels " + std::to_string(offset[a]) + ".." +
                       std::to_string(offset[a] + first.Size[a] - 1) + " on axis " + std::to_string(a) +
                       " but the region needs " + std::to_string(required.Index[a]) + ".." +
                       std::to_string(required.Index[a] + required.Size[a] - 1));
    }
  }
  if (config.ModelKind == "ddim" && required.Size != region.Size)
  {
    // Synthesise whole slices (volumes), then keep the requested part.
    const SynthesisResult whole = SynthesizeRegion(sources, representation, required, options, progress, extent);
    Region                inside = region;
    for (int a = 0; a < 3; ++a)
    {
      inside.Index[a] -= required.Index[a];
    }
    SynthesisResult result;
    result.Image = CropVolume(whole.Image, inside.Index, inside.Size);
    if (!whole.Uncertainty.Voxels.empty())
    {
      result.Uncertainty = CropVolume(whole.Uncertainty, inside.Index, inside.Size);
    }
    return result;
  }
  // A missing scale is measured on the sources given, which is exact only when they are the whole image.
  std::map<std::string, double> scales = representation.SourceScales;
  const bool wholeImage = !extent || (extent->Buffered.Index == std::array<int64_t, 3>{ { 0, 0, 0 } } &&
                                      extent->Buffered.Size == extent->ImageSize);
  for (const auto & [name, volume] : sources)
  {
    if (!wholeImage && scales.count(name) == 0)
    {
      throw InputError("the representation carries no normalisation scale for source '" + name +
                       "' and only part of the image is given; expected a representation from SampleRepresentation "
                       "on the whole image, or the whole sources");
    }
  }
  const auto       normalised = NormaliseSources(config, sources, scales);
  const at::Tensor layout = impl.ToNetworkLayout(impl.SourceTensor(Pointers(normalised), first.Size));
  const int64_t    cells = config.Dimension == 2 ? imageSize[config.SliceAxis] : 1;
  const int        expectedDim = config.ModelKind == "cdm" ? config.Network.RepresentationDim : 0;
  if (representation.Cells != cells || representation.Dim != expectedDim ||
      static_cast<int64_t>(representation.Values.size()) !=
        static_cast<int64_t>(representation.Samples) * cells * representation.Dim)
  {
    throw InputError("representation has " + std::to_string(representation.Cells) + " cell(s) of length " +
                     std::to_string(representation.Dim) + "; expected " + std::to_string(cells) + " of length " +
                     std::to_string(expectedDim) + " for these sources");
  }
  const int        samples = representation.Samples;
  const at::Tensor zAll = torch::from_blob(
    const_cast<float *>(representation.Values.data()), { samples, cells, representation.Dim }, torch::kFloat32);

  // The region in network layout: batch rows [b0, b0 + nb) and spatial ranges per layout axis (image indices);
  // `shift` maps an image index to the index in the sources' tensor.
  const int64_t        spatialAxes = layout.dim() - 2;
  int64_t              b0 = 0;
  int64_t              nb = 1;
  int64_t              rowShift = 0;
  std::vector<int64_t> start(static_cast<size_t>(spatialAxes)), extentRange(static_cast<size_t>(spatialAxes)),
    tile(static_cast<size_t>(spatialAxes)), shift(static_cast<size_t>(spatialAxes)),
    fullExtent(static_cast<size_t>(spatialAxes));
  for (int a = 0; a < 3; ++a)
  {
    const int64_t axis = impl.LayoutAxis(a);
    if (axis == 0)
    {
      b0 = region.Index[a];
      nb = region.Size[a];
      rowShift = offset[a];
    }
    else if (axis >= 2)
    {
      start[axis - 2] = region.Index[a];
      extentRange[axis - 2] = region.Size[a];
      tile[axis - 2] = options.TileSize[a] > 0 ? options.TileSize[a] : region.Size[a];
      shift[axis - 2] = offset[a];
      fullExtent[axis - 2] = imageSize[a];
    }
  }

  const int64_t alignment = config.UNetAlignment();
  const int64_t halo = config.UNetReceptiveRadius();

  std::vector<int64_t> outputShape{ nb, 1 };
  outputShape.insert(outputShape.end(), extentRange.begin(), extentRange.end());
  at::Tensor mean = torch::zeros(outputShape);
  at::Tensor deviation = torch::zeros(outputShape);

  // Tiles: every combination of per-axis tile starts.
  std::vector<std::vector<int64_t>> tileStarts(static_cast<size_t>(spatialAxes));
  int64_t                           totalTiles = 1;
  for (int64_t s = 0; s < spatialAxes; ++s)
  {
    for (int64_t p = 0; p < extentRange[s]; p += tile[s])
    {
      tileStarts[s].push_back(p);
    }
    totalTiles *= static_cast<int64_t>(tileStarts[s].size());
  }
  const int64_t perCall = config.Dimension == 3 ? 1 : std::max(1, options.SlicesPerBatch);
  const int64_t batches = (nb + perCall - 1) / perCall;
  int64_t       done = 0;
  for (int64_t batchStart = 0; batchStart < nb; batchStart += perCall)
  {
    const int64_t    count = std::min(perCall, nb - batchStart);
    const at::Tensor rows = layout.narrow(0, b0 - rowShift + batchStart, count);
    const at::Tensor z =
      zAll.narrow(1, b0 + batchStart, count).reshape({ samples * count, representation.Dim }).to(impl.Device);
    for (int64_t t = 0; t < totalTiles; ++t)
    {
      at::Tensor           window = rows;
      at::Tensor           outMean = mean.narrow(0, batchStart, count);
      at::Tensor           outDeviation = deviation.narrow(0, batchStart, count);
      std::vector<int64_t> cropOffset, cropSize, pads(static_cast<size_t>(2 * spatialAxes));
      int64_t              remainder = t;
      for (int64_t s = 0; s < spatialAxes; ++s)
      {
        const auto &  starts = tileStarts[s];
        const int64_t local = starts[remainder % static_cast<int64_t>(starts.size())];
        remainder /= static_cast<int64_t>(starts.size());
        const int64_t a = start[s] + local;                              // tile start in the image
        const int64_t b = a + std::min(tile[s], extentRange[s] - local); // tile end
        const int64_t size = fullExtent[s];
        const auto [w0, w1] = NetworkWindow(a, b, size, halo, alignment);
        window = window.narrow(s + 2, w0 - shift[s], std::min(w1, size) - w0);
        // constant_pad_nd lists the last axis first: high-end zero padding up to the aligned window.
        pads[static_cast<size_t>(2 * (spatialAxes - 1 - s) + 1)] = w1 - std::min(w1, size);
        cropOffset.push_back(a - w0);
        cropSize.push_back(b - a);
        outMean = outMean.narrow(s + 2, local, b - a);
        outDeviation = outDeviation.narrow(s + 2, local, b - a);
      }
      at::Tensor           input = torch::constant_pad_nd(window, pads, 0.0).to(impl.Device);
      std::vector<int64_t> repeats(static_cast<size_t>(input.dim()), 1);
      repeats[0] = samples;
      const at::Tensor batchInput = samples > 1 ? input.repeat(repeats) : input;
      at::Tensor       prediction;
      if (config.ModelKind == "ddim")
      {
        // Starting noise per (seed, sample, slice): the same whatever the batching.
        const uint64_t base = options.Seed * 1000003ull;
        const auto     rowNoise = [&](uint64_t salt) {
          std::vector<at::Tensor> rows;
          std::vector<int64_t>    shape{ 1, 1 };
          for (int64_t d = 2; d < batchInput.dim(); ++d)
          {
            shape.push_back(batchInput.size(d));
          }
          for (int k = 0; k < samples; ++k)
          {
            for (int64_t r = 0; r < count; ++r)
            {
              const auto row = static_cast<uint64_t>(b0 + batchStart + r);
              rows.push_back(
                SeededNoise(shape, base + static_cast<uint64_t>(k) * 7919ull + row * 104729ull + salt, impl.Device));
            }
          }
          return torch::cat(rows, 0);
        };
        uint64_t   step = 0;
        const auto stepNoise = [&]() { return rowNoise(++step * 15485863ull); };
        prediction =
          impl.SampleImage(batchInput, rowNoise(0), options.Eta < 0.0 ? config.Diffusion.Eta : options.Eta, stepNoise);
      }
      else
      {
        prediction = impl.SynthesizeBatch(batchInput, config.ModelKind == "cdm" ? z : at::Tensor());
      }
      for (int64_t s = 0; s < spatialAxes; ++s)
      {
        prediction = prediction.narrow(s + 2, cropOffset[s], cropSize[s]);
      }
      std::vector<int64_t> perSample{ samples, count };
      for (int64_t d = 1; d < prediction.dim(); ++d)
      {
        perSample.push_back(prediction.size(d));
      }
      prediction = prediction.reshape(perSample).to(torch::kCPU);
      outMean.copy_(prediction.mean(0));
      if (samples > 1)
      {
        outDeviation.copy_(prediction.std(0, false));
      }
      ++done;
      if (progress)
      {
        progress(static_cast<double>(done) / static_cast<double>(totalTiles * batches), "C-UNet synthesis");
      }
    }
  }

  // Back to [Z, Y, X] of the region, in target intensity units.
  const auto toVolume = [&](const at::Tensor & values, const std::string & description, bool clampAtZero) {
    Volume volume = first.EmptyCopy(description);
    volume.Size = region.Size;
    for (int a = 0; a < 3; ++a)
    {
      // The region's origin moves with its index: origin + direction * (index * spacing).
      for (int r = 0; r < 3; ++r)
      {
        volume.Origin[r] += first.Direction[3 * r + a] * (region.Index[a] - offset[a]) * first.Spacing[a];
      }
    }
    at::Tensor zyx = impl.FromNetworkLayout(values).squeeze(0) * config.TargetScale;
    if (clampAtZero)
    {
      zyx = zyx.clamp_min(0.0);
    }
    zyx = zyx.contiguous();
    volume.Voxels.assign(zyx.data_ptr<float>(), zyx.data_ptr<float>() + zyx.numel());
    return volume;
  };
  SynthesisResult result;
  result.Image = toVolume(mean, "synthesized " + config.Target, true);
  if (samples > 1)
  {
    result.Uncertainty = toVolume(deviation, "uncertainty of " + config.Target, false);
  }
  return result;
}

SynthesisResult
Model::Synthesize(const SourceVolumes &    sources,
                  const SynthesisOptions & options,
                  const ProgressCallback & progress) const
{
  if (progress)
  {
    progress(0.0, "source encoder and MDN sampling");
  }
  const Representation representation = SampleRepresentation(sources, options);
  const auto           synthesisProgress = [&](double fraction, const std::string & what) {
    if (progress)
    {
      progress(0.1 + 0.9 * fraction, what);
    }
  };
  return SynthesizeRegion(sources, representation, Region{}, options, synthesisProgress);
}

} // namespace cdm
