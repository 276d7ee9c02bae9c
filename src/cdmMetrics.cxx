/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#include "cdmMetrics.h"
#include "cdmError.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>

namespace cdm
{

namespace
{
constexpr double SsimSigma = 1.5;
constexpr int    SsimRadius = 5; // an 11-tap window, as in Wang et al. 2004

/** Gaussian smoothing along one axis; borders renormalise the truncated window (no zero bias). */
void
SmoothAxis(std::vector<double> & image, const std::array<int64_t, 3> & size, int axis)
{
  std::vector<double> kernel(2 * SsimRadius + 1);
  for (int k = -SsimRadius; k <= SsimRadius; ++k)
  {
    kernel[k + SsimRadius] = std::exp(-0.5 * k * k / (SsimSigma * SsimSigma));
  }
  const int64_t       stride = axis == 0 ? 1 : (axis == 1 ? size[0] : size[0] * size[1]);
  const int64_t       length = size[axis];
  std::vector<double> line(length);
  std::vector<double> out(image.size());
  for (int64_t z = 0; z < size[2]; ++z)
  {
    for (int64_t y = 0; y < size[1]; ++y)
    {
      for (int64_t x = 0; x < size[0]; ++x)
      {
        const int64_t position[3] = { x, y, z };
        const int64_t index = x + size[0] * (y + size[1] * z);
        double        sum = 0.0;
        double        weight = 0.0;
        for (int k = -SsimRadius; k <= SsimRadius; ++k)
        {
          const int64_t p = position[axis] + k;
          if (p < 0 || p >= length)
          {
            continue;
          }
          sum += kernel[k + SsimRadius] * image[index + k * stride];
          weight += kernel[k + SsimRadius];
        }
        out[index] = sum / weight;
      }
    }
  }
  image.swap(out);
}

void
Smooth(std::vector<double> & image, const std::array<int64_t, 3> & size, bool slicewise)
{
  for (int axis = 0; axis < 3; ++axis)
  {
    if (size[axis] > 1 && !(slicewise && axis == 2))
    {
      SmoothAxis(image, size, axis);
    }
  }
}
} // namespace

ImageMetrics
CompareImages(const std::vector<float> &     reference,
              const std::vector<float> &     prediction,
              const std::array<int64_t, 3> & size,
              double                         dataRange,
              const std::vector<uint8_t> *   mask,
              bool                           slicewise)
{
  const auto n = static_cast<size_t>(size[0] * size[1] * size[2]);
  if (reference.size() != n || prediction.size() != n)
  {
    throw InputError("metrics: reference has " + std::to_string(reference.size()) + " voxels and prediction " +
                     std::to_string(prediction.size()) + "; expected both " + std::to_string(n));
  }
  if (mask && mask->size() != n)
  {
    throw InputError("metrics: mask has " + std::to_string(mask->size()) + " voxels; expected " + std::to_string(n));
  }
  if (!(dataRange > 0.0))
  {
    throw InputError("metrics: data range must be positive");
  }
  std::vector<double> x(reference.begin(), reference.end());
  std::vector<double> y(prediction.begin(), prediction.end());
  std::vector<double> xx(n), yy(n), xy(n);
  for (size_t i = 0; i < n; ++i)
  {
    xx[i] = x[i] * x[i];
    yy[i] = y[i] * y[i];
    xy[i] = x[i] * y[i];
  }
  ImageMetrics metrics;
  double       squared = 0.0;
  double       absolute = 0.0;
  for (size_t i = 0; i < n; ++i)
  {
    if (mask && !(*mask)[i])
    {
      continue;
    }
    const double d = x[i] - y[i];
    squared += d * d;
    absolute += std::abs(d);
    ++metrics.Voxels;
  }
  if (metrics.Voxels == 0)
  {
    throw InputError("metrics: the mask selects no voxel; expected a non-empty mask");
  }
  const auto   count = static_cast<double>(metrics.Voxels);
  const double mse = squared / count;
  metrics.MAE = absolute / count;
  metrics.PSNR = mse > 0.0 ? 10.0 * std::log10(dataRange * dataRange / mse) : std::numeric_limits<double>::infinity();

  Smooth(x, size, slicewise);
  Smooth(y, size, slicewise);
  Smooth(xx, size, slicewise);
  Smooth(yy, size, slicewise);
  Smooth(xy, size, slicewise);
  const double c1 = (0.01 * dataRange) * (0.01 * dataRange);
  const double c2 = (0.03 * dataRange) * (0.03 * dataRange);
  double       ssimSum = 0.0;
  for (size_t i = 0; i < n; ++i)
  {
    if (mask && !(*mask)[i])
    {
      continue;
    }
    const double vx = xx[i] - x[i] * x[i];
    const double vy = yy[i] - y[i] * y[i];
    const double cxy = xy[i] - x[i] * y[i];
    ssimSum += ((2 * x[i] * y[i] + c1) * (2 * cxy + c2)) / ((x[i] * x[i] + y[i] * y[i] + c1) * (vx + vy + c2));
  }
  metrics.SSIM = ssimSum / count;
  return metrics;
}

double
LeastSquaresGain(const Volume & reference, const Volume & prediction, const Volume * mask)
{
  std::string why;
  if (!SameGeometry(reference, prediction, &why) || (mask && !SameGeometry(reference, *mask, &why)))
  {
    throw InputError("metrics: " + why);
  }
  double cross = 0.0, power = 0.0;
  for (size_t i = 0; i < reference.Voxels.size(); ++i)
  {
    if (!mask || mask->Voxels[i] != 0.0f)
    {
      cross += static_cast<double>(reference.Voxels[i]) * prediction.Voxels[i];
      power += static_cast<double>(prediction.Voxels[i]) * prediction.Voxels[i];
    }
  }
  if (!(power > 0.0))
  {
    throw InputError("metrics: " + prediction.Description + " is zero inside the mask; no gain fits it");
  }
  return cross / power;
}

ImageMetrics
CompareVolumes(const Volume & reference, const Volume & prediction, double dataRange, const Volume * mask)
{
  std::string why;
  if (!SameGeometry(reference, prediction, &why))
  {
    throw InputError("metrics: " + why);
  }
  std::vector<uint8_t> maskValues;
  if (mask)
  {
    if (!SameGeometry(reference, *mask, &why))
    {
      throw InputError("metrics: " + why);
    }
    maskValues.resize(mask->Voxels.size());
    for (size_t i = 0; i < maskValues.size(); ++i)
    {
      maskValues[i] = mask->Voxels[i] != 0.0f;
    }
  }
  return CompareImages(
    reference.Voxels, prediction.Voxels, reference.Size, dataRange, mask ? &maskValues : nullptr, false);
}

NormalizationRule
EvaluationRule()
{
  return NormalizationRule::Named("percentile");
}

void
BraSynNormalize(Volume & image, const Volume & brain)
{
  std::string why;
  if (!SameGeometry(image, brain, &why))
  {
    throw InputError("BraSyn normalisation of '" + image.Description + "': " + why);
  }
  std::vector<float> inside;
  for (size_t i = 0; i < image.Voxels.size(); ++i)
  {
    if (brain.Voxels[i] != 0.0f)
    {
      inside.push_back(image.Voxels[i]);
    }
  }
  if (inside.empty())
  {
    throw InputError("BraSyn normalisation of '" + image.Description + "': the brain mask '" + brain.Description +
                     "' selects no voxel");
  }
  const double low = Percentile(inside, 0.5);
  const double high = Percentile(inside, 99.5);
  const double range = std::max(high - low, 1e-12);
  for (size_t i = 0; i < image.Voxels.size(); ++i)
  {
    const double clipped = std::clamp(static_cast<double>(image.Voxels[i]), low, high);
    image.Voxels[i] = brain.Voxels[i] != 0.0f ? static_cast<float>((clipped - low) / range) : 0.0f;
  }
}

std::map<std::string, ImageMetrics>
CompareRegions(const Volume & reference,
               const Volume & prediction,
               double         dataRange,
               const Volume & brain,
               const Volume * segmentation)
{
  std::string why;
  if (!SameGeometry(reference, prediction, &why) || !SameGeometry(reference, brain, &why) ||
      (segmentation && !SameGeometry(reference, *segmentation, &why)))
  {
    throw InputError("metrics: " + why);
  }
  const size_t                                            n = reference.Voxels.size();
  std::map<std::string, std::function<bool(float label)>> rules{ { "brain", [](float) { return true; } } };
  if (segmentation)
  {
    rules["tumour"] = [](float label) { return label > 0.5f; };
    rules["enhancing"] = [](float label) { return std::lround(label) == 3; };
    rules["non_tumour"] = [](float label) { return label <= 0.5f; };
  }
  std::map<std::string, ImageMetrics> regions;
  for (const auto & [name, inside] : rules)
  {
    std::vector<uint8_t> mask(n, 0);
    bool                 any = false;
    for (size_t i = 0; i < n; ++i)
    {
      const float label = segmentation ? segmentation->Voxels[i] : 0.0f;
      mask[i] = brain.Voxels[i] != 0.0f && inside(label);
      any = any || mask[i];
    }
    if (any)
    {
      regions[name] = CompareImages(reference.Voxels, prediction.Voxels, reference.Size, dataRange, &mask, false);
    }
  }
  return regions;
}

namespace
{
/** Ranks 1..n of the values, ties given their mean rank. */
std::vector<double>
Ranks(const std::vector<double> & values)
{
  std::vector<size_t> order(values.size());
  for (size_t i = 0; i < order.size(); ++i)
  {
    order[i] = i;
  }
  std::sort(order.begin(), order.end(), [&values](size_t a, size_t b) { return values[a] < values[b]; });
  std::vector<double> ranks(values.size());
  for (size_t start = 0; start < order.size();)
  {
    size_t end = start + 1;
    while (end < order.size() && values[order[end]] == values[order[start]])
    {
      ++end;
    }
    const double mean = 0.5 * static_cast<double>(start + 1 + end);
    for (size_t k = start; k < end; ++k)
    {
      ranks[order[k]] = mean;
    }
    start = end;
  }
  return ranks;
}

double
PearsonOf(const std::vector<double> & a, const std::vector<double> & b)
{
  const auto n = static_cast<double>(a.size());
  double     meanA = 0.0, meanB = 0.0;
  for (size_t i = 0; i < a.size(); ++i)
  {
    meanA += a[i] / n;
    meanB += b[i] / n;
  }
  double cross = 0.0, varianceA = 0.0, varianceB = 0.0;
  for (size_t i = 0; i < a.size(); ++i)
  {
    cross += (a[i] - meanA) * (b[i] - meanB);
    varianceA += (a[i] - meanA) * (a[i] - meanA);
    varianceB += (b[i] - meanB) * (b[i] - meanB);
  }
  return varianceA > 0.0 && varianceB > 0.0 ? cross / std::sqrt(varianceA * varianceB) : 0.0;
}
} // namespace

UncertaintyFigures
CompareUncertainty(const Volume & reference,
                   const Volume & prediction,
                   const Volume & uncertainty,
                   const Volume & mask,
                   double         worstFraction)
{
  std::string why;
  if (!SameGeometry(reference, prediction, &why) || !SameGeometry(reference, uncertainty, &why) ||
      !SameGeometry(reference, mask, &why))
  {
    throw InputError("uncertainty figures: " + why);
  }
  if (!(worstFraction > 0.0 && worstFraction < 1.0))
  {
    throw InputError("uncertainty figures: the worst fraction must lie in (0, 1), got " +
                     std::to_string(worstFraction));
  }
  std::vector<double> errors, spreads;
  for (size_t i = 0; i < reference.Voxels.size(); ++i)
  {
    if (mask.Voxels[i] != 0.0f)
    {
      errors.push_back(std::abs(static_cast<double>(reference.Voxels[i]) - prediction.Voxels[i]));
      spreads.push_back(uncertainty.Voxels[i]);
    }
  }
  if (errors.empty())
  {
    throw InputError("uncertainty figures: the mask '" + mask.Description + "' selects no voxel");
  }
  UncertaintyFigures figures;
  figures.Fraction = worstFraction;
  figures.Voxels = static_cast<int64_t>(errors.size());
  const std::vector<double> errorRanks = Ranks(errors);
  const std::vector<double> spreadRanks = Ranks(spreads);
  figures.Spearman = PearsonOf(errorRanks, spreadRanks);
  // Positives: the voxels whose error rank lies in the top fraction. AUROC by Mann-Whitney on the spread ranks.
  const double threshold = static_cast<double>(errors.size()) * (1.0 - worstFraction);
  double       positives = 0.0, rankSum = 0.0;
  for (size_t i = 0; i < errors.size(); ++i)
  {
    if (errorRanks[i] > threshold)
    {
      positives += 1.0;
      rankSum += spreadRanks[i];
    }
  }
  const double negatives = static_cast<double>(errors.size()) - positives;
  figures.AUROC = positives > 0.0 && negatives > 0.0
                    ? (rankSum - positives * (positives + 1.0) / 2.0) / (positives * negatives)
                    : 0.5;
  return figures;
}

void
SegmentationOverlap::Add(const float *       reference,
                         const float *       prediction,
                         int64_t             count,
                         const std::string & description)
{
  // Bit r of a label's mask: the label belongs to region r (ET, TC, WT).
  static constexpr std::array<unsigned, 4> regions{ { 0u, 0b110u, 0b100u, 0b111u } };
  const auto                               label = [&](float value, const char * which) {
    const float rounded = std::round(value);
    if (!(std::abs(value - rounded) < 1e-3f) || rounded < 0.0f || rounded > 3.0f)
    {
      throw InputError("'" + description + "': the " + which + " segmentation holds the value " +
                       std::to_string(value) + "; expected labels 0 to 3 (BraTS 2023: 1 necrotic core, 2 oedema, " +
                       "3 enhancing tumour" +
                       (rounded == 4.0f ? "; BraTS 2021 marked enhancing tumour 4: relabel it 3" : "") + ")");
    }
    return regions[static_cast<size_t>(rounded)];
  };
  for (int64_t i = 0; i < count; ++i)
  {
    const unsigned inReference = label(reference[i], "reference");
    const unsigned inPrediction = label(prediction[i], "predicted");
    for (size_t r = 0; r < 3; ++r)
    {
      const bool a = inReference >> r & 1u;
      const bool b = inPrediction >> r & 1u;
      m_Both[r] += a && b;
      m_Reference[r] += a;
      m_Prediction[r] += b;
    }
  }
}

SegmentationDice
SegmentationOverlap::Dice() const
{
  std::array<double, 3> dice{};
  for (size_t r = 0; r < 3; ++r)
  {
    const int64_t total = m_Reference[r] + m_Prediction[r];
    dice[r] = total == 0 ? 1.0 : 2.0 * static_cast<double>(m_Both[r]) / static_cast<double>(total);
  }
  return { dice[0], dice[1], dice[2] };
}

SegmentationDice
CompareSegmentations(const Volume & reference, const Volume & prediction)
{
  std::string why;
  if (!SameGeometry(reference, prediction, &why))
  {
    throw InputError("segmentations '" + reference.Description + "' and '" + prediction.Description +
                     "' lie on different grids: " + why);
  }
  SegmentationOverlap overlap;
  overlap.Add(reference.Data(),
              prediction.Data(),
              reference.NumberOfVoxels(),
              reference.Description + "' and '" + prediction.Description);
  return overlap.Dice();
}

} // namespace cdm
