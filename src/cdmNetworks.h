/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#ifndef cdmNetworks_h
#define cdmNetworks_h

// Internal header of the core engine (src/ only): the CDM networks in the PyTorch C++ frontend.
#include "cdmModelConfig.h"

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <array>
#include <deque>
#include <tuple>
#include <utility>

#include <vector>

namespace cdm
{
namespace nn
{

/** \brief Planes [First, First + Count()) along the first spatial axis of a feature map ([B, C, D, ...]): what a
 *  network streamed along that axis passes from layer to layer (CrossConditionedUNetImpl::ForwardPlanes). */
struct PlaneRun
{
  torch::Tensor Values; ///< [B, C, count, ...], or undefined for no planes
  int64_t       First{ 0 };
  bool          Last{ false }; ///< no planes follow these from their producer

  int64_t
  Count() const
  {
    return Values.defined() ? Values.size(2) : 0;
  }
};

/** \brief Planes of a stream (dimension 2 of its tensors) queued in the chunks they arrived in. Pushing and dropping
 *  copy nothing, so a queue never holds a plane twice; a queue kept as one tensor did, for a moment, at every push
 *  (the concatenation) and every drop (the copy of what is left): the largest share of a streamed 3D synthesis's
 *  peak memory (bench/MEMORY.md). */
class PlaneQueue
{
public:
  /** Appends `chunk`'s planes, the next in order. */
  void
  Push(const torch::Tensor & chunk);
  /** Planes [begin, end) by stream index, all queued: a view of one chunk when it holds them all, otherwise a copy of
   *  these planes alone. */
  torch::Tensor
  Planes(int64_t begin, int64_t end) const;
  /** Forgets the planes before `plane`. */
  void
  DropBefore(int64_t plane);
  /** Stream index of the first queued plane, and one past the last. */
  int64_t
  First() const
  {
    return m_First;
  }
  int64_t
  End() const
  {
    return m_End;
  }

private:
  std::deque<torch::Tensor> m_Chunks;
  int64_t                   m_First{ 0 };
  int64_t                   m_End{ 0 };
};

/** \brief What a streamed convolution keeps between slabs: the input planes later outputs still need. */
struct ConvStreamState
{
  PlaneQueue Pending;       ///< input planes [Pending.First(), Received)
  int64_t    Received{ 0 }; ///< input planes seen so far
  int64_t    Emitted{ 0 };  ///< output planes returned so far
  /** At most this many output planes a call (0: all it can). Bounds the end of a stream, where every layer would
   *  otherwise release the planes its lag held back at once (a C-UNet's whole receptive radius). */
  int64_t MaxPlanes{ 0 };
};

/** \brief Pairs two streams of planes that arrive at different paces (a residual sum, a skip concatenation): queues
 *  both and hands out the planes both have reached. */
class PlaneAligner
{
public:
  void
  Push(int side, const PlaneRun & run);
  /** The planes both sides have reached and not yet handed out (undefined tensors when there are none). */
  struct Taken
  {
    torch::Tensor Side0;
    torch::Tensor Side1;
    int64_t       First{ 0 };
    bool          Last{ false }; ///< both sides have ended, and these are their final planes
  };
  Taken
  Take();

private:
  std::array<PlaneQueue, 2> m_Queued;
  std::array<int64_t, 2>    m_Received{ { 0, 0 } };
  std::array<bool, 2>       m_Ended{ { false, false } };
  int64_t                   m_Taken{ 0 };
};

/** \brief A residual block's streaming state. */
struct ResidualStreamState
{
  ConvStreamState Conv1;
  ConvStreamState Conv2;
  PlaneAligner    Shortcut;
};

/** \brief The image encoder's streaming state (its feature map: stem, blocks, downsamplings). */
struct EncoderStreamState
{
  ConvStreamState                  Stem;
  std::vector<ResidualStreamState> Blocks;
  std::vector<ConvStreamState>     Downsamplers;
};

/** \brief The C-UNet's streaming state: one entry per layer that reaches across planes, and the skips in wait. */
struct UNetStreamState
{
  ConvStreamState                               Stem;
  std::vector<std::vector<ResidualStreamState>> Down;
  std::vector<ConvStreamState>                  Downsamplers;
  ResidualStreamState                           Middle;
  std::vector<ConvStreamState>                  UpConvs;
  std::vector<PlaneAligner>                     Skips;
  std::vector<std::vector<ResidualStreamState>> Up;
  ConvStreamState                               Out;
};

/** \brief A convolution for 2D or 3D tensors ([B, C, H, W] or [B, C, D, H, W]); zero padding of kernel / 2. */
class ConvImpl : public torch::nn::Module
{
public:
  ConvImpl(int dimension, int64_t inChannels, int64_t outChannels, int64_t kernel, int64_t stride = 1);
  torch::Tensor
  forward(const torch::Tensor & x);
  /** forward() streamed along the first spatial axis: takes the input's next planes (in order) and returns the
   *  output planes they complete; once the input has ended (PlaneRun::Last), the end's zero padding is added and
   *  the rest returned (MaxPlanes at a time). */
  PlaneRun
  ForwardPlanes(const PlaneRun & input, ConvStreamState & state);
  /** Draws PyTorch's default initial values for a convolution (uniform in +-1/sqrt(fan-in)) from `generator`. */
  void
  Initialize(at::Generator & generator);

private:
  int           m_Dimension;
  int64_t       m_Kernel;
  int64_t       m_Stride;
  torch::Tensor m_Weight;
  torch::Tensor m_Bias;
};
TORCH_MODULE(Conv);

/** \brief A fully connected layer (y = x W^T + b) as Dense, whose constructor draws from torch's default
 *  generator: this one draws nothing until Initialize() is given the engine's own generator. */
class DenseImpl : public torch::nn::Module
{
public:
  /** `zeroInitialized`: Initialize() sets it to zero (an untrained FiLM is then the identity). */
  DenseImpl(int64_t inFeatures, int64_t outFeatures, bool zeroInitialized = false);
  torch::Tensor
  forward(const torch::Tensor & x);
  /** PyTorch's default for a linear layer (uniform in +-1/sqrt(fan-in)), or zeros. */
  void
  Initialize(at::Generator & generator);
  torch::Tensor &
  Weight()
  {
    return m_Weight;
  }

private:
  torch::Tensor m_Weight;
  torch::Tensor m_Bias;
  bool          m_ZeroInitialized;
};
TORCH_MODULE(Dense);

/** Gives every layer of `network` its initial values, drawn in a fixed order from `generator` alone (the engine never
 *  draws from, nor seeds, torch's default generators: a caller's random stream is its own). */
void
InitializeParameters(torch::nn::Module & network, at::Generator & generator);

/** \brief Per-voxel LayerNorm over channels (as in ConvNeXt): no spatial statistics, so tiles stay exact. */
class ChannelNormImpl : public torch::nn::Module
{
public:
  explicit ChannelNormImpl(int64_t channels);
  torch::Tensor
  forward(const torch::Tensor & x);

private:
  torch::Tensor m_Weight;
  torch::Tensor m_Bias;
};
TORCH_MODULE(ChannelNorm);

/** \brief Residual block: norm, SiLU, 3x3 conv, norm, Condition Embedding (FiLM from z), SiLU, 3x3 conv, + skip.
 *  With conditionDim 0 there is no Condition Embedding. */
class ResidualBlockImpl : public torch::nn::Module
{
public:
  ResidualBlockImpl(int dimension, int64_t inChannels, int64_t outChannels, int64_t conditionDim);
  torch::Tensor
  forward(const torch::Tensor & x, const torch::Tensor & condition = {});
  /** forward() streamed along the first spatial axis (ConvImpl::ForwardPlanes). */
  PlaneRun
  ForwardPlanes(const PlaneRun & x, const torch::Tensor & condition, ResidualStreamState & state);

private:
  /** The condition's per-channel scale and shift of the second half: {gamma, beta}, or undefined without FiLM. */
  std::pair<torch::Tensor, torch::Tensor>
  Modulation(const torch::Tensor & condition, const torch::Tensor & like);

  ChannelNorm m_Norm1{ nullptr };
  Conv        m_Conv1{ nullptr };
  ChannelNorm m_Norm2{ nullptr };
  Conv        m_Conv2{ nullptr };
  Conv        m_Skip{ nullptr };
  Dense       m_Film{ nullptr };
};
TORCH_MODULE(ResidualBlock);

/** \brief The MRM feature encoder FE, and (with all source channels in) the source encoder E_src:
 *  conv stem + residual blocks + stride-2 downsamplings -> feature map; average pool -> MLP -> z. */
class ImageEncoderImpl : public torch::nn::Module
{
public:
  ImageEncoderImpl(int dimension, int64_t inChannels, const NetworkConfig & config);
  /** Returns {feature map, z [B, D]}. */
  std::pair<torch::Tensor, torch::Tensor>
  forward(const torch::Tensor & x);
  /** The feature map alone: convolutions only (so it can stream: FeaturesPlanes). */
  torch::Tensor
  Features(const torch::Tensor & x);
  /** Features() streamed along the first spatial axis (CrossConditionedUNetImpl::ForwardPlanes): each slab of the
   *  input returns the feature planes it completes. */
  PlaneRun
  FeaturesPlanes(const PlaneRun & x, EncoderStreamState & state);
  /** A fresh state for FeaturesPlanes. */
  EncoderStreamState
  NewStreamState() const;
  /** z [B, D] from the feature map averaged over its cells ([B, FeatureChannels()]). */
  torch::Tensor
  Represent(const torch::Tensor & pooled);
  int64_t
  FeatureChannels() const
  {
    return m_FeatureChannels;
  }

private:
  Conv                       m_Stem{ nullptr };
  std::vector<ResidualBlock> m_Blocks;
  std::vector<Conv>          m_Downsamplers;
  std::vector<int>           m_BlocksPerLevel;
  Dense                      m_Project{ nullptr };
  Dense                      m_Mix{ nullptr };
  int64_t                    m_FeatureChannels{ 0 };
};
TORCH_MODULE(ImageEncoder);

/** \brief The MRM feature decoder FD: feature map (modulated by z) -> pixels of the target modality. */
class FeatureDecoderImpl : public torch::nn::Module
{
public:
  FeatureDecoderImpl(int dimension, int64_t featureChannels, const NetworkConfig & config);
  torch::Tensor
  forward(const torch::Tensor & features, const torch::Tensor & z);

private:
  std::vector<ResidualBlock> m_Blocks;
  std::vector<Conv>          m_Upsamplers;
  Conv                       m_Out{ nullptr };
};
TORCH_MODULE(FeatureDecoder);

/** Sinusoidal timestep embedding (as in DDPM) of 1000 * t for t in [0, 1): [B] -> [B, dim]. */
torch::Tensor
SinusoidalEmbedding(const torch::Tensor & t, int64_t dim);

/** \brief The image-space diffusion baseline's timestep conditioning: sinusoidal embedding -> MLP -> a D-vector
 *  that drives the UNet's Condition Embedding (FiLM) in place of z. */
class TimeEmbeddingImpl : public torch::nn::Module
{
public:
  explicit TimeEmbeddingImpl(int64_t dim);
  torch::Tensor
  forward(const torch::Tensor & t);

  static constexpr int64_t SinusoidDim = 32;

private:
  Dense m_First{ nullptr };
  Dense m_Second{ nullptr };
};
TORCH_MODULE(TimeEmbedding);

/** \brief A unified model's target conditioning: a learned D-vector per target added to the MDN's condition c
 *  (Condition) and another added to z before the C-UNet's Condition Embedding (Guidance), so that the MDN samples,
 *  and the C-UNet synthesizes, the requested modality. Each table is a bias-free linear layer on the one-hot target
 *  code (initialised as one). */
class TargetEmbeddingImpl : public torch::nn::Module
{
public:
  TargetEmbeddingImpl(int64_t targets, int64_t dim);
  /** values [B, D] + the condition rows of `targetIndex` [B] (long). */
  torch::Tensor
  Condition(const torch::Tensor & values, const torch::Tensor & targetIndex);
  /** z [B, D] + the guidance rows of `targetIndex` [B] (long). */
  torch::Tensor
  Guidance(const torch::Tensor & z, const torch::Tensor & targetIndex);
  void
  Initialize(at::Generator & generator);

private:
  torch::Tensor m_Condition;
  torch::Tensor m_Guidance;
};
TORCH_MODULE(TargetEmbedding);

/** \brief The MDN denoiser: residual MLP over [z_t, c, embedding(t)] predicting z_0. */
class DenoiserImpl : public torch::nn::Module
{
public:
  explicit DenoiserImpl(const NetworkConfig & config);
  /** `t` holds the timestep of each batch row divided by the number of training steps, in [0, 1). */
  torch::Tensor
  forward(const torch::Tensor & zt, const torch::Tensor & condition, const torch::Tensor & t);

  static constexpr int64_t EmbeddingDim = 32;

private:
  Dense              m_In{ nullptr };
  std::vector<Dense> m_First;
  std::vector<Dense> m_Second;
  Dense              m_Out{ nullptr };
};
TORCH_MODULE(Denoiser);

/** \brief The C-UNet: a local residual UNet whose every block is modulated by z (Condition Embedding). */
class CrossConditionedUNetImpl : public torch::nn::Module
{
public:
  /** outChannels: 1 for a synthesized image, SegmentationClasses for a segmenter's label scores. */
  CrossConditionedUNetImpl(int                   dimension,
                           int64_t               inChannels,
                           int64_t               conditionDim,
                           const NetworkConfig & config,
                           int64_t               outChannels = 1);
  /** x: [B, inChannels, ...] with sizes divisible by the alignment; z: [B, D] (ignored when conditionDim is 0). */
  torch::Tensor
  forward(const torch::Tensor & x, const torch::Tensor & z = {});
  /** forward() streamed along the first spatial axis: feed the input's planes in order, a slab per call, and each
   *  call returns the output planes that slab completes; the final slab is marked PlaneRun::Last, and the call
   *  whose result is Last has returned the final plane (with MaxPlanes, calls with no planes and Last set follow
   *  until then). Equal to forward() on the whole input to float rounding, while holding a slab's activations and
   *  the planes the skip connections wait for instead of the whole volume's. */
  PlaneRun
  ForwardPlanes(const PlaneRun & x, const torch::Tensor & z, UNetStreamState & state);
  /** A fresh state for ForwardPlanes (one per pass over an input) whose layers return at most `maxPlanes` planes a
   *  call (0: all they can). */
  UNetStreamState
  NewStreamState(int64_t maxPlanes = 0) const;

private:
  Conv                                    m_Stem{ nullptr };
  std::vector<std::vector<ResidualBlock>> m_Down;
  std::vector<Conv>                       m_Downsamplers;
  ResidualBlock                           m_Middle{ nullptr };
  std::vector<Conv>                       m_UpConvs;
  std::vector<std::vector<ResidualBlock>> m_Up;
  ChannelNorm                             m_OutNorm{ nullptr };
  Conv                                    m_Out{ nullptr };
};
TORCH_MODULE(CrossConditionedUNet);

/** The networks' parameter counts as their constructors above build them, computed without building them, so that
 *  a model file's configuration is checked against the tensors it holds before anything is allocated (a header
 *  crafted to claim huge networks must not allocate them). In doubles: an absurd configuration overflows nothing.
 *  Each mirrors its constructor; the test NetworkConfig.ParameterCountsEqualTheBuiltNetworks keeps them equal. */
double
ConvParameters(int dimension, double inChannels, double outChannels, int64_t kernel);
double
ResidualBlockParameters(int dimension, double inChannels, double outChannels, double conditionDim);
double
ImageEncoderParameters(int dimension, double inChannels, const NetworkConfig & config);
/** Channels of an ImageEncoder's feature map (its FeatureChannels()). */
int64_t
ImageEncoderFeatureChannels(const NetworkConfig & config);
double
FeatureDecoderParameters(int dimension, double featureChannels, const NetworkConfig & config);
double
DenoiserParameters(const NetworkConfig & config);
double
TimeEmbeddingParameters(double dim);
double
TargetEmbeddingParameters(double targets, double dim);
double
CrossConditionedUNetParameters(int                   dimension,
                               double                inChannels,
                               double                conditionDim,
                               const NetworkConfig & config,
                               double                outChannels = 1);

/** Nearest-neighbour upsampling by 2 along every spatial axis. */
torch::Tensor
Upsample2(const torch::Tensor & x);

} // namespace nn
} // namespace cdm

#endif
