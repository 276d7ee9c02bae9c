/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#include "cdmNormalization.h"
#include "cdmError.h"

#include <algorithm>
#include <cmath>

namespace cdm
{

double
Percentile(std::vector<float> & values, double percent)
{
  if (values.empty())
  {
    throw InputError("percentile of an empty set of values");
  }
  const double position = std::clamp(percent, 0.0, 100.0) / 100.0 * static_cast<double>(values.size() - 1);
  const auto   lower = static_cast<size_t>(std::floor(position));
  const auto   upper = std::min(lower + 1, values.size() - 1);
  std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(lower), values.end());
  const double low = values[lower];
  if (upper == lower)
  {
    return low;
  }
  const double high = *std::min_element(values.begin() + static_cast<std::ptrdiff_t>(lower) + 1, values.end());
  return low + (position - static_cast<double>(lower)) * (high - low);
}

namespace
{
double
ForegroundThreshold(const Volume & volume, double fraction)
{
  const float * const begin = volume.Data();
  const float * const end = begin + volume.StoredVoxels();
  std::vector<float>  positive;
  for (const float * v = begin; v != end; ++v)
  {
    if (*v > 0.0f)
    {
      positive.push_back(*v);
    }
  }
  if (positive.empty())
  {
    throw InputError("'" + volume.Description + "': no positive voxel; expected an image with foreground");
  }
  return fraction * Percentile(positive, 99.0);
}
} // namespace

std::vector<uint8_t>
NormalizationRule::ForegroundMask(const Volume & volume) const
{
  const double         threshold = ForegroundThreshold(volume, ForegroundFraction);
  std::vector<uint8_t> mask(static_cast<size_t>(volume.StoredVoxels()));
  std::transform(volume.Data(), volume.Data() + volume.StoredVoxels(), mask.begin(), [threshold](float v) {
    return static_cast<uint8_t>(v > threshold);
  });
  return mask;
}

double
NormalizationRule::ComputeScale(const Volume & volume) const
{
  if (Method != "foreground-percentile-scale")
  {
    throw InputError("normalisation method '" + Method + "' is unknown; expected 'foreground-percentile-scale'");
  }
  const double       threshold = ForegroundThreshold(volume, ForegroundFraction);
  std::vector<float> foreground;
  for (const float * v = volume.Data(); v != volume.Data() + volume.StoredVoxels(); ++v)
  {
    if (*v > threshold)
    {
      foreground.push_back(*v);
    }
  }
  const double scale = Percentile(foreground, UpperPercentile);
  if (!(scale > 0.0) || !std::isfinite(scale))
  {
    throw InputError("'" + volume.Description + "': normalisation scale is not positive");
  }
  return scale;
}

void
NormalizationRule::Apply(std::vector<float> & voxels, double scale) const
{
  Apply(voxels.data(), voxels.size(), scale);
}

void
NormalizationRule::Apply(float * voxels, size_t count, double scale) const
{
  const auto inverse = static_cast<float>(1.0 / scale);
  const auto clip = static_cast<float>(Clip);
  for (size_t i = 0; i < count; ++i)
  {
    voxels[i] = std::clamp(voxels[i] * inverse, 0.0f, clip);
  }
}

NormalizationRule
NormalizationRule::Named(const std::string & name)
{
  NormalizationRule rule;
  if (name == "median")
  {
    rule.UpperPercentile = 50.0;
    rule.Clip = 4.0;
  }
  else if (name != "percentile")
  {
    throw InputError("intensity rule '" + name + "' is unknown; expected percentile or median");
  }
  return rule;
}

} // namespace cdm
