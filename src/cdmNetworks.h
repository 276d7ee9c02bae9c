/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#ifndef cdmNetworks_h
#define cdmNetworks_h

// Internal header of the core engine (src/ only): the CDM networks in the PyTorch C++ frontend.
#include "cdmModelConfig.h"

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <vector>

namespace cdm
{
namespace nn
{

/** \brief A convolution for 2D or 3D tensors ([B, C, H, W] or [B, C, D, H, W]); zero padding of kernel / 2. */
class ConvImpl : public torch::nn::Module
{
public:
  ConvImpl(int dimension, int64_t inChannels, int64_t outChannels, int64_t kernel, int64_t stride = 1);
  torch::Tensor
  forward(const torch::Tensor & x);

private:
  int           m_Dimension;
  int64_t       m_Kernel;
  int64_t       m_Stride;
  torch::Tensor m_Weight;
  torch::Tensor m_Bias;
};
TORCH_MODULE(Conv);

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

private:
  ChannelNorm       m_Norm1{ nullptr };
  Conv              m_Conv1{ nullptr };
  ChannelNorm       m_Norm2{ nullptr };
  Conv              m_Conv2{ nullptr };
  Conv              m_Skip{ nullptr };
  torch::nn::Linear m_Film{ nullptr };
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
  /** The feature map alone: convolutions only, so a tile with a halo of ReceptiveRadius() gives the same cells. */
  torch::Tensor
  Features(const torch::Tensor & x);
  /** z [B, D] from the feature map averaged over its cells ([B, FeatureChannels()]). */
  torch::Tensor
  Represent(const torch::Tensor & pooled);
  /** Reach of a feature cell beyond its own input voxels, in input voxels. */
  int64_t
  ReceptiveRadius() const;
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
  torch::nn::Linear          m_Project{ nullptr };
  torch::nn::Linear          m_Mix{ nullptr };
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
  torch::nn::Linear m_First{ nullptr };
  torch::nn::Linear m_Second{ nullptr };
};
TORCH_MODULE(TimeEmbedding);

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
  torch::nn::Linear              m_In{ nullptr };
  std::vector<torch::nn::Linear> m_First;
  std::vector<torch::nn::Linear> m_Second;
  torch::nn::Linear              m_Out{ nullptr };
};
TORCH_MODULE(Denoiser);

/** \brief The C-UNet: a local residual UNet whose every block is modulated by z (Condition Embedding). */
class CrossConditionedUNetImpl : public torch::nn::Module
{
public:
  CrossConditionedUNetImpl(int dimension, int64_t inChannels, int64_t conditionDim, const NetworkConfig & config);
  /** x: [B, inChannels, ...] with sizes divisible by the alignment; z: [B, D] (ignored when conditionDim is 0). */
  torch::Tensor
  forward(const torch::Tensor & x, const torch::Tensor & z = {});

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

/** Nearest-neighbour upsampling by 2 along every spatial axis. */
torch::Tensor
Upsample2(const torch::Tensor & x);

} // namespace nn
} // namespace cdm

#endif
