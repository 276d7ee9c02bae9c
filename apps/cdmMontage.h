/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#ifndef cdmMontage_h
#define cdmMontage_h

#include "cdmVolume.h"

#include <string>
#include <vector>

namespace cdm
{

/** \brief One panel of a montage: an image and how its grey levels are scaled. */
struct MontagePanel
{
  Volume Image;
  /** 0: scale by the image's own robust normalisation (`cdm evaluate`'s rule); > 0: show [0, FixedMaximum]. */
  double FixedMaximum{ 0.0 };
};

/** The index of the slice along `axis` with the most nonzero voxels of `labels` (e.g. a tumour segmentation),
 *  or the middle slice when it has none. */
int64_t
MostLabelledSlice(const Volume & labels, int axis);

/** Writes one slice (along `axis`, index `slice`) of every panel side by side as an 8-bit PNG (atomic write).
 *  All panels must share a size. */
void
WriteMontage(const std::vector<MontagePanel> & panels, int axis, int64_t slice, const std::string & path);

} // namespace cdm

#endif
