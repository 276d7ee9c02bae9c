/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
// Tiled C-UNet synthesis of any region (halo-padded, aligned tiles: any region equals the same part of the whole
// image) and the whole chain.
#include "cdmError.h"
#include "cdmModel.h"
#include "cdmModelImpl.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <stdexcept>

namespace cdm
{

/** What a continuation carries between requests: the stream's layers and what identifies the synthesis it belongs to
 *  (plane indices are the image's z). */
struct SynthesisContinuation::State
{
  const Model::Impl *           Networks{ nullptr }; ///< the model it belongs to
  std::vector<float>            RepresentationValues;
  std::string                   Target;
  int                           Samples{ 0 };
  std::map<std::string, double> Scales;
  Precision                     NetworkPrecision{ Precision::Float32 };
  std::array<int64_t, 3>        ImageSize{ { 0, 0, 0 } };
  std::array<int64_t, 4>        InPlaneWindow{ { 0, 0, 0, 0 } }; ///< y begin, y end, x begin, x end (padded)
  int64_t                       SlabPlanes{ 0 };
  int64_t                       WindowStart{ 0 }; ///< the plane the stream's first input plane is
  nn::UNetStreamState           Stream;
  int64_t                       NextInput{ 0 };
  at::Tensor                    Pending; ///< output planes computed, not yet delivered: [K, 1, n, Y', X']
  int64_t                       PendingFirst{ 0 };
  int64_t                       NextOutput{ 0 };
};

SynthesisContinuation::SynthesisContinuation() = default;
SynthesisContinuation::~SynthesisContinuation() = default;
SynthesisContinuation::SynthesisContinuation(SynthesisContinuation &&) noexcept = default;
SynthesisContinuation &
SynthesisContinuation::operator=(SynthesisContinuation &&) noexcept = default;

void
SynthesisContinuation::Reset()
{
  m_State.reset();
}

int64_t
SynthesisContinuation::NextPlane() const
{
  return m_State ? m_State->NextOutput : -1;
}

int64_t
SynthesisContinuation::Continuations() const
{
  return m_Continuations;
}

namespace
{
/** The network window of an output range [begin, end) on an axis of `extent` voxels: padded by the halo, aligned;
 *  the end may pass the image (the part beyond it is zero padding up to the aligned extent). */
std::pair<int64_t, int64_t>
NetworkWindow(int64_t begin, int64_t end, int64_t extent, int64_t halo, int64_t alignment)
{
  const auto alignDown = [&](int64_t v) { return v / alignment * alignment; };
  const auto alignUp = [&](int64_t v) { return (v + alignment - 1) / alignment * alignment; };
  return { std::max<int64_t>(0, alignDown(begin - halo)), std::min(alignUp(extent), alignUp(end + halo)) };
}
} // namespace

Region
Model::RequiredSourceRegion(const Region & output, const std::array<int64_t, 3> & imageSize) const
{
  const ModelConfig & config = m_Impl->Config;
  Region              required = output;
  for (int a = 0; a < 3; ++a)
  {
    if ((config.Dimension == 2 && a == config.SliceAxis) || imageSize[a] <= 1)
    {
      continue;
    }
    if (config.ModelKind == "ddim")
    {
      // Every reverse step widens the receptive field: the image-space baseline reads whole slices / volumes.
      required.Index[a] = 0;
      required.Size[a] = imageSize[a];
      continue;
    }
    const auto window = NetworkWindow(output.Index[a],
                                      output.Index[a] + output.Size[a],
                                      imageSize[a],
                                      config.UNetReceptiveRadius(),
                                      config.UNetAlignment());
    required.Index[a] = window.first;
    required.Size[a] = std::min(window.second, imageSize[a]) - window.first;
  }
  return required;
}

SynthesisResult
Model::SynthesizeRegion(const SourceVolumes &        sources,
                        const Representation &       representation,
                        const Region &               requested,
                        const SynthesisOptions &     options,
                        const ProgressCallback &     progress,
                        const SourceExtent *         extent,
                        const SynthesisDestination & destination,
                        SynthesisContinuation *      continuation) const
{
  RefuseSegmenter(m_Impl->Config);
  CheckSources(sources);
  c10::InferenceMode           guard;
  const ReducedPrecisionScope  precision(m_Impl->Device, options.NetworkPrecision);
  const Impl &                 impl = *m_Impl;
  const ModelConfig &          config = impl.Config;
  const Volume &               first = sources.begin()->second;
  const std::array<int64_t, 3> imageSize = extent ? extent->ImageSize : first.Size;
  const std::array<int64_t, 3> offset = extent ? extent->Buffered.Index : std::array<int64_t, 3>{ 0, 0, 0 };
  if (extent && extent->Buffered.Size != first.Size)
  {
    throw InputError("sources hold " + std::to_string(first.NumberOfVoxels()) +
                     " voxels but their extent says another buffered size");
  }

  Region region = requested;
  if (region.Size[0] == 0 && region.Size[1] == 0 && region.Size[2] == 0)
  {
    region.Size = imageSize;
  }
  const Region required = RequiredSourceRegion(region, imageSize);
  for (int a = 0; a < 3; ++a)
  {
    if (region.Index[a] < 0 || region.Size[a] < 1 || region.Index[a] + region.Size[a] > imageSize[a])
    {
      throw InputError("requested region (index " + std::to_string(region.Index[a]) + ", size " +
                       std::to_string(region.Size[a]) + " on axis " + std::to_string(a) +
                       ") lies outside the image of size " + std::to_string(imageSize[a]));
    }
    if (required.Index[a] < offset[a] || required.Index[a] + required.Size[a] > offset[a] + first.Size[a])
    {
      throw InputError("the sources cover voxels " + std::to_string(offset[a]) + ".." +
                       std::to_string(offset[a] + first.Size[a] - 1) + " on axis " + std::to_string(a) +
                       " but the region needs " + std::to_string(required.Index[a]) + ".." +
                       std::to_string(required.Index[a] + required.Size[a] - 1));
    }
  }
  if (config.ModelKind == "ddim" && required.Size != region.Size)
  {
    // Synthesise whole slices (volumes), then keep the requested part.
    const SynthesisResult whole = SynthesizeRegion(sources, representation, required, options, progress, extent);
    Region                inside = region;
    for (int a = 0; a < 3; ++a)
    {
      inside.Index[a] -= required.Index[a];
    }
    const auto crop = [&](const Volume & volume, float * into) {
      Volume part = CropVolume(volume, inside.Index, inside.Size);
      if (!into)
      {
        return part;
      }
      std::copy(part.Voxels.begin(), part.Voxels.end(), into);
      return part.View(into, part.Description);
    };
    SynthesisResult result;
    result.Image = crop(whole.Image, destination.Image);
    if (whole.Uncertainty.StoredVoxels() > 0)
    {
      result.Uncertainty = crop(whole.Uncertainty, destination.Uncertainty);
    }
    return result;
  }
  // A missing scale is measured on the sources given, which is exact only when they are the whole image.
  std::map<std::string, double> scales = representation.SourceScales;
  const bool wholeImage = !extent || (extent->Buffered.Index == std::array<int64_t, 3>{ { 0, 0, 0 } } &&
                                      extent->Buffered.Size == extent->ImageSize);
  for (const auto & [name, volume] : sources)
  {
    if (!wholeImage && scales.count(name) == 0)
    {
      throw InputError("the representation carries no normalisation scale for source '" + name +
                       "' and only part of the image is given; expected a representation from SampleRepresentation "
                       "on the whole image, or the whole sources");
    }
  }
  CompleteSourceScales(config, sources, scales);
  const int64_t cells = config.Dimension == 2 ? imageSize[config.SliceAxis] : 1;
  const int     expectedDim = config.ModelKind == "cdm" ? config.Network.RepresentationDim : 0;
  if (representation.Cells != cells || representation.Dim != expectedDim ||
      static_cast<int64_t>(representation.Values.size()) !=
        static_cast<int64_t>(representation.Samples) * cells * representation.Dim)
  {
    throw InputError("representation has " + std::to_string(representation.Cells) + " cell(s) of length " +
                     std::to_string(representation.Dim) + "; expected " + std::to_string(cells) + " of length " +
                     std::to_string(expectedDim) + " for these sources");
  }
  const int         samples = representation.Samples;
  const std::string target = ResolveTarget(sources, representation.Target);
  at::Tensor        zAll = torch::from_blob(
    const_cast<float *>(representation.Values.data()), { samples, cells, representation.Dim }, torch::kFloat32);
  if (impl.TargetEmbedding)
  {
    // A unified model's C-UNet is guided by z plus the target's embedding.
    const at::Tensor flat = zAll.reshape({ samples * cells, representation.Dim }).to(impl.Device);
    zAll = impl.GuidanceFor(flat, impl.TargetIndices(target, flat.size(0))).cpu().reshape(zAll.sizes());
  }

  // The region in network layout: batch rows [b0, b0 + nb) and spatial ranges per layout axis (image indices);
  // `shift` maps an image index to the index in the sources' tensor.
  const int64_t        spatialAxes = config.Dimension;
  int64_t              b0 = 0;
  int64_t              nb = 1;
  int64_t              rowShift = 0;
  std::vector<int64_t> start(static_cast<size_t>(spatialAxes)), extentRange(static_cast<size_t>(spatialAxes)),
    tile(static_cast<size_t>(spatialAxes)), shift(static_cast<size_t>(spatialAxes)),
    fullExtent(static_cast<size_t>(spatialAxes)), volumeAxis(static_cast<size_t>(spatialAxes));
  for (int a = 0; a < 3; ++a)
  {
    const int64_t axis = impl.LayoutAxis(a);
    if (axis == 0)
    {
      b0 = region.Index[a];
      nb = region.Size[a];
      rowShift = offset[a];
    }
    else if (axis >= 2)
    {
      start[axis - 2] = region.Index[a];
      extentRange[axis - 2] = region.Size[a];
      tile[axis - 2] = options.TileSize[a] > 0 ? options.TileSize[a] : region.Size[a];
      shift[axis - 2] = offset[a];
      fullExtent[axis - 2] = imageSize[a];
      volumeAxis[axis - 2] = a;
    }
  }

  const int64_t alignment = config.UNetAlignment();
  const int64_t halo = config.UNetReceptiveRadius();

  // The result in network layout: a view of the destination's buffer ([Z, Y, X] of the region), or a new tensor.
  const auto resultTensor = [&](float * buffer) {
    at::Tensor zyx = buffer ? torch::from_blob(buffer, { 1, region.Size[2], region.Size[1], region.Size[0] })
                            : torch::empty({ 1, region.Size[2], region.Size[1], region.Size[0] });
    return impl.ToNetworkLayout(zyx.zero_());
  };
  at::Tensor mean = resultTensor(destination.Image);
  at::Tensor deviation = samples > 1 ? resultTensor(destination.Uncertainty) : at::Tensor();

  // Tiles: every combination of per-axis tile starts.
  std::vector<std::vector<int64_t>> tileStarts(static_cast<size_t>(spatialAxes));
  int64_t                           totalTiles = 1;
  for (int64_t s = 0; s < spatialAxes; ++s)
  {
    for (int64_t p = 0; p < extentRange[s]; p += tile[s])
    {
      tileStarts[s].push_back(p);
    }
    totalTiles *= static_cast<int64_t>(tileStarts[s].size());
  }
  const int64_t perCall = config.Dimension == 3 ? 1 : impl.SlicesPerCall(options, imageSize);
  const int64_t batches = (nb + perCall - 1) / perCall;
  int64_t       done = 0;
  for (int64_t batchStart = 0; batchStart < nb; batchStart += perCall)
  {
    const int64_t count = std::min(perCall, nb - batchStart);
    // The window of the sources each tile reads, in indices of the given (buffered) volumes.
    Region rows;
    rows.Size = first.Size;
    if (config.Dimension == 2)
    {
      rows.Index[config.SliceAxis] = b0 - rowShift + batchStart;
      rows.Size[config.SliceAxis] = count;
    }
    const at::Tensor z =
      zAll.narrow(1, b0 + batchStart, count).reshape({ samples * count, representation.Dim }).to(impl.Device);
    for (int64_t t = 0; t < totalTiles; ++t)
    {
      Region               window = rows;
      at::Tensor           outMean = mean.narrow(0, batchStart, count);
      at::Tensor           outDeviation = samples > 1 ? deviation.narrow(0, batchStart, count) : at::Tensor();
      std::vector<int64_t> cropOffset, cropSize, pads(static_cast<size_t>(2 * spatialAxes));
      int64_t              remainder = t;
      for (int64_t s = 0; s < spatialAxes; ++s)
      {
        const auto &  starts = tileStarts[s];
        const int64_t local = starts[remainder % static_cast<int64_t>(starts.size())];
        remainder /= static_cast<int64_t>(starts.size());
        const int64_t a = start[s] + local;                              // tile start in the image
        const int64_t b = a + std::min(tile[s], extentRange[s] - local); // tile end
        const int64_t size = fullExtent[s];
        const auto [w0, w1] = NetworkWindow(a, b, size, halo, alignment);
        window.Index[volumeAxis[s]] = w0 - shift[s];
        window.Size[volumeAxis[s]] = std::min(w1, size) - w0;
        // constant_pad_nd lists the last axis first: high-end zero padding up to the aligned window.
        pads[static_cast<size_t>(2 * (spatialAxes - 1 - s) + 1)] = w1 - std::min(w1, size);
        cropOffset.push_back(a - w0);
        cropSize.push_back(b - a);
        outMean = outMean.narrow(s + 2, local, b - a);
        if (samples > 1)
        {
          outDeviation = outDeviation.narrow(s + 2, local, b - a);
        }
      }
      // Stores output planes [firstPlane, firstPlane + n) of the tile's network window (first spatial axis): their
      // part inside the tile, averaged over the samples (and their spread).
      const auto store = [&](at::Tensor prediction, int64_t firstPlane) {
        const int64_t begin = std::max(firstPlane, cropOffset[0]);
        const int64_t end = std::min(firstPlane + prediction.size(2), cropOffset[0] + cropSize[0]);
        if (end <= begin)
        {
          return;
        }
        prediction = prediction.narrow(2, begin - firstPlane, end - begin);
        for (int64_t s = 1; s < spatialAxes; ++s)
        {
          prediction = prediction.narrow(s + 2, cropOffset[s], cropSize[s]);
        }
        std::vector<int64_t> perSample{ samples, count };
        for (int64_t d = 1; d < prediction.dim(); ++d)
        {
          perSample.push_back(prediction.size(d));
        }
        prediction = prediction.reshape(perSample).to(torch::kCPU, torch::kFloat32);
        outMean.narrow(2, begin - cropOffset[0], end - begin).copy_(prediction.mean(0));
        if (samples > 1)
        {
          outDeviation.narrow(2, begin - cropOffset[0], end - begin).copy_(prediction.std(0, false));
        }
      };
      if (config.Dimension == 3 && config.ModelKind != "ddim")
      {
        // The C-UNet slab by slab along z (overlap-save: every plane computed once, a slab's activations alive), from
        // the continuation when the previous request ended where this tile starts. Plane indices are the image's z.
        const int64_t                zBegin = window.Index[2] + shift[0]; // where a fresh stream starts
        const int64_t                a = zBegin + cropOffset[0];
        const int64_t                b = a + cropSize[0];
        const int64_t                inputEnd = (fullExtent[0] + alignment - 1) / alignment * alignment;
        const int64_t                bufferedEnd = shift[0] + first.Size[2];
        const std::array<int64_t, 4> inPlane{ window.Index[1] + shift[1],
                                              window.Index[1] + shift[1] + window.Size[1] + pads[3],
                                              window.Index[0] + shift[2],
                                              window.Index[0] + shift[2] + window.Size[0] + pads[1] };
        const int64_t                planeVoxels = samples * (inPlane[1] - inPlane[0]) * (inPlane[3] - inPlane[2]);
        const int64_t budget = options.VoxelsPerCall > 0 ? options.VoxelsPerCall : Impl::DefaultVoxelsPerSlab;
        const int64_t slab = std::max<int64_t>(1, budget / planeVoxels);
        std::unique_ptr<SynthesisContinuation::State> fresh;
        SynthesisContinuation::State *                state = continuation ? continuation->m_State.get() : nullptr;
        if (state && state->Networks == &impl && state->NextOutput == a && state->Samples == samples &&
            state->RepresentationValues == representation.Values && state->Target == target &&
            state->Scales == scales && state->NetworkPrecision == options.NetworkPrecision &&
            state->ImageSize == imageSize && state->InPlaneWindow == inPlane && state->SlabPlanes == slab)
        {
          ++continuation->m_Continuations;
        }
        else
        {
          fresh = std::make_unique<SynthesisContinuation::State>();
          state = fresh.get();
          state->Networks = &impl;
          state->RepresentationValues = representation.Values;
          state->Target = target;
          state->Samples = samples;
          state->Scales = scales;
          state->NetworkPrecision = options.NetworkPrecision;
          state->ImageSize = imageSize;
          state->InPlaneWindow = inPlane;
          state->SlabPlanes = slab;
          state->Stream = impl.UNet->NewStreamState(slab);
          state->WindowStart = zBegin;
          state->NextInput = zBegin;
          state->PendingFirst = zBegin;
          state->NextOutput = a;
        }
        int64_t flushes = 0;
        try
        {
          while (state->NextOutput < b)
          {
            if (state->Pending.defined())
            {
              const int64_t pendingEnd = state->PendingFirst + state->Pending.size(2);
              const int64_t to = std::min(pendingEnd, b);
              if (to > state->NextOutput)
              {
                store(state->Pending.narrow(2, state->NextOutput - state->PendingFirst, to - state->NextOutput),
                      state->NextOutput - zBegin);
                state->NextOutput = to;
              }
              state->Pending =
                to < pendingEnd ? state->Pending.narrow(2, to - state->PendingFirst, pendingEnd - to) : at::Tensor();
              state->PendingFirst = to;
              if (progress)
              {
                const double tileDone = static_cast<double>(state->NextOutput - a) / static_cast<double>(b - a);
                progress((static_cast<double>(done) + tileDone) / static_cast<double>(totalTiles * batches),
                         "C-UNet synthesis");
              }
              continue;
            }
            // The next slab of input: never past the sources given (their halo covers this tile), zero beyond the
            // image up to the aligned end; once all is given, calls with none, while the layers release what their
            // lag still holds (a slab's worth a call).
            int64_t slabEnd = std::min(state->NextInput + slab, inputEnd);
            if (bufferedEnd < fullExtent[0])
            {
              slabEnd = std::min(slabEnd, bufferedEnd);
            }
            if (state->NextInput < inputEnd && slabEnd <= state->NextInput)
            {
              throw std::logic_error("the streamed C-UNet ran out of input at plane " +
                                     std::to_string(state->NextInput) + " before reaching plane " + std::to_string(b));
            }
            if (state->NextInput == inputEnd && ++flushes > inputEnd)
            {
              throw std::logic_error("the streamed C-UNet stopped before plane " + std::to_string(b));
            }
            at::Tensor input;
            if (slabEnd > state->NextInput)
            {
              input = impl.SourceSlab(sources,
                                      scales,
                                      window,
                                      state->NextInput - shift[0],
                                      slabEnd - shift[0],
                                      fullExtent[0] - shift[0],
                                      pads[3],
                                      pads[1]);
            }
            if (input.defined())
            {
              input = input.to(impl.Device);
              if (samples > 1)
              {
                input = input.repeat({ samples, 1, 1, 1, 1 });
              }
            }
            const nn::PlaneRun run =
              impl.UNet->ForwardPlanes({ input, state->NextInput - state->WindowStart, slabEnd == inputEnd },
                                       config.ModelKind == "cdm" ? z : at::Tensor(),
                                       state->Stream);
            state->NextInput = slabEnd;
            if (run.Count() > 0)
            {
              state->PendingFirst = state->WindowStart + run.First;
              state->Pending = run.Values;
            }
          }
        }
        catch (...)
        {
          if (continuation)
          {
            continuation->Reset(); // a half-fed stream must not be continued
          }
          throw;
        }
        if (continuation)
        {
          if (b == fullExtent[0])
          {
            continuation->Reset(); // the image's end: nothing to carry on, and its memory is freed
          }
          else if (fresh)
          {
            continuation->m_State = std::move(fresh);
          }
        }
      }
      else
      {
        const at::Tensor     windowInput = impl.ToNetworkLayout(impl.SourceWindow(sources, scales, window));
        at::Tensor           input = torch::constant_pad_nd(windowInput, pads, 0.0).to(impl.Device);
        std::vector<int64_t> repeats(static_cast<size_t>(input.dim()), 1);
        repeats[0] = samples;
        const at::Tensor batchInput = samples > 1 ? input.repeat(repeats) : input;
        at::Tensor       prediction;
        if (config.ModelKind == "ddim")
        {
          // Starting noise per (seed, sample, slice): the same whatever the batching.
          const uint64_t base = options.Seed * 1000003ull;
          const auto     rowNoise = [&](uint64_t salt) {
            std::vector<at::Tensor> rows;
            std::vector<int64_t>    shape{ 1, 1 };
            for (int64_t d = 2; d < batchInput.dim(); ++d)
            {
              shape.push_back(batchInput.size(d));
            }
            for (int k = 0; k < samples; ++k)
            {
              for (int64_t r = 0; r < count; ++r)
              {
                const auto row = static_cast<uint64_t>(b0 + batchStart + r);
                rows.push_back(
                  SeededNoise(shape, base + static_cast<uint64_t>(k) * 7919ull + row * 104729ull + salt, impl.Device));
              }
            }
            return torch::cat(rows, 0);
          };
          uint64_t   step = 0;
          const auto stepNoise = [&]() { return rowNoise(++step * 15485863ull); };
          prediction = impl.SampleImage(
            batchInput, rowNoise(0), options.Eta < 0.0 ? config.Diffusion.Eta : options.Eta, stepNoise);
        }
        else
        {
          prediction = impl.SynthesizeBatch(batchInput, config.ModelKind == "cdm" ? z : at::Tensor());
        }
        store(prediction, 0);
      }
      ++done;
      if (progress)
      {
        progress(static_cast<double>(done) / static_cast<double>(totalTiles * batches), "C-UNet synthesis");
      }
    }
  }

  // In target intensity units, as volumes of the region: views of the destination's buffers, or copies of the result
  // tensors (then freed).
  const Volume geometry = first.BoxGeometry(
    { region.Index[0] - offset[0], region.Index[1] - offset[1], region.Index[2] - offset[2] }, region.Size, "");
  const auto toVolume = [&](at::Tensor & values, float * buffer, const std::string & description, bool clampAtZero) {
    values.mul_(config.ScaleOf(target));
    if (clampAtZero)
    {
      values.clamp_min_(0.0);
    }
    if (buffer)
    {
      return geometry.View(buffer, description);
    }
    Volume volume = geometry;
    volume.Description = description;
    const at::Tensor zyx = impl.FromNetworkLayout(values).contiguous();
    volume.Voxels.assign(zyx.data_ptr<float>(), zyx.data_ptr<float>() + zyx.numel());
    values = at::Tensor();
    return volume;
  };
  SynthesisResult result;
  result.Image = toVolume(mean, destination.Image, "synthesized " + config.Target, true);
  if (samples > 1)
  {
    result.Uncertainty = toVolume(deviation, destination.Uncertainty, "uncertainty of " + config.Target, false);
  }
  return result;
}

SynthesisResult
Model::Synthesize(const SourceVolumes &    sources,
                  const SynthesisOptions & options,
                  const ProgressCallback & progress) const
{
  if (progress)
  {
    progress(0.0, "source encoder and MDN sampling");
  }
  const Representation representation = SampleRepresentation(sources, options);
  const auto           synthesisProgress = [&](double fraction, const std::string & what) {
    if (progress)
    {
      progress(0.1 + 0.9 * fraction, what);
    }
  };
  return SynthesizeRegion(sources, representation, Region{}, options, synthesisProgress);
}

} // namespace cdm
