/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#include "cdmMontage.h"
#include "cdmImageIO.h"
#include "cdmAtomicFile.h"
#include "cdmError.h"
#include "cdmMetrics.h"
#include "cdmNormalization.h"

#include "itkImage.h"
#include "itkImageFileWriter.h"

#include <algorithm>

namespace cdm
{

namespace
{
/** (column axis, row axis) of a slice across `axis`. */
std::pair<int, int>
InPlaneAxes(int axis)
{
  return axis == 2 ? std::make_pair(0, 1) : (axis == 1 ? std::make_pair(0, 2) : std::make_pair(1, 2));
}

size_t
Offset(const Volume & v, int64_t x, int64_t y, int64_t z)
{
  return static_cast<size_t>(x + v.Size[0] * (y + v.Size[1] * z));
}
} // namespace

int64_t
MostLabelledSlice(const Volume & labels, int axis)
{
  std::vector<int64_t> counts(static_cast<size_t>(labels.Size[axis]), 0);
  for (int64_t z = 0; z < labels.Size[2]; ++z)
  {
    for (int64_t y = 0; y < labels.Size[1]; ++y)
    {
      for (int64_t x = 0; x < labels.Size[0]; ++x)
      {
        if (labels.Voxels[Offset(labels, x, y, z)] != 0.0f)
        {
          const int64_t position[3] = { x, y, z };
          ++counts[static_cast<size_t>(position[axis])];
        }
      }
    }
  }
  const auto best = std::max_element(counts.begin(), counts.end());
  return *best > 0 ? best - counts.begin() : labels.Size[axis] / 2;
}

void
WriteMontage(const std::vector<MontagePanel> & panels, int axis, int64_t slice, const std::string & path)
{
  if (panels.empty())
  {
    throw InputError("montage: no image given");
  }
  const Volume & first = panels.front().Image;
  if (axis < 0 || axis > 2 || slice < 0 || slice >= first.Size[axis])
  {
    throw InputError("montage: slice " + std::to_string(slice) + " along axis " + std::to_string(axis) +
                     " is outside the image");
  }
  const auto [columnAxis, rowAxis] = InPlaneAxes(axis);
  const int64_t width = first.Size[columnAxis];
  const int64_t height = first.Size[rowAxis];
  const int64_t gap = 2;
  using PngImage = itk::Image<unsigned char, 2>;
  auto               png = PngImage::New();
  PngImage::SizeType size;
  size[0] = static_cast<itk::SizeValueType>(panels.size() * (width + gap) - gap);
  size[1] = static_cast<itk::SizeValueType>(height);
  png->SetRegions(PngImage::RegionType(size));
  png->Allocate();
  png->FillBuffer(0);
  const NormalizationRule rule = EvaluationRule(); // the display scale `cdm evaluate` uses
  for (size_t p = 0; p < panels.size(); ++p)
  {
    const Volume & image = panels[p].Image;
    if (image.Size != first.Size)
    {
      throw InputError("montage: '" + image.Description + "' differs in size from '" + first.Description + "'");
    }
    double maximum = panels[p].FixedMaximum;
    if (maximum <= 0.0)
    {
      bool anyPositive = std::any_of(image.Voxels.begin(), image.Voxels.end(), [](float v) { return v > 0.0f; });
      maximum = anyPositive ? rule.ComputeScale(image) : 1.0;
    }
    for (int64_t r = 0; r < height; ++r)
    {
      for (int64_t c = 0; c < width; ++c)
      {
        int64_t position[3];
        position[axis] = slice;
        position[columnAxis] = c;
        position[rowAxis] = rowAxis == 1 ? r : height - 1 - r; // superior at the top in coronal/sagittal views
        const double        value = image.Voxels[Offset(image, position[0], position[1], position[2])] / maximum;
        PngImage::IndexType index;
        index[0] = static_cast<itk::IndexValueType>(static_cast<int64_t>(p) * (width + gap) + c);
        index[1] = static_cast<itk::IndexValueType>(r);
        png->SetPixel(index, static_cast<unsigned char>(std::clamp(value, 0.0, 1.0) * 255.0 + 0.5));
      }
    }
  }
  RegisterImageIOFactories();
  WriteAtomically(path, [&](const std::string & temporary) {
    auto writer = itk::ImageFileWriter<PngImage>::New();
    writer->SetInput(png);
    writer->SetFileName(temporary);
    try
    {
      writer->Update();
    }
    catch (const itk::ExceptionObject & e)
    {
      throw InputError("cannot write montage '" + path + "': " + std::string(e.GetDescription()));
    }
  });
}

} // namespace cdm
