/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#include "cdmTrainingCheckpoint.h"
#include "cdmError.h"

#include <torch/torch.h>

#include <map>

namespace cdm
{

nlohmann::json
ReadTrainingState(const safetensors::Header & header, const std::string & path)
{
  const auto found = header.Metadata.find("training");
  if (found == header.Metadata.end())
  {
    throw InputError("checkpoint '" + path + "' holds no training state");
  }
  return nlohmann::json::parse(found->second);
}

void
SaveCheckpoint(const Model::Impl &               impl,
               const std::string &               path,
               const nlohmann::json &            state,
               const torch::optim::Adam *        optimizer,
               const safetensors::NamedTensors & stageParameters)
{
  safetensors::NamedTensors tensors = impl.NamedParameters();
  nlohmann::json            steps = nlohmann::json::object();
  if (optimizer)
  {
    for (const auto & [name, parameter] : stageParameters)
    {
      const auto found = optimizer->state().find(parameter.unsafeGetTensorImpl());
      if (found == optimizer->state().end())
      {
        continue;
      }
      const auto & adam = static_cast<const torch::optim::AdamParamState &>(*found->second);
      tensors.emplace_back("optimizer." + name + ".exp_avg", adam.exp_avg());
      tensors.emplace_back("optimizer." + name + ".exp_avg_sq", adam.exp_avg_sq());
      steps[name] = adam.step();
    }
  }
  nlohmann::json full = state;
  full["optimizer_steps"] = steps;
  safetensors::Write(
    path,
    { { "cdm", impl.Config.ToJson() }, { "format", "itk-cdm-checkpoint" }, { "training", full.dump() } },
    tensors);
}

void
RestoreOptimizer(torch::optim::Adam &              optimizer,
                 const safetensors::NamedTensors & stored,
                 const nlohmann::json &            steps,
                 const safetensors::NamedTensors & stageParameters)
{
  std::map<std::string, at::Tensor> byName(stored.begin(), stored.end());
  for (const auto & [name, parameter] : stageParameters)
  {
    if (!steps.contains(name))
    {
      continue;
    }
    auto state = std::make_unique<torch::optim::AdamParamState>();
    state->step(steps.at(name).get<int64_t>());
    state->exp_avg(byName.at("optimizer." + name + ".exp_avg").to(parameter.device()));
    state->exp_avg_sq(byName.at("optimizer." + name + ".exp_avg_sq").to(parameter.device()));
    optimizer.state()[parameter.unsafeGetTensorImpl()] = std::move(state);
  }
}

} // namespace cdm
