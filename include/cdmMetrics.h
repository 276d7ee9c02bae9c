/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#ifndef cdmMetrics_h
#define cdmMetrics_h

#include "cdmVolume.h"

#include "cdmNormalization.h"

#include <cstdint>
#include <array>
#include <map>
#include <string>
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

/** The rule `cdm evaluate` normalises a reference by (99.5th foreground percentile = 1, clipped at 1.5): fixed, so
 *  that figures stay comparable when a model's own training rule changes. */
NormalizationRule
EvaluationRule();

/** BraSyn's intensity protocol (BraTS 2023 synthesis challenge): clip to the 0.5th and 99.5th percentiles of the
 *  voxels inside `brain` (nonzero) and scale that range to [0, 1]; outside the brain 0. Throws InputError when the
 *  mask is empty or its geometry differs. */
void
BraSynNormalize(Volume & image, const Volume & brain);

/** Figures per region (README.md, "Benchmark"; a mean over normal tissue hides the tumour): "brain" (nonzero `brain`),
 *  and with a BraTS segmentation (labels 1 necrotic core, 2 oedema, 3 enhancing tumour) also "tumour" (label > 0),
 *  "enhancing" (label 3) and "non_tumour" (brain, label 0), each inside the brain. The SSIM map is computed on the
 *  whole image and averaged per region. A region without voxels is left out of the map. */
std::map<std::string, ImageMetrics>
CompareRegions(const Volume & reference,
               const Volume & prediction,
               double         dataRange,
               const Volume & brain,
               const Volume * segmentation = nullptr);

/** \brief How well a voxel-wise uncertainty (e.g. the std over K samples) flags the errors. */
struct UncertaintyFigures
{
  double  Spearman{ 0.0 }; ///< rank correlation of uncertainty and |error|
  double  AUROC{ 0.0 };    ///< of the uncertainty as a detector of the worst `fraction` of |error|
  double  Fraction{ 0.1 }; ///< the share of voxels counted as worst
  int64_t Voxels{ 0 };     ///< voxels that entered (inside the mask)
};

/** Spearman's rho between `uncertainty` and |reference - prediction|, and the AUROC of the uncertainty for
 *  flagging the `worstFraction` of voxels with the largest |error| (ties share ranks), inside the mask (nonzero).
 *  Throws InputError when geometries differ or the mask is empty. */
UncertaintyFigures
CompareUncertainty(const Volume & reference,
                   const Volume & prediction,
                   const Volume & uncertainty,
                   const Volume & mask,
                   double         worstFraction = 0.1);

/** \brief Dice overlap of a predicted tumour segmentation with a reference in BraTS's three regions, built from the
 *  labels (1 necrotic core, 2 oedema, 3 enhancing tumour): an empty region in both counts as 1, in one only as 0. */
struct SegmentationDice
{
  double EnhancingTumour{ 0.0 }; ///< ET: label 3
  double TumourCore{ 0.0 };      ///< TC: labels 1 and 3
  double WholeTumour{ 0.0 };     ///< WT: labels 1, 2 and 3
};

/** \brief Accumulates the overlap counts of BraTS's regions over label maps (one or many images: validation sums
 *  them over its items), so that Dice is defined in one place. */
class SegmentationOverlap
{
public:
  /** Adds `count` voxels of a reference and a predicted label map (values 0 to 3). `description` names them in the
   *  InputError thrown for a voxel that is not one of the labels. */
  void
  Add(const float * reference, const float * prediction, int64_t count, const std::string & description = "labels");

  SegmentationDice
  Dice() const;

private:
  // Per region (ET, TC, WT): voxels in both, in the reference, in the prediction.
  std::array<int64_t, 3> m_Both{ { 0, 0, 0 } };
  std::array<int64_t, 3> m_Reference{ { 0, 0, 0 } };
  std::array<int64_t, 3> m_Prediction{ { 0, 0, 0 } };
};

/** Dice of `prediction` against `reference`, both label maps on one grid. Throws InputError naming the file when
 *  the grids differ or a voxel is not a label 0 to 3 (BraTS 2021's enhancing label 4 is named: relabel it 3). */
SegmentationDice
CompareSegmentations(const Volume & reference, const Volume & prediction);

} // namespace cdm

#endif
