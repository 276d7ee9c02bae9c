/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#ifndef cdmMetrics_h
#define cdmMetrics_h

#include "cdmVolume.h"

#include <cstdint>
#include <vector>

namespace cdm
{

/** \brief Image-quality figures of a prediction against a reference. */
struct ImageMetrics
{
  double  PSNR{ 0.0 }; ///< dB, with the given data range
  double  SSIM{ 0.0 }; ///< mean of the SSIM map (Gaussian window, sigma 1.5, K1 0.01, K2 0.03)
  double  MAE{ 0.0 };  ///< mean absolute error
  int64_t Voxels{ 0 }; ///< voxels that entered the means
};

/** PSNR, SSIM and MAE of `prediction` against `reference`, both laid out as `size` (x fastest).
 *  With a mask (nonzero = inside), the means run over the mask only; the SSIM map itself is
 *  computed on the whole image. SSIM uses a 2D window per slice when size[2] == 1 or `slicewise`
 *  is true, else a 3D window. Throws InputError when sizes disagree or the mask is empty. */
ImageMetrics
CompareImages(const std::vector<float> &     reference,
              const std::vector<float> &     prediction,
              const std::array<int64_t, 3> & size,
              double                         dataRange,
              const std::vector<uint8_t> *   mask = nullptr,
              bool                           slicewise = false);

/** The same on two volumes of the same geometry. */
/** The gain g minimising sum (reference - g * prediction)^2 over the mask (every voxel without one): MR intensity
 *  units are arbitrary, so a synthesis is compared after its best global scale. Throws InputError on a geometry
 *  mismatch, and when the prediction is zero inside the mask. */
double
LeastSquaresGain(const Volume & reference, const Volume & prediction, const Volume * mask = nullptr);

ImageMetrics
CompareVolumes(const Volume & reference, const Volume & prediction, double dataRange, const Volume * mask = nullptr);

} // namespace cdm

#endif
