/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#include "cdmDiffusion.h"
#include "cdmError.h"

#include <torch/torch.h>

#include <cmath>

namespace cdm
{

DiffusionSchedule::DiffusionSchedule(const DiffusionConfig & config)
{
  const int steps = config.TrainSteps;
  if (steps < 1)
  {
    throw InputError("diffusion: the number of training steps must be at least 1");
  }
  for (int i = 0; i < steps; ++i)
  {
    const double fraction = steps == 1 ? 0.0 : static_cast<double>(i) / (steps - 1);
    if (config.Schedule == "diffir")
    {
      // DiffIR's "linear" schedule: linear in sqrt(beta).
      const double root =
        std::sqrt(config.BetaStart) + fraction * (std::sqrt(config.BetaEnd) - std::sqrt(config.BetaStart));
      m_Betas.push_back(root * root);
    }
    else if (config.Schedule == "linear")
    {
      m_Betas.push_back(config.BetaStart + fraction * (config.BetaEnd - config.BetaStart));
    }
    else
    {
      throw InputError("diffusion: schedule '" + config.Schedule + "' is unknown; expected diffir or linear");
    }
  }
  double product = 1.0;
  for (const double beta : m_Betas)
  {
    product *= 1.0 - beta;
    m_AlphaBars.push_back(product);
  }
}

double
DiffusionSchedule::AlphaBar(int t) const
{
  return t < 0 ? 1.0 : m_AlphaBars.at(static_cast<size_t>(t));
}

std::vector<int>
DiffusionSchedule::SamplingTimesteps(int steps) const
{
  const int total = TrainSteps();
  steps = std::max(1, std::min(steps, total));
  const int        stride = total / steps;
  std::vector<int> timesteps;
  for (int i = steps - 1; i >= 0; --i)
  {
    timesteps.push_back(i * stride + (total - 1 - (steps - 1) * stride)); // the last step lands on T - 1
  }
  return timesteps;
}

at::Tensor
DiffusionSchedule::QSample(const at::Tensor & z0, int t, const at::Tensor & noise) const
{
  const double abar = AlphaBar(t);
  return std::sqrt(abar) * z0 + std::sqrt(1.0 - abar) * noise;
}

at::Tensor
DiffusionSchedule::QSample(const at::Tensor & z0, const at::Tensor & t, const at::Tensor & noise) const
{
  std::vector<int64_t> shape(static_cast<size_t>(z0.dim()), 1);
  shape[0] = z0.size(0);
  const at::Tensor abar =
    torch::tensor(m_AlphaBars, torch::kFloat64).index_select(0, t.cpu()).to(z0.device(), torch::kFloat32).view(shape);
  return abar.sqrt() * z0 + (1.0 - abar).sqrt() * noise;
}

at::Tensor
DiffusionSchedule::Step(const at::Tensor & zt,
                        const at::Tensor & z0Estimate,
                        int                t,
                        int                tPrevious,
                        double             eta,
                        const at::Tensor & noise) const
{
  if (tPrevious < 0)
  {
    return z0Estimate;
  }
  const double     abar = AlphaBar(t);
  const double     abarPrevious = AlphaBar(tPrevious);
  const at::Tensor epsilon = (zt - std::sqrt(abar) * z0Estimate) / std::sqrt(1.0 - abar);
  const double     sigma =
    eta * std::sqrt((1.0 - abarPrevious) / (1.0 - abar)) * std::sqrt(std::max(0.0, 1.0 - abar / abarPrevious));
  at::Tensor previous =
    std::sqrt(abarPrevious) * z0Estimate + std::sqrt(std::max(0.0, 1.0 - abarPrevious - sigma * sigma)) * epsilon;
  if (sigma > 0.0)
  {
    previous = previous + sigma * noise;
  }
  return previous;
}

at::Tensor
DiffusionSchedule::Sample(const Denoise &     denoise,
                          const at::Tensor &  zStart,
                          int                 steps,
                          double              eta,
                          const NoiseSource & noise) const
{
  const std::vector<int> timesteps = SamplingTimesteps(steps);
  at::Tensor             z = zStart;
  for (size_t i = 0; i < timesteps.size(); ++i)
  {
    const int        t = timesteps[i];
    const int        tPrevious = i + 1 < timesteps.size() ? timesteps[i + 1] : -1;
    const at::Tensor fraction = torch::full({ z.size(0) }, static_cast<double>(t) / TrainSteps(), z.options());
    const at::Tensor z0 = denoise(z, fraction, t);
    z = Step(z, z0, t, tPrevious, eta, eta > 0.0 && tPrevious >= 0 ? noise() : at::Tensor());
  }
  return z;
}

} // namespace cdm
