/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#ifndef cdmModelConfig_h
#define cdmModelConfig_h

#include "cdmNormalization.h"

#include <map>
#include <string>
#include <vector>

namespace cdm
{

/** \brief Sizes of the four networks (README.md, "The model").
 *  A preset fills them; every field is stored in the model. */
struct NetworkConfig
{
  int              RepresentationDim{ 32 }; ///< D, the length of z
  int              RepresentationGrid{ 1 }; ///< cells per axis of z (1 = the paper's global vector)
  int              UNetChannels{ 8 };       ///< C-UNet channels at full resolution
  std::vector<int> UNetMultipliers{ 1, 2 }; ///< channel multiplier per UNet level (levels - 1 downsamplings)
  int              UNetBlocks{ 1 };         ///< residual blocks per UNet level
  int              EncoderChannels{ 8 };    ///< MRM feature encoder / source encoder stem channels
  int              EncoderLevels{ 2 };      ///< stride-2 downsamplings in the encoders
  int              EncoderBlocks{ 1 };      ///< residual blocks per encoder level
  int              DenoiserWidth{ 64 };     ///< MDN hidden width
  int              DenoiserBlocks{ 2 };     ///< MDN residual MLP blocks
  int              MaskPatchSize{ 4 };      ///< MRM masking patch edge (voxels)
  double           MaskRatio{ 0.6 };        ///< fraction of patches MRM masks
};

/** \brief The diffusion schedule and sampler of the MDN. */
struct DiffusionConfig
{
  std::string Schedule{ "diffir" }; ///< "diffir": linspace(sqrt(b0), sqrt(b1), T)^2; "linear": linspace(b0, b1, T)
  int         TrainSteps{ 4 };      ///< T
  int         SamplingSteps{ 4 };   ///< DDIM steps at inference (strided when < T)
  double      BetaStart{ 0.1 };
  double      BetaEnd{ 0.99 };
  double      Eta{ 0.0 }; ///< default DDIM eta (0 = deterministic reverse steps)
};

/** \brief Everything needed to rebuild a model: the JSON header of a `.cdm` file. */
struct ModelConfig
{
  /** 1: one target per model; 2: also unified models (Targets, TargetScales). A per-target model is still written
   *  as version 1, so that readers from before version 2 keep reading it; they refuse a unified model's file. */
  static constexpr int CurrentFormatVersion = 2;

  int FormatVersion{ CurrentFormatVersion };
  /** cdm | unet (C-UNet without guidance) | ddim (image-space diffusion) | segmenter (the UNet with a tumour-label
   *  head: Target is SegmentationName, the output SegmentationClasses label probabilities) */
  std::string              ModelKind{ "cdm" };
  std::string              Preset{ "tiny" };
  unsigned int             Dimension{ 2 };
  int                      SliceAxis{ 2 }; ///< axis a 2D model slices 3D volumes along (0 x, 1 y, 2 z)
  std::vector<std::string> Sources{ "t1n", "t2w", "t2f" };
  std::string              Target{ "t1c" };          ///< a unified model: its first target; a segmenter: "seg"
  bool                     SourcesOptional{ false }; ///< trained with source dropout: any non-empty subset works
  /** A unified model's targets: it synthesizes any of them from whichever of Sources are present (the targets are
   *  among Sources; the requested one is absent from the input, and a learned target embedding conditions the MDN
   *  and the C-UNet). Empty for a per-target model. */
  std::vector<std::string>      Targets;
  std::map<std::string, double> TargetScales; ///< a unified model's TargetScale per target
  NetworkConfig                 Network;
  DiffusionConfig               Diffusion;
  NormalizationRule             Normalization;
  double                        TargetScale{ 1.0 }; ///< output intensity of a normalised 1.0 (median training scale)
  std::string                   ProvenanceJson{ "{}" }; ///< training provenance (free-form JSON object)

  /** A configuration from a named preset: "tiny" (tests), "small" (CPU benchmark), "paper" (DiffIR scale), for a
   *  model kind: "cdm", or the baselines "unet" (the C-UNet with no guidance) and "ddim" (the same UNet predicting
   *  noise in image space, 1000-step linear schedule, 50 strided DDIM steps), or "segmenter" (the same UNet with a
   *  SegmentationClasses head; `target` must be SegmentationName). Throws InputError for an unknown preset, kind,
   *  dimension or modality list. */
  static ModelConfig
  FromPreset(const std::string &              preset,
             unsigned int                     dimension,
             const std::vector<std::string> & sources,
             const std::string &              target,
             const std::string &              kind = "cdm");

  /** A unified model: `targets` (two or more) from whichever of `modalities` are present (the targets among them),
   *  sources optional. Only the cdm kind. Throws InputError as FromPreset. */
  static ModelConfig
  UnifiedFromPreset(const std::string &              preset,
                    unsigned int                     dimension,
                    const std::vector<std::string> & modalities,
                    const std::vector<std::string> & targets);

  /** Whether this is a segmentation model (kind segmenter): it labels the tumour instead of synthesizing. */
  bool
  IsSegmenter() const
  {
    return ModelKind == "segmenter";
  }

  /** Whether this is a unified model (Targets not empty). */
  bool
  IsUnified() const
  {
    return !Targets.empty();
  }

  /** The modalities this model synthesizes: Targets, or Target alone (a segmenter: SegmentationName). */
  std::vector<std::string>
  SynthesizedModalities() const;

  /** Index of a target in SynthesizedModalities(), or -1. */
  int
  TargetIndex(const std::string & target) const;

  /** The output intensity of a normalised 1.0 for `target` (TargetScales, or TargetScale). */
  double
  ScaleOf(const std::string & target) const;

  /** The training stages of this model kind, in order. */
  std::vector<std::string>
  Stages() const;

  /** Serialises to one JSON object (the `cdm` entry of the file header). */
  std::string
  ToJson(int indent = -1) const;

  /** Parses and validates; throws ModelFileError naming the bad field. */
  static ModelConfig
  FromJson(const std::string & json);

  /** Throws InputError when a field is out of range or inconsistent. */
  void
  Validate() const;

  /** Index of a source modality in Sources, or -1. */
  int
  SourceIndex(const std::string & name) const;

  /** The factor every spatial size is aligned to: 2^(number of C-UNet downsamplings). */
  int64_t
  UNetAlignment() const;

  /** The C-UNet's receptive-field radius in voxels (an upper bound, from the architecture). */
  int64_t
  UNetReceptiveRadius() const;
};

/** A segmenter's target: the name of the BraTS case file it predicts (`<case>-seg.nii.gz`). */
inline constexpr const char * SegmentationName = "seg";

/** A segmenter's classes: BraTS 2023 labels 0 background, 1 necrotic core, 2 oedema, 3 enhancing tumour. */
inline constexpr int SegmentationClasses = 4;

/** Every modality name the engine knows: the BraTS 2023 four, then "pd" (proton-density weighted: with t1n and t2w
 *  the IXI set). */
const std::vector<std::string> &
KnownModalities();

/** The modalities of the BraTS 2023 layout: t1n, t1c, t2w, t2f (what `--target any` and a segmenter read). */
const std::vector<std::string> &
BraTSModalities();

/** The modalities a model for `targets` reads by default (its targets among them): BraTS's four, or IXI's t1n, t2w
 *  and pd when a target is pd. Throws InputError when no set holds every target (name the sources then). */
std::vector<std::string>
DefaultModalities(const std::vector<std::string> & targets);

/** Names joined by `separator` ("t1n, t2w, t2f"), for messages and lists. */
std::string
JoinNames(const std::vector<std::string> & names, const std::string & separator = ", ");

} // namespace cdm

#endif
