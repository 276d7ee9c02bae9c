/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#ifndef cdmModel_h
#define cdmModel_h

#include "cdmModelConfig.h"
#include "cdmVolume.h"

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace cdm
{

/** Progress of long work: a fraction in [0, 1] and what is being done. */
using ProgressCallback = std::function<void(double fraction, const std::string & what)>;

/** Source images keyed by modality name (e.g. "t1n"). */
using SourceVolumes = std::map<std::string, Volume>;

/** \brief The representation z of one image: one D-vector per cell, for each of K samples.
 *
 * A 3D model (or a 2D model on a 2D image) has one cell; a 2D model on a 3D volume has one cell per slice
 * along the model's slice axis. SourceScales carries each source's normalisation scale so that the
 * synthesis normalises exactly as the sampler did. */
struct Representation
{
  int64_t                       Cells{ 1 };
  int                           Dim{ 0 };
  int                           Samples{ 1 };
  std::vector<float>            Values; ///< [Samples][Cells][Dim]
  std::map<std::string, double> SourceScales;
  std::string                   Target; ///< the modality it guides the synthesis of (empty: the model's target)

  /** The mean over samples, [Cells][Dim]. */
  std::vector<float>
  Mean() const;
};

/** \brief The floating-point precision the convolutional networks run in. Reduced precision (autocast: convolutions
 *  and matrix products in bfloat16 or float16, normalisations and the MDN's steps in float32) trades fidelity for
 *  speed where the hardware has fast bf16/fp16 arithmetic; bench/PRECISION.md gives both. */
enum class Precision
{
  Float32,
  BFloat16,
  Float16
};

/** Precision from its name "fp32", "bf16" or "fp16"; throws InputError naming `parameter` otherwise. */
Precision
ParsePrecision(const std::string & name, const std::string & parameter = "precision");

/** "fp32", "bf16" or "fp16". */
std::string
PrecisionName(Precision precision);

/** \brief Options of the MDN sampler and the synthesis. */
struct SynthesisOptions
{
  int                    Samples{ 1 };            ///< K representation samples (K > 1 gives an uncertainty map)
  uint64_t               Seed{ 0 };               ///< seeds the starting noise z_T: the same seed, the same output
  double                 Eta{ -1.0 };             ///< DDIM eta; negative = the model's default
  std::array<int64_t, 3> TileSize{ { 0, 0, 0 } }; ///< C-UNet tile edge per axis in voxels; 0 = whole extent
  int                    SlicesPerBatch{ 0 };     ///< 2D model: slices per device call; 0 = by VoxelsPerCall
  /** What one device call reads: a 2D model's slices per call, or a 3D model's slabs along z (source encoder and
   *  C-UNet; times the samples for the C-UNet), up to this many voxels; 0 = automatic (2^16 for 2D slices, 2^18 for
   *  3D slabs). Memory, not results: any value gives the same image to float rounding. */
  int64_t VoxelsPerCall{ 0 };
  /** Sources read window by window (SampleRepresentation with a SourceWindowReader; the ITK sampler): voxels one
   *  read takes, in whole planes; 0 = 2^20 (18 planes of 240x240). Memory and reads, not results. */
  int64_t VoxelsPerRead{ 0 };
  /** The networks' arithmetic: the source encoder and the C-UNet (the MDN's small steps stay float32). */
  Precision NetworkPrecision{ Precision::Float32 };
  /** The modality to synthesize. Empty: a per-target model's target; for a unified model, the one of its targets
   *  that the sources lack when exactly one does (otherwise it must be named). */
  std::string Target;
};

/** \brief Options of a segmenter (Model::Segment). */
struct SegmentationOptions
{
  /** Voxels one device call reads: a 2D model's slices per call (default 2^16: one 240x240 slice); a 3D model
   *  labels the whole volume in one call. Memory, not results. */
  int64_t   VoxelsPerCall{ 0 };
  Precision NetworkPrecision{ Precision::Float32 };
  /** Let sources be absent even when the model was not trained for it: their channels enter as zeros (image and
   *  availability). What a gap does to a segmenter with nothing filled in: the floor of BraSyn's segmentation
   *  score (bench/RESULTS.md). A model trained with source dropout takes absent sources anyway. */
  bool MissingSourcesAsZero{ false };
};

/** \brief What a synthesis returns: the target image and, for K > 1, the voxel-wise standard deviation. */
struct SynthesisResult
{
  Volume Image;
  Volume Uncertainty; ///< no voxels (StoredVoxels() == 0) unless requested with Samples > 1
};

/** \brief Caller-owned buffers a synthesis writes into instead of allocating its result (x fastest, the size of the
 *  synthesised region): the ITK filters pass their output buffers, so the image is never held twice. */
struct SynthesisDestination
{
  float * Image{ nullptr };
  float * Uncertainty{ nullptr }; ///< used when the synthesis has K > 1 samples
};

/** \brief An index region of an image (x, y, z), used to synthesise only part of the output. */
struct Region
{
  std::array<int64_t, 3> Index{ { 0, 0, 0 } };
  std::array<int64_t, 3> Size{ { 0, 0, 0 } };
};

/** \brief Where partial sources lie: `Buffered` of an image of `ImageSize` (for streaming). */
struct SourceExtent
{
  std::array<int64_t, 3> ImageSize{ { 0, 0, 0 } };
  Region                 Buffered;
};

/** Reads the sources window by window, for a sampler that never holds them whole: their voxels in `window` (indices
 *  of the whole image, x y z), one volume per source, each of exactly the window's size and with the geometry of
 *  that part of the image. A window's volumes are used up before the next call, so they may view a buffer that the
 *  next call refills (the ITK sampler pulls each window through its pipeline). */
using SourceWindowReader = std::function<SourceVolumes(const Region & window)>;

/** \brief Carries a 3D model's C-UNet from one synthesised region to the next along z, so that regions requested in
 *  order of z (the pieces of ITK's streaming) compute every plane once, instead of once per piece plus a
 *  receptive-field halo on both sides. Pass the same object to successive Model::SynthesizeRegion calls. A request
 *  that does not start where the last one ended, or that has another model, representation, precision or in-plane
 *  extent, starts afresh by itself; call Reset() when the sources' voxels change (the engine cannot see that).
 *  2D models and the ddim baseline do not use it. */
class SynthesisContinuation
{
public:
  SynthesisContinuation();
  ~SynthesisContinuation();
  SynthesisContinuation(SynthesisContinuation &&) noexcept;
  SynthesisContinuation &
  operator=(SynthesisContinuation &&) noexcept;

  /** Forgets the carried state (its memory is freed); the next request starts afresh. */
  void
  Reset();

  /** The z index at which a request continues the carried state; -1 when nothing is carried. */
  int64_t
  NextPlane() const;

  /** How many requests continued the carried state instead of starting afresh (for tests and benchmarks). */
  int64_t
  Continuations() const;

  struct State;

private:
  friend class Model;
  std::unique_ptr<State> m_State;
  int64_t                m_Continuations{ 0 };
};

/** \brief A CDM model: its networks, schedule and normalisation rule, on a device.
 *
 * Loading and inference are thread-compatible: const methods may run concurrently on one Model.
 * Copies share the same networks. */
class Model
{
public:
  /** A freshly initialised model (seeded). Device: "auto" (CUDA when present), "cpu" or "cuda[:N]". */
  static Model
  Create(const ModelConfig & config, uint64_t seed, const std::string & device = "auto");

  /** Reads and validates a `.cdm` file. Throws ModelFileError with the file name and the problem. */
  static Model
  Load(const std::string & path, const std::string & device = "auto");

  /** Writes a `.cdm` file atomically (temporary name, then rename). */
  void
  Save(const std::string & path) const;

  const ModelConfig &
  Config() const;

  /** The device the networks live on, e.g. "cpu" or "cuda:0". */
  std::string
  DeviceName() const;

  /** Number of trainable scalars over all networks. */
  int64_t
  NumberOfParameters() const;

  /** Checks sources against the model: known names, required ones present (any may be absent with
   *  `allowAbsentSources`: their channels enter as zeros), shared geometry, finite voxels, a dimension the model can
   *  run. Throws InputError naming the source and what was expected. */
  void
  CheckSources(const SourceVolumes & sources, bool allowAbsentSources = false) const;

  /** The modality a synthesis from `sources` produces for the request `target` (SynthesisOptions::Target). Throws
   *  InputError when the model cannot synthesize it, when it is among the sources, or, for a unified model, when
   *  it is empty and the sources lack more than one of the model's targets. */
  std::string
  ResolveTarget(const SourceVolumes & sources, const std::string & target) const;

  /** MRM feature encoder on an image of the target modality: z = FE(target). `modality` names it (empty: the
   *  model's target) and travels in the representation, which guides a synthesis of that modality. */
  Representation
  Encode(const Volume & target, const std::string & modality = "") const;

  /** Source encoder + MDN sampling: K samples of z_hat from the sources. */
  Representation
  SampleRepresentation(const SourceVolumes & sources, const SynthesisOptions & options = {}) const;

  /** SampleRepresentation of sources read window by window (`read`, an image of `imageSize`), so that no whole source
   *  image is ever held: one pass over slabs along the image's last axis measures the normalisation scales (keeping
   *  only each source's positive voxels), a second feeds the source encoder (slabs along z, or along a 2D model's
   *  slice axis), each window read once. Equals SampleRepresentation of the whole images; the windows are checked as
   *  CheckSources checks whole sources. */
  Representation
  SampleRepresentation(const SourceWindowReader &     read,
                       const std::array<int64_t, 3> & imageSize,
                       const SynthesisOptions &       options = {}) const;

  /** The representation ablations (bench/RESULTS.md; `cdm synthesize --representation`): "sampled" returns
   *  `sampled`; "oracle" the MRM encoding of `reference`, an image of the target modality (the true target: the
   *  most z can carry); "zero" zeros. Cells and source scales are kept, so the synthesis normalises as before.
   *  Throws InputError for an unknown mode, an oracle without a reference, or a reference of another shape. */
  Representation
  ReplaceRepresentation(const Representation & sampled, const std::string & mode, const Volume * reference) const;

  /** The part of the sources the C-UNet reads to synthesise `output` of an image of `imageSize`: the output
   *  region padded by the receptive-field halo (not along a 2D model's slice axis), widened to the network's
   *  alignment, and cropped to the image. */
  Region
  RequiredSourceRegion(const Region & output, const std::array<int64_t, 3> & imageSize) const;

  /** C-UNet synthesis guided by a representation, restricted to `region` of the output (whole image when its
   *  size is zero). Tiles are aligned and padded by the receptive-field halo, so any region equals the same
   *  part of the whole-image synthesis. The returned volumes span `region` only. With `extent`, the sources hold
   *  only `extent->Buffered` of the image, which must contain RequiredSourceRegion(region). The representation
   *  carries the sources' normalisation scales (computed on the whole images by SampleRepresentation). With
   *  `destination`, the result is written into its buffers and the returned volumes view them. A 3D model's C-UNet
   *  runs slab by slab along z (memory of a slab, not of the volume); with `continuation`, a region that starts
   *  where the previous one ended carries on from it (SynthesisContinuation). */
  SynthesisResult
  SynthesizeRegion(const SourceVolumes &        sources,
                   const Representation &       representation,
                   const Region &               region,
                   const SynthesisOptions &     options = {},
                   const ProgressCallback &     progress = {},
                   const SourceExtent *         extent = nullptr,
                   const SynthesisDestination & destination = {},
                   SynthesisContinuation *      continuation = nullptr) const;

  /** A segmenter's tumour labels (0 background, 1 necrotic core, 2 oedema, 3 enhancing tumour: the most probable
   *  per voxel) on the sources' grid. Throws InputError when the model is not a segmenter or the sources do not
   *  fit it (CheckSources; absent sources pass with SegmentationOptions::MissingSourcesAsZero). */
  Volume
  Segment(const SourceVolumes &       sources,
          const SegmentationOptions & options = {},
          const ProgressCallback &    progress = {}) const;

  /** The whole chain: normalise, sample z, synthesise, denormalise. */
  SynthesisResult
  Synthesize(const SourceVolumes &    sources,
             const SynthesisOptions & options = {},
             const ProgressCallback & progress = {}) const;

  /** Implementation (LibTorch types live only in src/). */
  struct Impl;
  explicit Model(std::shared_ptr<Impl> impl);
  Impl &
  GetImpl() const
  {
    return *m_Impl;
  }

private:
  std::shared_ptr<Impl> m_Impl;
};

/** "cpu" or "cuda:0" for a requested "auto|cpu|cuda[:N]"; throws InputError when CUDA is asked for and absent. */
std::string
ResolveDevice(const std::string & requested);

/** True when LibTorch sees a CUDA device. */
bool
CudaAvailable();

/** Sets LibTorch's intra-op thread count (<= 0 leaves it unchanged). */
void
SetNumberOfThreads(int threads);

/** For programs, not libraries: keeps the networks' working memory in the process's heap. glibc's malloc maps each
 *  block above its mmap threshold (128 KiB at the start, raised by the history of frees up to 32 MiB) from the kernel
 *  and unmaps it when freed, so a synthesis's per-call activations (a few MB each) are faulted in afresh at every
 *  call, or not, depending on what the process happened to free before: the same 2D synthesis took 11 or 14 s with
 *  1.2 or 3.1 million page faults (bench/EXPERIMENTS.md). This fixes the mmap threshold at 32 MiB and the trim
 *  threshold at 256 MiB (mallopt). Does nothing and returns false when malloc is not glibc's (another C library, or
 *  tcmalloc linked or preloaded: the better remedy, bench/MEMORY.md) or when the environment chose already
 *  (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_ or GLIBC_TUNABLES set, or CDM_KEEP_MALLOC_DEFAULTS to keep glibc's
 *  dynamic thresholds). The examples and the `cdm` command line call it at their start; a program that embeds the
 *  ITK filters may. */
bool
KeepWorkingMemoryInTheHeap();

/** Summary of a `.cdm` file's header without building the networks (for `cdm info`). */
struct ModelFileInfo
{
  ModelConfig Config;
  int64_t     FileBytes{ 0 };
  int64_t     Tensors{ 0 };
  int64_t     Parameters{ 0 };
};
ModelFileInfo
ReadModelFileInfo(const std::string & path);

} // namespace cdm

#endif
