/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
// The C-UNet streamed along its first spatial axis (overlap-save): each layer keeps only the input planes its later
// outputs need, so a volume passes slab by slab with every plane computed once and no halo recomputed.
#include "cdmNetworks.h"

#include <torch/torch.h>

#include <algorithm>

namespace cdm
{
namespace nn
{

namespace
{
/** SiLU on a tensor of one's own (a layer's fresh output). */
torch::Tensor
SiluInPlace(torch::Tensor x)
{
  return torch::silu_(x);
}

/** Applies a per-plane operation to a run (nothing to do for an empty one). */
template <typename Operation>
PlaneRun
Map(const PlaneRun & run, Operation && operation)
{
  return { run.Count() > 0 ? operation(run.Values) : torch::Tensor(), run.First, run.Last };
}

/** `planes`, or a copy of them when they are a view that keeps more than twice their size of storage alive (the
 *  last plane of a slab that a 3x3 convolution still needs would otherwise hold the whole slab). */
torch::Tensor
Compact(const torch::Tensor & planes)
{
  const auto held = static_cast<int64_t>(planes.storage().nbytes()) / static_cast<int64_t>(planes.element_size());
  return 2 * planes.numel() < held ? planes.clone() : planes;
}
} // namespace

void
PlaneQueue::Push(const torch::Tensor & chunk)
{
  if (chunk.defined() && chunk.size(2) > 0)
  {
    m_Chunks.push_back(Compact(chunk));
    m_End += chunk.size(2);
  }
}

torch::Tensor
PlaneQueue::Planes(int64_t begin, int64_t end) const
{
  if (begin < m_First || end > m_End || end <= begin)
  {
    throw std::logic_error("planes [" + std::to_string(begin) + ", " + std::to_string(end) + ") are not all queued ([" +
                           std::to_string(m_First) + ", " + std::to_string(m_End) + "))");
  }
  std::vector<torch::Tensor> parts;
  int64_t                    chunkFirst = m_First;
  for (const torch::Tensor & chunk : m_Chunks)
  {
    const int64_t chunkEnd = chunkFirst + chunk.size(2);
    const int64_t from = std::max(begin, chunkFirst);
    const int64_t to = std::min(end, chunkEnd);
    if (from < to)
    {
      parts.push_back(chunk.narrow(2, from - chunkFirst, to - from));
    }
    if (chunkEnd >= end)
    {
      break;
    }
    chunkFirst = chunkEnd;
  }
  return parts.size() == 1 ? parts.front() : torch::cat(parts, 2);
}

void
PlaneQueue::DropBefore(int64_t plane)
{
  plane = std::min(plane, m_End);
  while (!m_Chunks.empty() && m_First < plane)
  {
    const int64_t count = m_Chunks.front().size(2);
    if (m_First + count <= plane)
    {
      m_Chunks.pop_front();
      m_First += count;
    }
    else
    {
      m_Chunks.front() = Compact(m_Chunks.front().narrow(2, plane - m_First, m_First + count - plane));
      m_First = plane;
    }
  }
  m_First = std::max(m_First, plane);
}

void
PlaneAligner::Push(int side, const PlaneRun & run)
{
  m_Ended[side] = m_Ended[side] || run.Last;
  if (run.Count() == 0)
  {
    return;
  }
  if (run.First != m_Received[side])
  {
    throw std::logic_error("planes must arrive in order (expected plane " + std::to_string(m_Received[side]) +
                           ", got " + std::to_string(run.First) + ")");
  }
  m_Queued[side].Push(run.Values);
  m_Received[side] += run.Count();
}

PlaneAligner::Taken
PlaneAligner::Take()
{
  Taken         taken;
  const int64_t end = std::min(m_Received[0], m_Received[1]);
  taken.First = m_Taken;
  taken.Last = m_Ended[0] && m_Ended[1] && m_Received[0] == m_Received[1];
  if (end <= m_Taken)
  {
    return taken;
  }
  taken.Side0 = m_Queued[0].Planes(m_Taken, end);
  taken.Side1 = m_Queued[1].Planes(m_Taken, end);
  for (auto & queue : m_Queued)
  {
    queue.DropBefore(end);
  }
  m_Taken = end;
  return taken;
}

PlaneRun
ConvImpl::ForwardPlanes(const PlaneRun & input, ConvStreamState & state)
{
  if (m_Kernel == 1)
  {
    return Map(input, [&](const torch::Tensor & x) { return forward(x); });
  }
  if (input.Count() > 0)
  {
    if (input.First != state.Received)
    {
      throw std::logic_error("convolution planes must arrive in order");
    }
    state.Pending.Push(input.Values);
    state.Received += input.Count();
  }
  // A 3x3 output plane needs its neighbours on both sides (zero beyond the ends); a 2x2 stride-2 one its own cell.
  // The end's padding only once the input has ended: before that, the planes beyond are merely not here yet.
  const int64_t half = m_Stride == 1 ? m_Kernel / 2 : 0;
  const int64_t begin = state.Emitted;
  const int64_t available =
    m_Stride == 1 ? (input.Last ? state.Received : state.Received - half) : state.Received / m_Stride;
  const int64_t end = state.MaxPlanes > 0 ? std::min(available, begin + state.MaxPlanes) : available;
  const bool    ended = input.Last && end == available;
  if (end <= begin)
  {
    return { torch::Tensor(), begin, ended };
  }
  const int64_t inBegin = m_Stride == 1 ? std::max<int64_t>(0, begin - half) : begin * m_Stride;
  const int64_t inEnd = m_Stride == 1 ? std::min(state.Received, end + half) : end * m_Stride;
  torch::Tensor x = state.Pending.Planes(inBegin, inEnd);
  const int64_t front = std::max<int64_t>(0, half - begin);
  const int64_t back = std::max<int64_t>(0, end + half - state.Received);
  if (front > 0 || back > 0)
  {
    std::vector<int64_t> pads(static_cast<size_t>(2 * (x.dim() - 2)), 0);
    pads[pads.size() - 2] = front; // constant_pad_nd lists the last axis first
    pads[pads.size() - 1] = back;
    x = torch::constant_pad_nd(x, pads, 0.0);
  }
  // Padding on the other axes only: the streamed axis is padded above, where the image really ends.
  const std::vector<int64_t> padding{ 0, half, half };
  const std::vector<int64_t> stride(3, m_Stride);
  torch::Tensor              output = m_Dimension == 2 ? torch::conv2d(x,
                                                          m_Weight,
                                                          m_Bias,
                                                          std::vector<int64_t>(stride.begin(), stride.begin() + 2),
                                                          std::vector<int64_t>(padding.begin(), padding.begin() + 2))
                                                       : torch::conv3d(x, m_Weight, m_Bias, stride, padding);
  const int64_t              keepFrom = m_Stride == 1 ? std::max<int64_t>(0, end - half) : end * m_Stride;
  state.Pending.DropBefore(keepFrom);
  state.Emitted = end;
  return { output, begin, ended };
}

PlaneRun
ResidualBlockImpl::ForwardPlanes(const PlaneRun & x, const torch::Tensor & condition, ResidualStreamState & state)
{
  PlaneRun h = Map(x, [&](const torch::Tensor & v) { return SiluInPlace(m_Norm1(v)); });
  h = m_Conv1->ForwardPlanes(h, state.Conv1);
  h = Map(h, [&](const torch::Tensor & v) {
    torch::Tensor normalised = m_Norm2(v);
    if (m_Film)
    {
      const auto gammaBeta = Modulation(condition, normalised);
      normalised.mul_(gammaBeta.first).add_(gammaBeta.second);
    }
    return torch::silu_(normalised);
  });
  state.Shortcut.Push(0, m_Conv2->ForwardPlanes(h, state.Conv2));
  state.Shortcut.Push(1, Map(x, [&](const torch::Tensor & v) { return m_Skip ? m_Skip(v) : v; }));
  const PlaneAligner::Taken taken = state.Shortcut.Take();
  torch::Tensor             residual = taken.Side0;
  return { residual.defined() ? residual.add_(taken.Side1) : residual, taken.First, taken.Last };
}

EncoderStreamState
ImageEncoderImpl::NewStreamState() const
{
  EncoderStreamState state;
  state.Blocks.resize(m_Blocks.size());
  state.Downsamplers.resize(m_Downsamplers.size());
  return state;
}

PlaneRun
ImageEncoderImpl::FeaturesPlanes(const PlaneRun & x, EncoderStreamState & state)
{
  // Features()' layers in its order.
  PlaneRun h =
    Map(m_Stem->ForwardPlanes(x, state.Stem), [](const torch::Tensor & v) { return torch::leaky_relu(v, 0.1); });
  size_t block = 0;
  for (size_t level = 0; level < m_Downsamplers.size(); ++level)
  {
    for (int b = 0; b < m_BlocksPerLevel[level]; ++b, ++block)
    {
      h = m_Blocks[block]->ForwardPlanes(h, torch::Tensor(), state.Blocks[block]);
    }
    h = m_Downsamplers[level]->ForwardPlanes(h, state.Downsamplers[level]);
  }
  return h;
}

UNetStreamState
CrossConditionedUNetImpl::NewStreamState(int64_t maxPlanes) const
{
  UNetStreamState state;
  for (const auto & level : m_Down)
  {
    state.Down.emplace_back(level.size());
  }
  state.Downsamplers.resize(m_Downsamplers.size());
  state.UpConvs.resize(m_UpConvs.size());
  state.Skips.resize(m_Up.size());
  for (const auto & level : m_Up)
  {
    state.Up.emplace_back(level.size());
  }
  std::vector<ConvStreamState *> convs{ &state.Stem, &state.Middle.Conv1, &state.Middle.Conv2, &state.Out };
  for (auto * blocks : { &state.Down, &state.Up })
  {
    for (auto & level : *blocks)
    {
      for (auto & block : level)
      {
        convs.push_back(&block.Conv1);
        convs.push_back(&block.Conv2);
      }
    }
  }
  for (auto * layers : { &state.Downsamplers, &state.UpConvs })
  {
    for (auto & conv : *layers)
    {
      convs.push_back(&conv);
    }
  }
  for (ConvStreamState * conv : convs)
  {
    conv->MaxPlanes = maxPlanes;
  }
  return state;
}

PlaneRun
CrossConditionedUNetImpl::ForwardPlanes(const PlaneRun & x, const torch::Tensor & z, UNetStreamState & state)
{
  // forward()'s layers in its order; a layer that has no complete plane yet passes an empty run on, and each run
  // says whether its producer has ended.
  PlaneRun h = m_Stem->ForwardPlanes(x, state.Stem);
  for (size_t level = 0; level < m_Down.size(); ++level)
  {
    for (size_t b = 0; b < m_Down[level].size(); ++b)
    {
      h = m_Down[level][b]->ForwardPlanes(h, z, state.Down[level][b]);
    }
    if (level < state.Skips.size())
    {
      state.Skips[level].Push(1, h);
    }
    if (level < m_Downsamplers.size())
    {
      h = m_Downsamplers[level]->ForwardPlanes(h, state.Downsamplers[level]);
    }
  }
  h = m_Middle->ForwardPlanes(h, z, state.Middle);
  for (int level = static_cast<int>(m_Up.size()) - 1; level >= 0; --level)
  {
    const PlaneRun upsampled{ h.Count() > 0 ? Upsample2(h.Values) : torch::Tensor(), 2 * h.First, h.Last };
    state.Skips[level].Push(0, m_UpConvs[level]->ForwardPlanes(upsampled, state.UpConvs[level]));
    const PlaneAligner::Taken taken = state.Skips[level].Take();
    h = { taken.Side0.defined() ? torch::cat({ taken.Side0, taken.Side1 }, 1) : torch::Tensor(),
          taken.First,
          taken.Last };
    for (size_t b = 0; b < m_Up[level].size(); ++b)
    {
      h = m_Up[level][b]->ForwardPlanes(h, z, state.Up[level][b]);
    }
  }
  h = Map(h, [&](const torch::Tensor & v) { return SiluInPlace(m_OutNorm(v)); });
  return m_Out->ForwardPlanes(h, state.Out);
}

} // namespace nn
} // namespace cdm
