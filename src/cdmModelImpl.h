/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#ifndef cdmModelImpl_h
#define cdmModelImpl_h

// Internal header of the core engine (src/ only): the networks of a model and the tensor operations that training
// and inference share, so that each rule (input layout, padding, sampling) is written once.
#include "cdmDiffusion.h"
#include "cdmModel.h"
#include "cdmNetworks.h"
#include "cdmSafetensors.h"

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <map>
#include <optional>
#include <memory>
#include <string>
#include <vector>

namespace cdm
{

/** \brief The random draws of a training batch, item by item: item i draws from a generator of its own seeded with
 *  its seed, so that a batch split over several processes draws, item for item, what it draws whole in one (the
 *  equivalence of distributed and single-process training rests on it). */
class ItemGenerators
{
public:
  explicit ItemGenerators(const std::vector<uint64_t> & seeds);

  int64_t
  Size() const
  {
    return static_cast<int64_t>(m_Generators.size());
  }

  /** Standard-normal values of shape [items, ...]: item i's slice from generator i, drawn on the CPU, then moved. */
  at::Tensor
  Normal(at::IntArrayRef shape, const c10::Device & device);

  /** Uniform values in [0, 1) of shape [items, ...], as Normal. */
  at::Tensor
  Uniform(at::IntArrayRef shape, const c10::Device & device);

  /** One integer in [0, high) per item: [items] long. */
  at::Tensor
  Integers(int64_t high, const c10::Device & device);

private:
  std::vector<at::Generator> m_Generators;
};

class SourceAccess;

struct Model::Impl
{
  /** Builds the networks of `config` on `device`. With `initialSeed`, their initial weights are drawn from a generator
   *  of the engine's own seeded with it (a new model); without, they stay zero until a model file's are assigned. */
  Impl(const ModelConfig & config, const c10::Device & device, std::optional<uint64_t> initialSeed = std::nullopt);

  /** The number of parameters the constructor builds for `config`, computed without building anything (see
   *  nn::ConvParameters). */
  static double
  ParameterCount(const ModelConfig & config);

  ModelConfig Config;
  c10::Device Device;
  // Mutable: LibTorch's forward() is non-const, but running a network does not change the model.
  mutable nn::ImageEncoder           MrmEncoder{ nullptr };
  mutable nn::FeatureDecoder         MrmDecoder{ nullptr };
  mutable nn::ImageEncoder           SourceEncoder{ nullptr };
  mutable nn::Denoiser               Denoiser{ nullptr };
  mutable nn::CrossConditionedUNet   UNet{ nullptr };
  mutable nn::TimeEmbedding          TimeEmbedding{ nullptr };   ///< ddim baseline only
  mutable nn::TargetEmbedding        TargetEmbedding{ nullptr }; ///< unified models only
  std::unique_ptr<DiffusionSchedule> Schedule;

  /** The networks by their prefix in the model file. */
  std::vector<std::pair<std::string, torch::nn::Module *>>
  Networks() const;

  /** Every parameter, named "<network>.<parameter>". */
  safetensors::NamedTensors
  NamedParameters() const;

  /** Copies tensors into the parameters; throws ModelFileError naming a missing, extra or mis-shaped tensor. */
  void
  AssignParameters(const safetensors::NamedTensors & tensors, const std::string & path);

  void
  SetTraining(bool training);

  /** Channels of the source input: one image and one availability channel per source. */
  int64_t
  SourceChannels() const
  {
    return 2 * static_cast<int64_t>(Config.Sources.size());
  }

  /** [2S, Z, Y, X] from normalised source voxels (missing sources: zero image, zero availability). */
  at::Tensor
  SourceTensor(const std::map<std::string, const std::vector<float> *> & normalised,
               const std::array<int64_t, 3> &                            size) const;

  /** The network input for `window` (index ranges inside the given volumes) of the sources, normalised with `scales`:
   *  [2S, Z', Y', X'] (missing sources: zero image, zero availability). Only the window is copied: inference never
   *  holds a whole-image tensor of the sources. */
  at::Tensor
  SourceWindow(const SourceVolumes &                 sources,
               const std::map<std::string, double> & scales,
               const Region &                        window) const;

  /** A 3D model's network input for planes [first, end) along z of `window` (indices inside the given volumes; its
   *  z range is ignored): [1, 2S, end - first, Y + padY, X + padX], zero in the planes from `depth` (where the
   *  image ends) and in the high-end in-plane padding. One slab of the streamed source encoder or C-UNet. */
  at::Tensor
  SourceSlab(const SourceVolumes &                 sources,
             const std::map<std::string, double> & scales,
             Region                                window,
             int64_t                               first,
             int64_t                               end,
             int64_t                               depth,
             int64_t                               padY,
             int64_t                               padX) const;

  /** A 3D model's slab (source encoder and C-UNet streamed along z) when SynthesisOptions::VoxelsPerCall is 0: 2^18
   *  input voxels, 4 planes of 240x240: a third of the peak memory of 18 planes at the same speed; fewer planes
   *  slow the encoder down (bench/EXPERIMENTS.md, 2026-11-30). */
  static constexpr int64_t DefaultVoxelsPerSlab = int64_t{ 1 } << 18;

  /** Slices of a 2D model per device call: SlicesPerBatch, or as many as VoxelsPerCall allows (default 2^16: one
   * 240x240 slice; measured as fast as 4 and smaller). */
  int64_t
  SlicesPerCall(const SynthesisOptions & options, const std::array<int64_t, 3> & imageSize) const;

  /** Moves the slice axis of a [C, Z, Y, X] tensor to the front for a 2D model ([N, C, H, W]), or adds a batch
   *  axis for a 3D model ([1, C, Z, Y, X]). */
  at::Tensor
  ToNetworkLayout(const at::Tensor & channelsZYX) const;
  /** The inverse of ToNetworkLayout: [B, C, ...] -> [C, Z, Y, X]. */
  at::Tensor
  FromNetworkLayout(const at::Tensor & batch) const;
  /** The tensor axis (0 = batch, 2.. = spatial) of network layout that holds volume axis 0 (x), 1 (y) or 2 (z). */
  int64_t
  LayoutAxis(int volumeAxis) const;

  /** [count] target indices (long, on the device) of `target` in Config.SynthesizedModalities(). */
  at::Tensor
  TargetIndices(const std::string & target, int64_t count) const;
  /** The MDN's condition for targets `targetIndex` [B]: c plus the target embedding (a unified model), or c. */
  at::Tensor
  ConditionFor(const at::Tensor & c, const at::Tensor & targetIndex) const;
  /** The C-UNet's guidance for targets `targetIndex` [B]: z plus the target embedding (a unified model), or z. */
  at::Tensor
  GuidanceFor(const at::Tensor & z, const at::Tensor & targetIndex) const;

  /** z = FE(target) for a [B, 1, ...] batch (padded inside to the encoder's alignment). */
  at::Tensor
  EncodeTarget(const at::Tensor & target) const;
  /** c = E_src(sources) for a [B, 2S, ...] batch. */
  at::Tensor
  EncodeSources(const at::Tensor & sources) const;
  /** c = E_src(sources) of a 3D model over a whole volume, streamed slab by slab along z (exact: the encoder's
   *  layers keep the planes they still need, and its feature planes are summed as they come), so that no call holds
   *  the volume. */
  at::Tensor
  EncodeSourceVolume(SourceAccess & sources, const std::map<std::string, double> & scales, int64_t voxelsPerCall) const;
  /** c = E_src(sources) of a 2D model, its slices a few at a time (SlicesPerCall): [slices, C] in slice order. */
  at::Tensor
  EncodeSourceSlices(SourceAccess &                        sources,
                     const std::map<std::string, double> & scales,
                     const SynthesisOptions &              options) const;
  /** The MDN reverse process from zStart given the condition (differentiable when called under autograd). */
  at::Tensor
  SampleRepresentation(const at::Tensor &                     condition,
                       const at::Tensor &                     zStart,
                       double                                 eta,
                       const DiffusionSchedule::NoiseSource & noise) const;
  /** C-UNet on a [B, 2S, ...] batch whose spatial sizes are multiples of the UNet alignment. */
  at::Tensor
  SynthesizeBatch(const at::Tensor & sources, const at::Tensor & z) const;
  /** The ddim baseline's reverse process: strided DDIM from `noise` ([B, 1, ...]) given the sources, predicting
   *  noise and clipping the clean estimate to the normalised range. */
  at::Tensor
  SampleImage(const at::Tensor &                     sources,
              const at::Tensor &                     noise,
              double                                 eta,
              const DiffusionSchedule::NoiseSource & stepNoise) const;
  /** The ddim baseline's noise prediction for x_t at timestep fractions t ([B]). */
  at::Tensor
  PredictNoise(const at::Tensor & sources, const at::Tensor & xt, const at::Tensor & t) const;

  /** MRM reconstruction of a masked target: {prediction, mask}; each item's mask is drawn from its generator. */
  std::pair<at::Tensor, at::Tensor>
  ReconstructMasked(const at::Tensor & target, ItemGenerators & generators) const;
};

/** Zero-pads the high end of every spatial axis of a [B, C, ...] tensor to a multiple of `multiple`. */
at::Tensor
PadToMultiple(const at::Tensor & x, int64_t multiple);

/** Crops the spatial axes of a [B, C, ...] tensor to the given sizes (from the low end). */
at::Tensor
CropTo(const at::Tensor & x, const std::vector<int64_t> & spatialSizes);

/** A random generator of the engine's own (CPU, Philox-free mt19937 as torch's default), seeded: every random draw
 *  of the engine comes from one of these, never from torch's default generators, which belong to the caller. */
at::Generator
NewGenerator(uint64_t seed);

/** Standard-normal noise of the given shape drawn on the CPU from `generator` and moved to `device` (so that a seed
 *  gives the same noise on every device). */
at::Tensor
Noise(at::IntArrayRef shape, at::Generator & generator, const c10::Device & device);

/** Noise() from a generator seeded with `seed`. */
at::Tensor
SeededNoise(const std::vector<int64_t> & shape, uint64_t seed, const c10::Device & device);

/** Computes the normalisation scale of each source that has none in `scales` (exact only on whole images). */
void
CompleteSourceScales(const ModelConfig & config, const SourceVolumes & sources, std::map<std::string, double> & scales);

/** \brief The sources as the sampler reads them: volumes the caller holds whole, or windows read one at a time through
 * a SourceWindowReader (the previous window is released before the next is read), so that a streamed sampler never
 *  holds a whole source image. One code path for both: the encoder asks for the window it needs and gets the volumes
 *  that hold it. */
class SourceAccess
{
public:
  /** Whole sources (all of one size; checked by the caller). */
  explicit SourceAccess(const SourceVolumes & whole);
  /** Windows of an image of `imageSize` from `read`, at least `voxelsPerRead` voxels a read (whole planes). */
  SourceAccess(SourceWindowReader read, const std::array<int64_t, 3> & imageSize, int64_t voxelsPerRead);

  const std::array<int64_t, 3> &
  ImageSize() const
  {
    return m_ImageSize;
  }

  /** Planes along `axis` that one read takes (the whole extent for whole sources). */
  int64_t
  PlanesPerRead(int axis) const;

  /** Volumes that hold `window` (image indices) and, in `local`, where it lies in them. A window outside the held one
   *  is read: `window` widened along `axis` to PlanesPerRead(axis) planes (reads advance along one axis in order). */
  const SourceVolumes &
  Hold(const Region & window, int axis, Region & local);

private:
  const SourceVolumes *  m_Whole{ nullptr };
  SourceWindowReader     m_Read;
  std::array<int64_t, 3> m_ImageSize{ { 1, 1, 1 } };
  int64_t                m_VoxelsPerRead{ 0 };
  SourceVolumes          m_Held;
  std::optional<Region>  m_HeldRegion;
};

/** The image axis a streamed reader advances along: z, or y for a 2D image (ITK's streaming splits the last axis). */
int
StreamedAxis(const std::array<int64_t, 3> & imageSize);

/** \brief While alive, the calling thread's network operations on `device` run in `precision` (LibTorch's autocast:
 *  convolutions and matrix products in reduced precision, reductions in float32). Restores the thread's previous
 *  autocast state, so that a caller's own settings are left alone. Float32 does nothing. */
class ReducedPrecisionScope
{
public:
  ReducedPrecisionScope(const c10::Device & device, Precision precision);
  ~ReducedPrecisionScope();
  ReducedPrecisionScope(const ReducedPrecisionScope &) = delete;
  ReducedPrecisionScope &
  operator=(const ReducedPrecisionScope &) = delete;

private:
  c10::DeviceType m_DeviceType;
  bool            m_Active{ false };
  bool            m_WasEnabled{ false };
  c10::ScalarType m_PreviousType{ c10::ScalarType::Float };
};

/** A segmenter's prediction from its label scores [B, SegmentationClasses, ...]: the most probable label per voxel,
 *  [B, 1, ...] as float. */
at::Tensor
MostProbableLabels(const at::Tensor & scores);

/** Throws InputError when `config` is a segmenter's: the synthesis entry points call it. */
void
RefuseSegmenter(const ModelConfig & config);

/** The torch device for "cpu" / "cuda" / "cuda:N" (after ResolveDevice). */
c10::Device
ToTorchDevice(const std::string & resolved);

} // namespace cdm

#endif
