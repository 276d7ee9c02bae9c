/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#include "cdmNormalization.h"
#include "cdmError.h"

#include <algorithm>
#include <cmath>
#include <iterator>

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
std::vector<float>
PositiveVoxels(const Volume & volume)
{
  std::vector<float> positive;
  std::copy_if(volume.Data(), volume.Data() + volume.StoredVoxels(), std::back_inserter(positive), [](float v) {
    return v > 0.0f;
  });
  return positive;
}

double
ForegroundThreshold(std::vector<float> & positive, double fraction, const std::string & description)
{
  if (positive.empty())
  {
    throw InputError("'" + description + "': no positive voxel; expected an image with foreground");
  }
  return fraction * Percentile(positive, 99.0);
}
} // namespace

std::vector<uint8_t>
NormalizationRule::ForegroundMask(const Volume & volume) const
{
  std::vector<float>   positive = PositiveVoxels(volume);
  const double         threshold = ForegroundThreshold(positive, ForegroundFraction, volume.Description);
  std::vector<uint8_t> mask(static_cast<size_t>(volume.StoredVoxels()));
  std::transform(volume.Data(), volume.Data() + volume.StoredVoxels(), mask.begin(), [threshold](float v) {
    return static_cast<uint8_t>(v > threshold);
  });
  return mask;
}

double
NormalizationRule::ComputeScale(const Volume & volume) const
{
  std::vector<float> positive = PositiveVoxels(volume);
  return ScaleOfPositiveVoxels(positive, volume.Description);
}

double
NormalizationRule::ScaleOfPositiveVoxels(std::vector<float> & positive, const std::string & description) const
{
  if (Method != "foreground-percentile-scale")
  {
    throw InputError("normalisation method '" + Method + "' is unknown; expected 'foreground-percentile-scale'");
  }
  // The threshold is positive, so the foreground is the positive voxels above it.
  const double threshold = ForegroundThreshold(positive, ForegroundFraction, description);
  positive.erase(std::remove_if(positive.begin(), positive.end(), [threshold](float v) { return !(v > threshold); }),
                 positive.end());
  const double scale = Percentile(positive, UpperPercentile);
  if (!(scale > 0.0) || !std::isfinite(scale))
  {
    throw InputError("'" + description + "': normalisation scale is not positive");
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
