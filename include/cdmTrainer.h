/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#ifndef cdmTrainer_h
#define cdmTrainer_h

#include "cdmDataset.h"
#include "cdmMetrics.h"

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace cdm
{

/** \brief What `cdm train` asks for. Zero-valued sizes mean "the preset's default". */
struct TrainingOptions
{
  std::vector<std::string> Sources{ "t1n", "t2w", "t2f" };
  std::string              Target{ "t1c" };
  /** Two or more: one unified model that synthesizes any of them from whichever of Sources are present (Sources
   *  then lists every modality it reads, the targets among them; Target is ignored). Empty: a per-target model. */
  std::vector<std::string> Targets;
  unsigned int             Dimension{ 2 };
  std::string              Preset{ "tiny" };
  std::string              ModelKind{ "cdm" }; ///< cdm | unet | ddim (the baselines train by the same code)
  std::string              Stage{ "all" };     ///< all | mrm | cunet | mdn | finetune
  int                      Iterations{ 200 };  ///< per stage
  /** Per-stage overrides of Iterations, e.g. {"cunet", 450}: one budget split by what each stage needs. */
  std::map<std::string, int> StageIterations;
  bool                       Resume{ false };
  std::string                Device{ "auto" };
  uint64_t                   Seed{ 0 };
  std::string                Output; ///< the `.cdm` file; its checkpoint is Output + ".ckpt"
  int                        BatchSize{ 0 };
  int                        PatchSize{ 0 };
  double                     LearningRate{ 0.0 };
  /** A step down in each stage's learning rate: from this fraction of the stage's iterations on, the rate is
   *  multiplied by LearningRateDecayFactor (0: a constant rate). CDM's own schedule already ends with its finetune
   *  stage at 0.2x the rate; this gives a baseline the same kind of ending. */
  double LearningRateDecayAt{ 0.0 };
  double LearningRateDecayFactor{ 0.2 };
  int    ValidationInterval{ 50 };
  int    CheckpointInterval{ 50 };
  double ValidationFraction{ 0.2 };
  int    SliceAxis{ 2 };
  double SourceDropout{ 0.0 }; ///< > 0 trains for missing sources (availability masks)
  /** Share of the training patches centred on a tumour voxel (cases with a `-seg` file); the rest are uniform. */
  double TumourFraction{ 0.5 };
  /** Extra weight of the synthesis loss inside the tumour: weighted 1 + w there (0 = unweighted). */
  double TumourLossWeight{ 0.0 };
  /** The synthesis loss L_Syn: "l1" (the paper's and DiffIR's) or "l2". Where the sources leave a voxel uncertain
   *  (a thin enhancing rim), L1 settles on the median, i.e. no enhancement; L2 on the mean, which PSNR rewards. */
  std::string SynthesisLoss{ "l1" };
  /** The C-UNet stage trains the MRM encoder with the C-UNet (DiffIR's stage-1 teacher), so that z may carry what
   *  the synthesis needs and the sources cannot show; false keeps the MRM encoder frozen (the default: with the
   *  teacher, z still went unused in the benchmark, and the tiny preset's training test fell short of its margin). */
  bool TeacherEncoder{ false };
  /** The MDN's diffusion (a new cdm model only): "diffir" (T = 4, DiffIR's schedule, every reverse step unrolled
   *  in training: fast, and in practice deterministic) or "linear" (T = 1000, DDPM's linear betas, one random
   *  timestep per item in training, 20 strided DDIM steps in sampling: K samples of z differ where the sources leave
   *  the target undetermined). */
  std::string MdnSchedule{ "diffir" };
  /** Gaussian noise on z while the C-UNet trains, relative to z's spread: the C-UNet learns to tolerate z_hat. */
  double RepresentationNoise{ 0.0 };
  /** How a new model's Condition Embedding (FiLM from z) starts: "zero" (the identity; z gets no gradient until its
   *  weights have grown) or "small" (uniform in +-0.1/sqrt(D): z, and a teacher encoder, get a gradient from the
   *  first step). */
  std::string FilmInit{ "zero" };
  /** Data-parallel training across processes (torchrun: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT):
   *  "auto" joins a c10d process group when WORLD_SIZE > 1 (Gloo on the CPU, NCCL on CUDA), "gloo" or "nccl" choose,
   *  "off" ignores the environment. BatchSize is the global batch, split evenly over the ranks; each item's draws
   *  depend on (seed, stage, iteration, item) only, so any world size trains the same model to float rounding. */
  std::string DistributedBackend{ "auto" };
  /** Seconds a rendezvous or collective may wait for the other ranks before the run stops with DistributedError
   *  (a rank that died, or one that fell behind). */
  int DistributedTimeoutSeconds{ 300 };

  /** The iterations of one stage: its override, else Iterations. */
  int
  IterationsOf(const std::string & stage) const
  {
    const auto found = StageIterations.find(stage);
    return found == StageIterations.end() ? Iterations : found->second;
  }
};

/** \brief One progress report (a line of `cdm train`). */
struct TrainingProgress
{
  std::string      Stage;
  int              Iteration{ 0 };
  int              Iterations{ 0 };
  double           Loss{ 0.0 };
  double           IterationsPerSecond{ 0.0 };
  double           EtaSeconds{ 0.0 };
  bool             HasValidation{ false };
  double           ValidationPSNR{ 0.0 };
  double           ValidationSSIM{ 0.0 };
  bool             HasTumourValidation{ false }; ///< some validation item shows a tumour
  double           ValidationTumourPSNR{ 0.0 };  ///< inside the tumour, over the items that show one
  bool             HasDice{ false };             ///< a segmenter's validation: Dice instead of PSNR/SSIM
  SegmentationDice ValidationDice;
};

/** \brief What a stage did: its loss at the start and the end (means over a few iterations) and validation. */
struct StageReport
{
  std::string      Stage;
  int              FirstIteration{ 0 };
  int              LastIteration{ 0 };
  double           FirstLoss{ 0.0 };
  double           LastLoss{ 0.0 };
  double           ValidationPSNR{ 0.0 };
  double           ValidationSSIM{ 0.0 };
  double           ValidationTumourPSNR{ 0.0 };
  SegmentationDice ValidationDice; ///< a segmenter's (its PSNR fields stay 0)
  double           Seconds{ 0.0 };
};

struct TrainingReport
{
  std::vector<StageReport> Stages;
  bool                     Interrupted{ false };
  double                   Seconds{ 0.0 };
  /** Validation PSNR/SSIM of predicting the mean foreground intensity everywhere (the constant baseline). */
  double ConstantBaselinePSNR{ 0.0 };
  double ConstantBaselineSSIM{ 0.0 };
  int    Rank{ 0 };                   ///< this process's rank (0 without distributed training)
  int    WorldSize{ 1 };              ///< processes that trained together
  double CommunicationSeconds{ 0.0 }; ///< time in c10d collectives (waiting included)
};

/** The checkpoint a training run writes beside its output (weights, optimiser state, progress). */
std::string
CheckpointPath(const std::string & output);

/** Trains the stages asked for, checkpointing every CheckpointInterval iterations, at the end of each stage and
 *  when `stopRequested` becomes true (then it returns with Interrupted set). With Resume, it continues from the
 *  checkpoint: the random draws depend only on (seed, stage, iteration, item), so an interrupted and resumed run
 *  ends with the same weights as an uninterrupted one on the same device, whatever the world size of either.
 *  Distributed (TrainingOptions::DistributedBackend): rank 0 alone writes checkpoints and the model file and
 *  reports progress; a lost rank makes the others throw DistributedError within DistributedTimeoutSeconds. */
TrainingReport
Train(const Dataset &                                       data,
      const TrainingOptions &                               options,
      const std::function<void(const TrainingProgress &)> & progress = {},
      const std::atomic<bool> *                             stopRequested = nullptr);

} // namespace cdm

#endif
