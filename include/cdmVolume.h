/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#ifndef cdmVolume_h
#define cdmVolume_h

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace cdm
{

/** \brief A scalar image the core engine works on: float voxels with ITK's physical geometry.
 *
 * Voxels are stored with x fastest (ITK's buffer order): index = x + X * (y + Y * z).
 * A 2D image has Dimension 2 and Size[2] == 1. No ITK type appears here so that the core
 * engine builds without ITK. A Volume owns its voxels (Voxels), or views voxels owned elsewhere
 * (ExternalVoxels: an ITK image's buffer), so that the filters pass whole images without copying them. */
struct Volume
{
  unsigned int           Dimension{ 3 };
  std::array<int64_t, 3> Size{ { 1, 1, 1 } };
  std::array<double, 3>  Spacing{ { 1.0, 1.0, 1.0 } };
  std::array<double, 3>  Origin{ { 0.0, 0.0, 0.0 } };
  std::array<double, 9>  Direction{ { 1, 0, 0, 0, 1, 0, 0, 0, 1 } };
  std::vector<float>     Voxels;
  /** Voxels owned by someone else (x fastest, NumberOfVoxels() of them), used instead of Voxels when set. The owner
   *  must outlive every use; copies of this Volume view the same voxels. Read voxels through Data(). */
  float * ExternalVoxels{ nullptr };
  /** Where the data came from (a file name or a modality), used in error messages. */
  std::string Description;

  int64_t
  NumberOfVoxels() const
  {
    return Size[0] * Size[1] * Size[2];
  }

  /** The voxels, owned or viewed. */
  const float *
  Data() const
  {
    return ExternalVoxels ? ExternalVoxels : Voxels.data();
  }
  float *
  Data()
  {
    return ExternalVoxels ? ExternalVoxels : Voxels.data();
  }

  /** Voxels held (owned or viewed): NumberOfVoxels() for a complete volume, 0 for geometry only. */
  int64_t
  StoredVoxels() const
  {
    return ExternalVoxels ? NumberOfVoxels() : static_cast<int64_t>(Voxels.size());
  }

  /** A view of `voxels` with this volume's geometry (nothing copied; `voxels` must hold NumberOfVoxels()). */
  Volume
  View(float * voxels, const std::string & description) const;

  /** Allocates Voxels (zero-filled) for the current Size; drops a view. */
  void
  Allocate()
  {
    ExternalVoxels = nullptr;
    Voxels.assign(static_cast<size_t>(NumberOfVoxels()), 0.0f);
  }

  /** A volume of the same geometry (size, spacing, origin, direction) without voxels. */
  Volume
  GeometryCopy(const std::string & description) const;

  /** The geometry of the box [index, index + size) of this volume, without voxels: its origin moves with the index
   *  so that every voxel keeps its physical point. `index` may lie outside (no check). */
  Volume
  BoxGeometry(const std::array<int64_t, 3> & index,
              const std::array<int64_t, 3> & size,
              const std::string &            description) const;

  /** A volume of the same geometry (size, spacing, origin, direction), zero-filled. */
  Volume
  EmptyCopy(const std::string & description) const;
};

/** True when both volumes share size, spacing, origin and direction (within a relative tolerance).
 *  Otherwise false, and `why` (when given) says which property differs and how. */
bool
SameGeometry(const Volume & a, const Volume & b, std::string * why = nullptr, double tolerance = 1e-4);

/** Throws InputError naming the volume's Description when a voxel is NaN or infinite, or no voxels exist. */
void
CheckFinite(const Volume & volume);

/** The box [index, index + size) of `volume` as a volume of its own whose origin keeps every voxel at the same
 *  physical point. Throws InputError when the box leaves the volume. */
Volume
CropVolume(const Volume & volume, const std::array<int64_t, 3> & index, const std::array<int64_t, 3> & size);

} // namespace cdm

#endif
