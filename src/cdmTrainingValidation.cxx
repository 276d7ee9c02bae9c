/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#include "cdmTrainingValidation.h"
#include "cdmMetrics.h"

#include <torch/torch.h>

namespace cdm
{

namespace
{
/** The valid (unpadded) part of one item's channel 0, contiguous. */
at::Tensor
ValidPart(const at::Tensor & item, const std::vector<int64_t> & validSize)
{
  at::Tensor part = item[0];
  for (size_t d = 0; d < validSize.size(); ++d)
  {
    part = part.narrow(static_cast<int64_t>(d), 0, validSize[d]);
  }
  return part.contiguous();
}

template <typename T>
std::vector<T>
Values(const at::Tensor & contiguous)
{
  return std::vector<T>(contiguous.data_ptr<T>(), contiguous.data_ptr<T>() + contiguous.numel());
}
} // namespace

ValidationFigures
Validate(const std::vector<Batch> &                       batches,
         const std::function<at::Tensor(const Batch &)> & predict,
         const c10::Device &                              device)
{
  ValidationFigures figures;
  int64_t           items = 0;
  for (const auto & host : batches)
  {
    const Batch      batch = host.To(device);
    const at::Tensor prediction = predict(batch).to(torch::kCPU, torch::kFloat32).contiguous();
    for (int64_t b = 0; b < prediction.size(0); ++b)
    {
      const std::vector<int64_t> & valid = host.ValidSizes[static_cast<size_t>(b)];
      const at::Tensor             reference = ValidPart(host.Target[b], valid);
      const at::Tensor             predicted = ValidPart(prediction[b], valid);
      const at::Tensor             mask = ValidPart(host.Mask[b], valid).to(torch::kUInt8).contiguous();
      const at::Tensor             tumour = ValidPart(host.Tumour[b], valid).to(torch::kUInt8).contiguous();
      if (mask.sum().item<int64_t>() == 0)
      {
        continue;
      }
      // Network layout keeps the last axis fastest, as Volume's x.
      std::array<int64_t, 3> size{ 1, 1, 1 };
      for (int64_t d = 0; d < reference.dim(); ++d)
      {
        size[static_cast<size_t>(reference.dim() - 1 - d)] = reference.size(d);
      }
      const std::vector<float>   r = Values<float>(reference);
      const std::vector<float>   p = Values<float>(predicted);
      const std::vector<uint8_t> m = Values<uint8_t>(mask);
      const ImageMetrics         metrics = CompareImages(r, p, size, 1.0, &m);
      figures.PSNR += metrics.PSNR;
      figures.SSIM += metrics.SSIM;
      ++items;
      if (tumour.sum().item<int64_t>() > 0)
      {
        const std::vector<uint8_t> t = Values<uint8_t>(tumour);
        figures.TumourPSNR += CompareImages(r, p, size, 1.0, &t).PSNR;
        ++figures.TumourItems;
      }
    }
  }
  if (items > 0)
  {
    figures.PSNR /= static_cast<double>(items);
    figures.SSIM /= static_cast<double>(items);
  }
  if (figures.TumourItems > 0)
  {
    figures.TumourPSNR /= figures.TumourItems;
  }
  return figures;
}

SegmentationDice
ValidateSegmentation(const std::vector<Batch> &                       batches,
                     const std::function<at::Tensor(const Batch &)> & predict,
                     const c10::Device &                              device)
{
  SegmentationOverlap overlap;
  for (const auto & host : batches)
  {
    const at::Tensor prediction = predict(host.To(device)).to(torch::kCPU, torch::kFloat32).contiguous();
    for (int64_t b = 0; b < prediction.size(0); ++b)
    {
      const std::vector<int64_t> & valid = host.ValidSizes[static_cast<size_t>(b)];
      const at::Tensor             reference = ValidPart(host.Target[b], valid);
      const at::Tensor             predicted = ValidPart(prediction[b], valid);
      overlap.Add(reference.data_ptr<float>(), predicted.data_ptr<float>(), reference.numel(), "validation");
    }
  }
  return overlap.Dice();
}

} // namespace cdm
