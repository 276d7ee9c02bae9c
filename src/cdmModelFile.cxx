/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
// A model's creation, its file (`.cdm`: safetensors with the configuration as JSON) and what it reports.
#include "cdmError.h"
#include "cdmModel.h"
#include "cdmModelImpl.h"

#include <torch/torch.h>

#include <iomanip>
#include <sstream>

namespace cdm
{

Model::Model(std::shared_ptr<Impl> impl)
    : m_Impl(std::move(impl))
{}

Model
Model::Create(const ModelConfig & config, uint64_t seed, const std::string & device)
{
  return Model(std::make_shared<Impl>(config, ToTorchDevice(ResolveDevice(device)), seed));
}

Model
Model::Load(const std::string & path, const std::string & device)
{
  safetensors::Header       header;
  safetensors::NamedTensors tensors = safetensors::Read(path, &header);
  const auto                found = header.Metadata.find("cdm");
  if (found == header.Metadata.end())
  {
    throw ModelFileError("model file '" + path + "': the header has no 'cdm' configuration");
  }
  ModelConfig config;
  try
  {
    config = ModelConfig::FromJson(found->second);
  }
  catch (const ModelFileError & e)
  {
    throw ModelFileError("model file '" + path + "': " + e.what());
  }
  // Before any network is built: a header that claims networks far larger than the tensors the file holds would
  // allocate them before the tensors' shapes are compared. Within a few times the file's own data (already in
  // memory), building them is harmless, and AssignParameters then names the first tensor that differs.
  double held = 0.0;
  for (const auto & [name, tensor] : tensors)
  {
    held += static_cast<double>(tensor.numel());
  }
  try
  {
    config.Validate();
  }
  catch (const InputError & e)
  {
    throw ModelFileError("model file '" + path + "': " + e.what());
  }
  const double expected = Impl::ParameterCount(config);
  if (expected > 4.0 * held + double{ 1 << 20 })
  {
    std::ostringstream message;
    message << "model file '" << path << "': its configuration describes networks of " << std::fixed
            << std::setprecision(0) << expected << " parameters, far more than the " << held
            << " the file holds (a damaged or crafted header)";
    throw ModelFileError(message.str());
  }
  auto impl = std::make_shared<Impl>(config, ToTorchDevice(ResolveDevice(device))); // no draws: the file's weights
  impl->AssignParameters(tensors, path);
  return Model(impl);
}

void
Model::Save(const std::string & path) const
{
  safetensors::Write(path, { { "cdm", m_Impl->Config.ToJson() }, { "format", "itk-cdm" } }, m_Impl->NamedParameters());
}

ModelFileInfo
ReadModelFileInfo(const std::string & path)
{
  const safetensors::Header header = safetensors::ReadHeader(path);
  const auto                found = header.Metadata.find("cdm");
  if (found == header.Metadata.end())
  {
    throw ModelFileError("model file '" + path + "': the header has no 'cdm' configuration");
  }
  ModelFileInfo info;
  try
  {
    info.Config = ModelConfig::FromJson(found->second);
  }
  catch (const ModelFileError & e)
  {
    throw ModelFileError("model file '" + path + "': " + e.what());
  }
  info.FileBytes = static_cast<int64_t>(header.FileBytes);
  info.Tensors = static_cast<int64_t>(header.Entries.size());
  for (const auto & entry : header.Entries)
  {
    info.Parameters += static_cast<int64_t>((entry.End - entry.Begin) / sizeof(float));
  }
  return info;
}

const ModelConfig &
Model::Config() const
{
  return m_Impl->Config;
}

std::string
Model::DeviceName() const
{
  return m_Impl->Device.str();
}

int64_t
Model::NumberOfParameters() const
{
  int64_t count = 0;
  for (const auto & [name, tensor] : m_Impl->NamedParameters())
  {
    count += tensor.numel();
  }
  return count;
}

} // namespace cdm
