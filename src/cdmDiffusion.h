/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#ifndef cdmDiffusion_h
#define cdmDiffusion_h

// Internal header of the core engine (src/ only): the diffusion schedule and the DDIM sampler.
#include "cdmModelConfig.h"

#include <ATen/core/Tensor.h>

#include <functional>
#include <vector>

namespace cdm
{

/** \brief The forward process q(z_t | z_0) = N(sqrt(abar_t) z_0, (1 - abar_t) I) and DDIM reverse steps with an
 *  x0-predicting network. Timesteps are 0-based: t = 0 .. T-1; "t = -1" is the clean sample (abar = 1). */
class DiffusionSchedule
{
public:
  explicit DiffusionSchedule(const DiffusionConfig & config);

  int
  TrainSteps() const
  {
    return static_cast<int>(m_Betas.size());
  }
  const std::vector<double> &
  Betas() const
  {
    return m_Betas;
  }
  const std::vector<double> &
  AlphaBars() const
  {
    return m_AlphaBars;
  }
  /** abar_t, with abar_{-1} = 1. */
  double
  AlphaBar(int t) const;

  /** The sampling timesteps, descending: arange(S) * (T / S), reversed. */
  std::vector<int>
  SamplingTimesteps(int steps) const;

  /** sqrt(abar_t) z0 + sqrt(1 - abar_t) noise. */
  at::Tensor
  QSample(const at::Tensor & z0, int t, const at::Tensor & noise) const;
  /** QSample with a timestep per item: `t` [B] (long), z0 and noise [B, ...]. */
  at::Tensor
  QSample(const at::Tensor & z0, const at::Tensor & t, const at::Tensor & noise) const;

  /** One DDIM step from t to tPrevious given the network's z0 estimate; `noise` is used only when eta > 0. */
  at::Tensor
  Step(const at::Tensor & zt, const at::Tensor & z0Estimate, int t, int tPrevious, double eta, const at::Tensor & noise)
    const;

  /** x0-network: (z_t, t / T as a [B] tensor, t itself) -> z0 estimate. The integer t saves reading the tensor
   *  back (a host synchronisation per step on a GPU). */
  using Denoise = std::function<at::Tensor(const at::Tensor & zt, const at::Tensor & tFraction, int t)>;
  /** Per-step noise for eta > 0 (same shape as z). */
  using NoiseSource = std::function<at::Tensor()>;

  /** Runs the reverse process from zStart at the first sampling timestep down to a clean sample. Differentiable
   *  when the inputs require gradients (DiffIR trains its denoiser through all T steps). */
  at::Tensor
  Sample(const Denoise & denoise, const at::Tensor & zStart, int steps, double eta, const NoiseSource & noise) const;

private:
  std::vector<double> m_Betas;
  std::vector<double> m_AlphaBars;
};

} // namespace cdm

#endif
