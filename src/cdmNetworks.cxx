/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#include "cdmNetworks.h"

#include <torch/torch.h>

#include <cmath>

namespace cdm
{
namespace nn
{

namespace
{
std::vector<int64_t>
Repeat(int64_t value, int dimension)
{
  return std::vector<int64_t>(static_cast<size_t>(dimension), value);
}

/** Channels of the encoder after its stem and after each downsampling (length EncoderLevels + 1). */
std::vector<int64_t>
EncoderChannelList(const NetworkConfig & config)
{
  std::vector<int64_t> channels{ config.EncoderChannels };
  for (int level = 0; level < config.EncoderLevels; ++level)
  {
    channels.push_back(std::min<int64_t>(channels.back() * 2, int64_t{ config.EncoderChannels } * 4));
  }
  return channels;
}

std::vector<int64_t>
SpatialDims(const torch::Tensor & x)
{
  std::vector<int64_t> dims;
  for (int64_t d = 2; d < x.dim(); ++d)
  {
    dims.push_back(d);
  }
  return dims;
}

/** Broadcasts a [B, C] tensor over the spatial axes of x. */
torch::Tensor
Broadcast(const torch::Tensor & values, const torch::Tensor & x)
{
  std::vector<int64_t> shape{ values.size(0), values.size(1) };
  shape.resize(static_cast<size_t>(x.dim()), 1);
  return values.view(shape);
}
} // namespace

torch::Tensor
Upsample2(const torch::Tensor & x)
{
  // Nearest-neighbour doubling in one kernel (the same values as repeating each voxel along every axis, which copied
  // the tensor once per axis and measured 1.2-2.5x slower).
  const std::vector<double> two(static_cast<size_t>(x.dim() - 2), 2.0);
  return x.dim() == 4 ? torch::upsample_nearest2d(x, std::nullopt, two)
                      : torch::upsample_nearest3d(x, std::nullopt, two);
}

ConvImpl::ConvImpl(int dimension, int64_t inChannels, int64_t outChannels, int64_t kernel, int64_t stride)
    : m_Dimension(dimension)
    , m_Kernel(kernel)
    , m_Stride(stride)
{
  std::vector<int64_t> shape{ outChannels, inChannels };
  for (int d = 0; d < dimension; ++d)
  {
    shape.push_back(kernel);
  }
  m_Weight = register_parameter("weight", torch::zeros(shape));
  m_Bias = register_parameter("bias", torch::zeros({ outChannels }));
}

namespace
{
/** PyTorch's default start for convolutions and linear layers: kaiming_uniform_(a = sqrt(5)) on the weight, which is
 *  uniform in +-1/sqrt(fan-in), and the same bound on the bias. */
void
DrawDefaultInitialValues(torch::Tensor & weight, torch::Tensor & bias, at::Generator & generator)
{
  torch::NoGradGuard noGrad;
  const double       bound = 1.0 / std::sqrt(static_cast<double>(weight.numel() / weight.size(0)));
  weight.uniform_(-bound, bound, generator);
  bias.uniform_(-bound, bound, generator);
}
} // namespace

void
ConvImpl::Initialize(at::Generator & generator)
{
  DrawDefaultInitialValues(m_Weight, m_Bias, generator);
}

DenseImpl::DenseImpl(int64_t inFeatures, int64_t outFeatures, bool zeroInitialized)
    : m_ZeroInitialized(zeroInitialized)
{
  m_Weight = register_parameter("weight", torch::zeros({ outFeatures, inFeatures }));
  m_Bias = register_parameter("bias", torch::zeros({ outFeatures }));
}

torch::Tensor
DenseImpl::forward(const torch::Tensor & x)
{
  return torch::linear(x, m_Weight, m_Bias);
}

void
DenseImpl::Initialize(at::Generator & generator)
{
  if (m_ZeroInitialized)
  {
    torch::NoGradGuard noGrad;
    m_Weight.zero_();
    m_Bias.zero_();
    return;
  }
  DrawDefaultInitialValues(m_Weight, m_Bias, generator);
}

TargetEmbeddingImpl::TargetEmbeddingImpl(int64_t targets, int64_t dim)
{
  m_Condition = register_parameter("condition", torch::zeros({ targets, dim }));
  m_Guidance = register_parameter("guidance", torch::zeros({ targets, dim }));
}

torch::Tensor
TargetEmbeddingImpl::Condition(const torch::Tensor & values, const torch::Tensor & targetIndex)
{
  return values + m_Condition.index_select(0, targetIndex);
}

torch::Tensor
TargetEmbeddingImpl::Guidance(const torch::Tensor & z, const torch::Tensor & targetIndex)
{
  return z + m_Guidance.index_select(0, targetIndex);
}

void
TargetEmbeddingImpl::Initialize(at::Generator & generator)
{
  torch::NoGradGuard noGrad;
  const double       bound = 1.0 / std::sqrt(static_cast<double>(m_Condition.size(0))); // fan-in of a one-hot code
  m_Condition.uniform_(-bound, bound, generator);
  m_Guidance.uniform_(-bound, bound, generator);
}

void
InitializeParameters(torch::nn::Module & network, at::Generator & generator)
{
  for (const std::shared_ptr<torch::nn::Module> & module : network.modules())
  {
    if (auto * conv = dynamic_cast<ConvImpl *>(module.get()))
    {
      conv->Initialize(generator);
    }
    else if (auto * dense = dynamic_cast<DenseImpl *>(module.get()))
    {
      dense->Initialize(generator);
    }
    else if (auto * embedding = dynamic_cast<TargetEmbeddingImpl *>(module.get()))
    {
      embedding->Initialize(generator);
    }
  }
}

torch::Tensor
ConvImpl::forward(const torch::Tensor & x)
{
  // conv2d/conv3d rather than torch::convolution: the same kernels, and the operators that autocast runs in reduced
  // precision (SynthesisOptions::NetworkPrecision).
  const int64_t padding = m_Stride == 1 ? m_Kernel / 2 : 0;
  if (m_Dimension == 2)
  {
    return torch::conv2d(x, m_Weight, m_Bias, Repeat(m_Stride, 2), Repeat(padding, 2));
  }
  return torch::conv3d(x, m_Weight, m_Bias, Repeat(m_Stride, 3), Repeat(padding, 3));
}

ChannelNormImpl::ChannelNormImpl(int64_t channels)
{
  m_Weight = register_parameter("weight", torch::ones({ channels }));
  m_Bias = register_parameter("bias", torch::zeros({ channels }));
}

torch::Tensor
ChannelNormImpl::forward(const torch::Tensor & input)
{
  // Statistics in float32 also under reduced precision (as autocast does for PyTorch's own normalisations): a channel
  // variance in bf16 loses most of its digits.
  const torch::Tensor x = input.scalar_type() == torch::kFloat32 ? input : input.to(torch::kFloat32);
  const torch::Tensor weight = Broadcast(m_Weight.unsqueeze(0), x);
  const torch::Tensor bias = Broadcast(m_Bias.unsqueeze(0), x);
  if (!torch::GradMode::is_enabled())
  {
    // Inference: the same operations in place, so that one full-size tensor is alive instead of four (what bounds
    // the memory of a 3D volume or tile).
    torch::Tensor       centred = x - x.mean(1, true);
    const torch::Tensor inverse = centred.square().mean(1, true).add_(1e-6).rsqrt_();
    return centred.mul_(inverse).mul_(weight).add_(bias);
  }
  const torch::Tensor mean = x.mean(1, true);
  const torch::Tensor variance = (x - mean).pow(2).mean(1, true);
  const torch::Tensor normalised = (x - mean) * torch::rsqrt(variance + 1e-6);
  return normalised * weight + bias;
}

ResidualBlockImpl::ResidualBlockImpl(int dimension, int64_t inChannels, int64_t outChannels, int64_t conditionDim)
{
  m_Norm1 = register_module("norm1", ChannelNorm(inChannels));
  m_Conv1 = register_module("conv1", Conv(dimension, inChannels, outChannels, 3));
  m_Norm2 = register_module("norm2", ChannelNorm(outChannels));
  m_Conv2 = register_module("conv2", Conv(dimension, outChannels, outChannels, 3));
  if (inChannels != outChannels)
  {
    m_Skip = register_module("skip", Conv(dimension, inChannels, outChannels, 1));
  }
  if (conditionDim > 0)
  {
    // Zero-initialised so that an untrained Condition Embedding is the identity. (A small random start, which would
    // pass z a gradient from the first step, failed the tiny preset's training test: bench/EXPERIMENTS.md.)
    m_Film = register_module("film", Dense(conditionDim, 2 * outChannels, /*zeroInitialized=*/true));
  }
}

torch::Tensor
ResidualBlockImpl::forward(const torch::Tensor & x, const torch::Tensor & condition)
{
  // Without autograd every step after a convolution works in place (same values, fewer full-size tensors alive).
  const bool    inPlace = !torch::GradMode::is_enabled();
  torch::Tensor h = m_Norm1(x);
  h = m_Conv1(inPlace ? torch::silu_(h) : torch::silu(h));
  h = m_Norm2(h);
  if (m_Film)
  {
    const auto [gamma, beta] = Modulation(condition, h);
    h = inPlace ? h.mul_(gamma).add_(beta) : h * gamma + beta;
  }
  h = m_Conv2(inPlace ? torch::silu_(h) : torch::silu(h));
  const torch::Tensor shortcut = m_Skip ? m_Skip(x) : x;
  return inPlace ? h.add_(shortcut) : shortcut + h;
}

std::pair<torch::Tensor, torch::Tensor>
ResidualBlockImpl::Modulation(const torch::Tensor & condition, const torch::Tensor & like)
{
  const auto gammaBeta = m_Film(condition).chunk(2, 1);
  return { 1 + Broadcast(gammaBeta[0], like), Broadcast(gammaBeta[1], like) };
}

ImageEncoderImpl::ImageEncoderImpl(int dimension, int64_t inChannels, const NetworkConfig & config)
{
  const std::vector<int64_t> channels = EncoderChannelList(config);
  m_Stem = register_module("stem", Conv(dimension, inChannels, channels[0], 3));
  for (int level = 0; level < config.EncoderLevels; ++level)
  {
    for (int b = 0; b < config.EncoderBlocks; ++b)
    {
      m_Blocks.push_back(register_module("block_" + std::to_string(level) + "_" + std::to_string(b),
                                         ResidualBlock(dimension, channels[level], channels[level], 0)));
    }
    m_BlocksPerLevel.push_back(config.EncoderBlocks);
    m_Downsamplers.push_back(
      register_module("down_" + std::to_string(level), Conv(dimension, channels[level], channels[level + 1], 2, 2)));
  }
  m_FeatureChannels = channels.back();
  m_Project = register_module("project", Dense(m_FeatureChannels, config.RepresentationDim));
  m_Mix = register_module("mix", Dense(config.RepresentationDim, config.RepresentationDim));
}

std::pair<torch::Tensor, torch::Tensor>
ImageEncoderImpl::forward(const torch::Tensor & x)
{
  const torch::Tensor h = Features(x);
  return { h, Represent(h.mean(SpatialDims(h))) };
}

torch::Tensor
ImageEncoderImpl::Features(const torch::Tensor & x)
{
  torch::Tensor h = torch::leaky_relu(m_Stem(x), 0.1);
  size_t        block = 0;
  for (size_t level = 0; level < m_Downsamplers.size(); ++level)
  {
    for (int b = 0; b < m_BlocksPerLevel[level]; ++b)
    {
      h = m_Blocks[block++](h);
    }
    h = m_Downsamplers[level](h);
  }
  return h;
}

torch::Tensor
ImageEncoderImpl::Represent(const torch::Tensor & pooled)
{
  return m_Mix(torch::leaky_relu(m_Project(pooled), 0.1));
}

FeatureDecoderImpl::FeatureDecoderImpl(int dimension, int64_t featureChannels, const NetworkConfig & config)
{
  const std::vector<int64_t> channels = EncoderChannelList(config);
  const int64_t              d = config.RepresentationDim;
  m_Blocks.push_back(register_module("block_in", ResidualBlock(dimension, featureChannels, channels.back(), d)));
  for (int level = config.EncoderLevels - 1; level >= 0; --level)
  {
    m_Upsamplers.push_back(
      register_module("up_" + std::to_string(level), Conv(dimension, channels[level + 1], channels[level], 3)));
    m_Blocks.push_back(
      register_module("block_" + std::to_string(level), ResidualBlock(dimension, channels[level], channels[level], d)));
  }
  m_Out = register_module("out", Conv(dimension, channels[0], 1, 3));
}

torch::Tensor
FeatureDecoderImpl::forward(const torch::Tensor & features, const torch::Tensor & z)
{
  torch::Tensor h = m_Blocks[0](features, z);
  for (size_t i = 0; i < m_Upsamplers.size(); ++i)
  {
    h = m_Upsamplers[i](Upsample2(h));
    h = m_Blocks[i + 1](h, z);
  }
  return m_Out(torch::silu(h));
}

torch::Tensor
SinusoidalEmbedding(const torch::Tensor & t, int64_t dim)
{
  const int64_t       half = dim / 2;
  const torch::Tensor frequencies =
    torch::exp(-std::log(10000.0) * torch::arange(half, t.options()) / static_cast<double>(half));
  const torch::Tensor angles = (1000.0 * t).view({ -1, 1 }) * frequencies.view({ 1, -1 });
  return torch::cat({ torch::sin(angles), torch::cos(angles) }, 1);
}

TimeEmbeddingImpl::TimeEmbeddingImpl(int64_t dim)
{
  m_First = register_module("first", Dense(SinusoidDim, dim));
  m_Second = register_module("second", Dense(dim, dim));
}

torch::Tensor
TimeEmbeddingImpl::forward(const torch::Tensor & t)
{
  return m_Second(torch::silu(m_First(SinusoidalEmbedding(t, SinusoidDim))));
}

DenoiserImpl::DenoiserImpl(const NetworkConfig & config)
{
  const int64_t d = config.RepresentationDim;
  const int64_t width = config.DenoiserWidth;
  m_In = register_module("in", Dense(2 * d + EmbeddingDim, width));
  for (int b = 0; b < config.DenoiserBlocks; ++b)
  {
    m_First.push_back(register_module("block_" + std::to_string(b) + "_a", Dense(width, width)));
    m_Second.push_back(register_module("block_" + std::to_string(b) + "_b", Dense(width, width)));
  }
  m_Out = register_module("out", Dense(width, d));
}

torch::Tensor
DenoiserImpl::forward(const torch::Tensor & zt, const torch::Tensor & condition, const torch::Tensor & t)
{
  const torch::Tensor embedding = SinusoidalEmbedding(t, EmbeddingDim);
  torch::Tensor       h = torch::leaky_relu(m_In(torch::cat({ zt, condition, embedding }, 1)), 0.1);
  for (size_t b = 0; b < m_First.size(); ++b)
  {
    h = h + m_Second[b](torch::leaky_relu(m_First[b](h), 0.1));
  }
  return m_Out(h);
}

CrossConditionedUNetImpl::CrossConditionedUNetImpl(int                   dimension,
                                                   int64_t               inChannels,
                                                   int64_t               conditionDim,
                                                   const NetworkConfig & config,
                                                   int64_t               outChannels)
{
  const auto           levels = static_cast<int>(config.UNetMultipliers.size());
  std::vector<int64_t> channels;
  for (const int multiplier : config.UNetMultipliers)
  {
    channels.push_back(int64_t{ config.UNetChannels } * multiplier);
  }
  m_Stem = register_module("stem", Conv(dimension, inChannels, channels[0], 3));
  m_Down.resize(static_cast<size_t>(levels));
  for (int level = 0; level < levels; ++level)
  {
    for (int b = 0; b < config.UNetBlocks; ++b)
    {
      m_Down[level].push_back(
        register_module("down_" + std::to_string(level) + "_" + std::to_string(b),
                        ResidualBlock(dimension, channels[level], channels[level], conditionDim)));
    }
    if (level + 1 < levels)
    {
      m_Downsamplers.push_back(register_module("downsample_" + std::to_string(level),
                                               Conv(dimension, channels[level], channels[level + 1], 2, 2)));
    }
  }
  m_Middle = register_module("middle", ResidualBlock(dimension, channels.back(), channels.back(), conditionDim));
  m_Up.resize(static_cast<size_t>(levels > 1 ? levels - 1 : 0));
  for (int level = 0; level + 1 < levels; ++level)
  {
    m_UpConvs.push_back(
      register_module("upsample_" + std::to_string(level), Conv(dimension, channels[level + 1], channels[level], 3)));
    for (int b = 0; b < config.UNetBlocks; ++b)
    {
      const int64_t in = b == 0 ? 2 * channels[level] : channels[level];
      m_Up[level].push_back(register_module("up_" + std::to_string(level) + "_" + std::to_string(b),
                                            ResidualBlock(dimension, in, channels[level], conditionDim)));
    }
  }
  m_OutNorm = register_module("out_norm", ChannelNorm(channels[0]));
  m_Out = register_module("out", Conv(dimension, channels[0], outChannels, 3));
}

torch::Tensor
CrossConditionedUNetImpl::forward(const torch::Tensor & x, const torch::Tensor & z)
{
  std::vector<torch::Tensor> skips;
  torch::Tensor              h = m_Stem(x);
  for (size_t level = 0; level < m_Down.size(); ++level)
  {
    for (auto & block : m_Down[level])
    {
      h = block(h, z);
    }
    skips.push_back(h);
    if (level < m_Downsamplers.size())
    {
      h = m_Downsamplers[level](h);
    }
  }
  h = m_Middle(h, z);
  for (int level = static_cast<int>(m_Up.size()) - 1; level >= 0; --level)
  {
    h = m_UpConvs[level](Upsample2(h));
    h = torch::cat({ h, skips[level] }, 1);
    skips[level] = torch::Tensor(); // its memory is free once copied into the concatenation
    for (auto & block : m_Up[level])
    {
      h = block(h, z);
    }
  }
  return m_Out(torch::silu(m_OutNorm(h)));
}

namespace
{
double
LinearParameters(double in, double out)
{
  return in * out + out;
}
} // namespace

double
ConvParameters(int dimension, double inChannels, double outChannels, int64_t kernel)
{
  return inChannels * outChannels * std::pow(static_cast<double>(kernel), dimension) + outChannels;
}

double
ResidualBlockParameters(int dimension, double inChannels, double outChannels, double conditionDim)
{
  double count = 2 * inChannels + ConvParameters(dimension, inChannels, outChannels, 3) + 2 * outChannels +
                 ConvParameters(dimension, outChannels, outChannels, 3);
  if (inChannels != outChannels)
  {
    count += ConvParameters(dimension, inChannels, outChannels, 1);
  }
  if (conditionDim > 0)
  {
    count += LinearParameters(conditionDim, 2 * outChannels);
  }
  return count;
}

int64_t
ImageEncoderFeatureChannels(const NetworkConfig & config)
{
  return EncoderChannelList(config).back();
}

double
ImageEncoderParameters(int dimension, double inChannels, const NetworkConfig & config)
{
  const std::vector<int64_t> c = EncoderChannelList(config);
  double                     count = ConvParameters(dimension, inChannels, c[0], 3);
  for (int level = 0; level < config.EncoderLevels; ++level)
  {
    count += config.EncoderBlocks * ResidualBlockParameters(dimension, c[level], c[level], 0);
    count += ConvParameters(dimension, c[level], c[level + 1], 2);
  }
  return count + LinearParameters(c.back(), config.RepresentationDim) +
         LinearParameters(config.RepresentationDim, config.RepresentationDim);
}

double
FeatureDecoderParameters(int dimension, double featureChannels, const NetworkConfig & config)
{
  const std::vector<int64_t> c = EncoderChannelList(config);
  const double               d = config.RepresentationDim;
  double                     count = ResidualBlockParameters(dimension, featureChannels, c.back(), d);
  for (int level = config.EncoderLevels - 1; level >= 0; --level)
  {
    count +=
      ConvParameters(dimension, c[level + 1], c[level], 3) + ResidualBlockParameters(dimension, c[level], c[level], d);
  }
  return count + ConvParameters(dimension, c[0], 1, 3);
}

double
DenoiserParameters(const NetworkConfig & config)
{
  const double d = config.RepresentationDim;
  const double width = config.DenoiserWidth;
  return LinearParameters(2 * d + DenoiserImpl::EmbeddingDim, width) +
         config.DenoiserBlocks * 2 * LinearParameters(width, width) + LinearParameters(width, d);
}

double
TargetEmbeddingParameters(double targets, double dim)
{
  return 2.0 * targets * dim;
}

double
TimeEmbeddingParameters(double dim)
{
  return LinearParameters(TimeEmbeddingImpl::SinusoidDim, dim) + LinearParameters(dim, dim);
}

double
CrossConditionedUNetParameters(int                   dimension,
                               double                inChannels,
                               double                conditionDim,
                               const NetworkConfig & config,
                               double                outChannels)
{
  std::vector<double> c;
  for (const int multiplier : config.UNetMultipliers)
  {
    c.push_back(static_cast<double>(config.UNetChannels) * multiplier);
  }
  const size_t levels = c.size();
  double       count = ConvParameters(dimension, inChannels, c[0], 3);
  for (size_t level = 0; level < levels; ++level)
  {
    count += config.UNetBlocks * ResidualBlockParameters(dimension, c[level], c[level], conditionDim);
    if (level + 1 < levels)
    {
      count += ConvParameters(dimension, c[level], c[level + 1], 2);
    }
  }
  count += ResidualBlockParameters(dimension, c.back(), c.back(), conditionDim);
  for (size_t level = 0; level + 1 < levels; ++level)
  {
    count += ConvParameters(dimension, c[level + 1], c[level], 3);
    for (int b = 0; b < config.UNetBlocks; ++b)
    {
      count += ResidualBlockParameters(dimension, b == 0 ? 2 * c[level] : c[level], c[level], conditionDim);
    }
  }
  return count + 2 * c[0] + ConvParameters(dimension, c[0], outChannels, 3);
}

} // namespace nn
} // namespace cdm
