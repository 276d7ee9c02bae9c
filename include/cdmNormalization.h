/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#ifndef cdmNormalization_h
#define cdmNormalization_h

#include "cdmVolume.h"

#include <string>

namespace cdm
{

/** \brief The per-image robust intensity normalisation, defined once and stored in every model file.
 *
 * Foreground = voxels above ForegroundFraction times the 99th percentile of all positive voxels.
 * Scale = the UpperPercentile-th percentile of the foreground. Normalised value = clamp(v / Scale, 0, Clip).
 * Zero stays zero, so zero padding outside the image means "background" for the networks.
 *
 * The default scale is the foreground median: a high percentile is set by the enhancing rim itself in a t1c with a
 * large tumour (so normal tissue's level would depend on the tumour's size), and a clip near it cuts the rim off
 * (on the phantom the rim lies at 2-3.9 times the median, 1.4-2.3 times the 99.5th percentile). The median moves
 * with neither, and a clip at 4 keeps every tissue. Model files store their rule, so older ones keep theirs. */
struct NormalizationRule
{
  std::string Method{ "foreground-percentile-scale" };
  double      UpperPercentile{ 50.0 }; ///< the foreground percentile that maps to 1 (the median by default)
  double      ForegroundFraction{ 0.05 };
  double      Clip{ 4.0 };

  /** The scale (intensity that maps to 1) of one image under this rule. Throws InputError for an empty image. */
  double
  ComputeScale(const Volume & volume) const;

  /** A boolean foreground mask (1/0) of the image under this rule. */
  std::vector<uint8_t>
  ForegroundMask(const Volume & volume) const;

  /** Normalises in place with the given scale. */
  void
  Apply(std::vector<float> & voxels, double scale) const;
};

/** Percentile (0..100, linear interpolation) of the values; the vector is reordered. */
double
Percentile(std::vector<float> & values, double percent);

} // namespace cdm

#endif
