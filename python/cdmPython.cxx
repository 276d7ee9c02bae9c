/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#include "cdmPython.h"
#include "cdmDataset.h"
#include "cdmError.h"

#include <nlohmann/json.hpp>

#include <atomic>

namespace cdm
{
namespace python
{

namespace
{
FloatArray
ToArray(Volume && volume)
{
  FloatArray array;
  // NumPy order: slowest axis first; a 2D image keeps two axes.
  if (volume.Dimension == 2 && volume.Size[2] == 1)
  {
    array.Shape = { volume.Size[1], volume.Size[0] };
  }
  else
  {
    array.Shape = { volume.Size[2], volume.Size[1], volume.Size[0] };
  }
  array.Values = std::move(volume.Voxels);
  volume.Voxels.clear();
  return array;
}

SynthesisOptions
MakeOptions(int samples, uint64_t seed, double eta, const std::string & precision = "fp32")
{
  if (samples < 1)
  {
    throw InputError("samples must be at least 1, got " + std::to_string(samples));
  }
  SynthesisOptions options;
  options.Samples = samples;
  options.Seed = seed;
  options.Eta = eta;
  options.NetworkPrecision = ParsePrecision(precision);
  return options;
}
} // namespace

void
ImageSet::Add(const std::string &          name,
              const float *                voxels,
              int64_t                      count,
              const std::vector<int64_t> & size,
              const std::vector<double> &  spacing,
              const std::vector<double> &  origin,
              const std::vector<double> &  direction)
{
  const size_t dimension = size.size();
  if (dimension < 2 || dimension > 3 || spacing.size() != dimension || origin.size() != dimension ||
      direction.size() != dimension * dimension)
  {
    throw InputError("image '" + name + "': expected a 2D or 3D image with matching spacing, origin and direction");
  }
  Volume volume;
  volume.Dimension = static_cast<unsigned int>(dimension);
  volume.Description = name;
  for (size_t r = 0; r < dimension; ++r)
  {
    volume.Size[r] = size[r];
    volume.Spacing[r] = spacing[r];
    volume.Origin[r] = origin[r];
    for (size_t c = 0; c < dimension; ++c)
    {
      volume.Direction[3 * r + c] = direction[dimension * r + c];
    }
  }
  if (volume.Size[0] < 1 || volume.Size[1] < 1 || volume.Size[2] < 1 || volume.NumberOfVoxels() != count)
  {
    throw InputError("image '" + name + "': " + std::to_string(count) + " voxels do not fill a grid of " +
                     std::to_string(volume.Size[0]) + "x" + std::to_string(volume.Size[1]) + "x" +
                     std::to_string(volume.Size[2]));
  }
  volume.Voxels.assign(voxels, voxels + count);
  m_Volumes[name] = std::move(volume);
}

std::vector<std::string>
ImageSet::Names() const
{
  std::vector<std::string> names;
  for (const auto & item : m_Volumes)
  {
    names.push_back(item.first);
  }
  return names;
}

FloatArray
RepresentationData::Values() const
{
  FloatArray array;
  array.Values = m_Representation.Values;
  array.Shape = { m_Representation.Samples, m_Representation.Cells, m_Representation.Dim };
  return array;
}

FloatArray
SynthesisData::TakeImage()
{
  return ToArray(std::move(m_Result.Image));
}

FloatArray
SynthesisData::TakeUncertainty()
{
  return ToArray(std::move(m_Result.Uncertainty));
}

ModelHandle::ModelHandle(const std::string & path, const std::string & device)
    : m_Path(path)
    , m_Model(Model::Load(path, device))
{}

std::string
ModelHandle::Device() const
{
  return m_Model.DeviceName();
}
std::string
ModelHandle::Target() const
{
  return m_Model.Config().Target;
}
std::vector<std::string>
ModelHandle::Targets() const
{
  return m_Model.Config().SynthesizedModalities();
}
std::vector<std::string>
ModelHandle::Sources() const
{
  return m_Model.Config().Sources;
}
unsigned int
ModelHandle::Dimension() const
{
  return m_Model.Config().Dimension;
}
std::string
ModelHandle::Preset() const
{
  return m_Model.Config().Preset;
}
std::string
ModelHandle::Kind() const
{
  return m_Model.Config().ModelKind;
}
bool
ModelHandle::SourcesOptional() const
{
  return m_Model.Config().SourcesOptional;
}
int64_t
ModelHandle::NumberOfParameters() const
{
  return m_Model.NumberOfParameters();
}
std::string
ModelHandle::ConfigJson() const
{
  return m_Model.Config().ToJson(2);
}

SynthesisData
ModelHandle::Synthesize(const ImageSet &    sources,
                        int                 samples,
                        uint64_t            seed,
                        double              eta,
                        const std::string & precision,
                        const std::string & target,
                        int64_t             voxelsPerCall) const
{
  SynthesisOptions options = MakeOptions(samples, seed, eta, precision);
  options.Target = target;
  if (voxelsPerCall < 0)
  {
    throw InputError("voxels_per_call must be 0 (automatic) or positive, got " + std::to_string(voxelsPerCall));
  }
  options.VoxelsPerCall = voxelsPerCall;
  return SynthesisData(m_Model.Synthesize(sources.Volumes(), options));
}

SynthesisData
ModelHandle::Segment(const ImageSet & sources, const std::string & precision, bool missingSourcesAsZero) const
{
  SegmentationOptions options;
  options.NetworkPrecision = ParsePrecision(precision);
  options.MissingSourcesAsZero = missingSourcesAsZero;
  SynthesisResult result;
  result.Image = m_Model.Segment(sources.Volumes(), options);
  return SynthesisData(std::move(result));
}

RepresentationData
ModelHandle::Encode(const ImageSet & target) const
{
  const ModelConfig & config = m_Model.Config();
  if (target.Volumes().size() != 1 || config.TargetIndex(target.Volumes().begin()->first) < 0)
  {
    throw InputError("encode: expected one image of a modality the model synthesizes (" +
                     JoinNames(config.SynthesizedModalities()) + ")");
  }
  return RepresentationData(m_Model.Encode(target.Volumes().begin()->second, target.Volumes().begin()->first));
}

RepresentationData
ModelHandle::SampleRepresentation(const ImageSet &    sources,
                                  int                 samples,
                                  uint64_t            seed,
                                  double              eta,
                                  const std::string & target) const
{
  SynthesisOptions options = MakeOptions(samples, seed, eta);
  options.Target = target;
  return RepresentationData(m_Model.SampleRepresentation(sources.Volumes(), options));
}

void
TrainingData::Load(const std::string &              directory,
                   const std::vector<std::string> & modalities,
                   VolumeFileReader &               reader)
{
  m_Data = Dataset::Load(ScanBraTSFolder(directory, modalities), [&reader](const std::string & path) {
    ImageSet read;
    reader.Read(path, "image", read);
    const auto image = read.Volumes().find("image");
    if (image == read.Volumes().end())
    {
      throw InputError("'" + path + "': the reader added no image");
    }
    return image->second;
  });
}

std::string
Train(const TrainingData & data, const TrainingOptions & options, TrainingObserver * observer)
{
  std::atomic<bool>    stop{ false };
  const TrainingReport report = cdm::Train(
    data.Get(),
    options,
    [&](const TrainingProgress & progress) {
      if (observer && !observer->Report(progress))
      {
        stop = true;
      }
    },
    &stop);
  nlohmann::json json;
  json["interrupted"] = report.Interrupted;
  json["seconds"] = report.Seconds;
  json["rank"] = report.Rank;
  json["world_size"] = report.WorldSize;
  json["communication_seconds"] = report.CommunicationSeconds;
  json["constant_baseline"] = { { "psnr", report.ConstantBaselinePSNR }, { "ssim", report.ConstantBaselineSSIM } };
  json["stages"] = nlohmann::json::array();
  for (const auto & stage : report.Stages)
  {
    json["stages"].push_back({ { "stage", stage.Stage },
                               { "first_iteration", stage.FirstIteration },
                               { "last_iteration", stage.LastIteration },
                               { "first_loss", stage.FirstLoss },
                               { "last_loss", stage.LastLoss },
                               { "validation_psnr", stage.ValidationPSNR },
                               { "validation_ssim", stage.ValidationSSIM },
                               { "validation_tumour_psnr", stage.ValidationTumourPSNR },
                               { "validation_dice",
                                 { { "enhancing_tumour", stage.ValidationDice.EnhancingTumour },
                                   { "tumour_core", stage.ValidationDice.TumourCore },
                                   { "whole_tumour", stage.ValidationDice.WholeTumour } } },
                               { "seconds", stage.Seconds } });
  }
  return json.dump();
}

std::vector<std::string>
KnownModalityNames()
{
  return KnownModalities();
}

std::vector<std::string>
BraTSModalityNames()
{
  return BraTSModalities();
}

std::vector<std::string>
DefaultModalityNames(const std::vector<std::string> & targets)
{
  return DefaultModalities(targets);
}

void
SetThreads(int threads)
{
  if (threads > 0)
  {
    SetNumberOfThreads(threads);
  }
}

std::string
Version()
{
  return CDM_VERSION_STRING;
}

} // namespace python
} // namespace cdm
