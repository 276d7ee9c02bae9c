/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#include "cdmVolume.h"
#include "cdmError.h"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace cdm
{

Volume
Volume::GeometryCopy(const std::string & description) const
{
  Volume copy;
  copy.Dimension = Dimension;
  copy.Size = Size;
  copy.Spacing = Spacing;
  copy.Origin = Origin;
  copy.Direction = Direction;
  copy.Description = description;
  return copy;
}

Volume
Volume::BoxGeometry(const std::array<int64_t, 3> & index,
                    const std::array<int64_t, 3> & size,
                    const std::string &            description) const
{
  Volume box = GeometryCopy(description);
  box.Size = size;
  for (int a = 0; a < 3; ++a)
  {
    for (int r = 0; r < 3; ++r)
    {
      box.Origin[r] += Direction[3 * r + a] * static_cast<double>(index[a]) * Spacing[a];
    }
  }
  return box;
}

Volume
Volume::EmptyCopy(const std::string & description) const
{
  Volume copy = GeometryCopy(description);
  copy.Allocate();
  return copy;
}

Volume
Volume::View(float * voxels, const std::string & description) const
{
  Volume view = GeometryCopy(description);
  view.ExternalVoxels = voxels;
  return view;
}

namespace
{
template <typename TArray>
std::string
Format(const TArray & values, size_t count)
{
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < count; ++i)
  {
    out << (i ? ", " : "") << values[i];
  }
  out << "]";
  return out.str();
}

bool
Close(double a, double b, double tolerance)
{
  return std::abs(a - b) <= tolerance * std::max(1.0, std::max(std::abs(a), std::abs(b)));
}
} // namespace

bool
SameGeometry(const Volume & a, const Volume & b, std::string * why, double tolerance)
{
  const auto report = [&](const std::string & what, const std::string & va, const std::string & vb) {
    if (why)
    {
      *why = what + " differs: " + va + " in '" + a.Description + "' but " + vb + " in '" + b.Description + "'";
    }
    return false;
  };
  if (a.Size != b.Size)
  {
    return report("size", Format(a.Size, 3), Format(b.Size, 3));
  }
  for (size_t i = 0; i < 3; ++i)
  {
    if (!Close(a.Spacing[i], b.Spacing[i], tolerance))
    {
      return report("spacing", Format(a.Spacing, 3), Format(b.Spacing, 3));
    }
  }
  const double originTolerance = tolerance * std::max({ 1.0, a.Spacing[0], a.Spacing[1], a.Spacing[2] });
  for (size_t i = 0; i < 3; ++i)
  {
    if (std::abs(a.Origin[i] - b.Origin[i]) > originTolerance * 10.0)
    {
      return report("origin", Format(a.Origin, 3), Format(b.Origin, 3));
    }
  }
  for (size_t i = 0; i < 9; ++i)
  {
    if (std::abs(a.Direction[i] - b.Direction[i]) > tolerance)
    {
      return report("direction", Format(a.Direction, 9), Format(b.Direction, 9));
    }
  }
  return true;
}

void
CheckFinite(const Volume & volume)
{
  const int64_t stored = volume.StoredVoxels();
  if (stored == 0 || stored != volume.NumberOfVoxels())
  {
    throw InputError("'" + volume.Description + "': expected " + std::to_string(volume.NumberOfVoxels()) +
                     " voxels, found " + std::to_string(stored));
  }
  const float * voxels = volume.Data();
  for (int64_t i = 0; i < stored; ++i)
  {
    if (!std::isfinite(voxels[i]))
    {
      const int64_t x = i % volume.Size[0];
      const int64_t y = (i / volume.Size[0]) % volume.Size[1];
      const int64_t z = i / (volume.Size[0] * volume.Size[1]);
      throw InputError("'" + volume.Description + "': non-finite voxel (" + std::to_string(voxels[i]) + ") at index [" +
                       std::to_string(x) + ", " + std::to_string(y) + ", " + std::to_string(z) +
                       "]; expected finite intensities");
    }
  }
}

Volume
CropVolume(const Volume & volume, const std::array<int64_t, 3> & index, const std::array<int64_t, 3> & size)
{
  for (int a = 0; a < 3; ++a)
  {
    if (index[a] < 0 || size[a] < 1 || index[a] + size[a] > volume.Size[a])
    {
      throw InputError("cannot crop " + volume.Description + " of size " + Format(volume.Size, 3) + " to index " +
                       Format(index, 3) + ", size " + Format(size, 3) + ": the box must lie inside the volume");
    }
  }
  Volume part = volume.BoxGeometry(index, size, volume.Description);
  part.Allocate();
  for (int64_t z = 0; z < size[2]; ++z)
  {
    for (int64_t y = 0; y < size[1]; ++y)
    {
      const float * from =
        volume.Data() +
        static_cast<std::ptrdiff_t>(index[0] + volume.Size[0] * ((y + index[1]) + volume.Size[1] * (z + index[2])));
      std::copy(from, from + size[0], part.Voxels.begin() + static_cast<std::ptrdiff_t>(size[0] * (y + size[1] * z)));
    }
  }
  return part;
}

} // namespace cdm
