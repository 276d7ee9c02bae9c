/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
// A segmenter's inference: the tumour labels of a case from its modalities (BraSyn's second score).
#include "cdmError.h"
#include "cdmModel.h"
#include "cdmModelImpl.h"

#include <torch/torch.h>

#include <algorithm>

namespace cdm
{

Volume
Model::Segment(const SourceVolumes &       sources,
               const SegmentationOptions & options,
               const ProgressCallback &    progress) const
{
  const Impl &        impl = *m_Impl;
  const ModelConfig & config = impl.Config;
  if (!config.IsSegmenter())
  {
    throw InputError("this '" + config.ModelKind + "' model synthesizes " + JoinNames(config.SynthesizedModalities()) +
                     " and labels no tumour; expected a segmenter (cdm train --model-kind segmenter)");
  }
  CheckSources(sources, options.MissingSourcesAsZero);
  c10::InferenceMode            guard;
  const ReducedPrecisionScope   precision(impl.Device, options.NetworkPrecision);
  std::map<std::string, double> scales;
  CompleteSourceScales(config, sources, scales);
  const Volume & first = sources.begin()->second;

  // A 2D model's slices a few at a time; a 3D model's whole volume in one call.
  const int     axis = config.Dimension == 2 ? config.SliceAxis : 2;
  const int64_t extent = first.Size[axis];
  int64_t       perCall = extent;
  if (config.Dimension == 2)
  {
    SynthesisOptions budget;
    budget.VoxelsPerCall = options.VoxelsPerCall;
    perCall = impl.SlicesPerCall(budget, first.Size);
  }
  std::vector<at::Tensor> parts; // the most probable label per voxel, window by window, in network layout
  for (int64_t start = 0; start < extent; start += perCall)
  {
    Region window;
    window.Size = first.Size;
    window.Index[axis] = start;
    window.Size[axis] = std::min(perCall, extent - start);
    const at::Tensor           input = impl.ToNetworkLayout(impl.SourceWindow(sources, scales, window)).to(impl.Device);
    const std::vector<int64_t> valid(input.sizes().begin() + 2, input.sizes().end());
    const at::Tensor scores = CropTo(impl.SynthesizeBatch(PadToMultiple(input, config.UNetAlignment()), {}), valid);
    parts.push_back(MostProbableLabels(scores).cpu());
    if (progress)
    {
      progress(static_cast<double>(start + window.Size[axis]) / static_cast<double>(extent), "segmenting");
    }
  }
  // The windows follow one another along the network layout's first axis (a 2D model's slices; one 3D volume).
  const at::Tensor zyx = impl.FromNetworkLayout(torch::cat(parts, 0)).contiguous();
  Volume           labels = first.GeometryCopy("tumour labels");
  labels.Voxels.assign(zyx.data_ptr<float>(), zyx.data_ptr<float>() + zyx.numel());
  return labels;
}

} // namespace cdm
