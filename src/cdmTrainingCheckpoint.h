/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#ifndef cdmTrainingCheckpoint_h
#define cdmTrainingCheckpoint_h

// Internal header of the core engine (src/ only): the resumable training checkpoint (weights, Adam moments and
// progress in one safetensors file).
#include "cdmModelImpl.h"

#include <nlohmann/json.hpp>
#include <torch/optim/adam.h>

#include <string>

namespace cdm
{

/** The progress stored under the checkpoint's `training` metadata; throws InputError when there is none. */
nlohmann::json
ReadTrainingState(const safetensors::Header & header, const std::string & path);

/** Saves weights, the Adam moments of `stageParameters` and progress in one file (atomic), so that a kill never
 *  splits them. */
void
SaveCheckpoint(const Model::Impl &               impl,
               const std::string &               path,
               const nlohmann::json &            state,
               const torch::optim::Adam *        optimizer,
               const safetensors::NamedTensors & stageParameters);

/** Puts the stored Adam moments of `stageParameters` back into the optimiser. */
void
RestoreOptimizer(torch::optim::Adam &              optimizer,
                 const safetensors::NamedTensors & stored,
                 const nlohmann::json &            steps,
                 const safetensors::NamedTensors & stageParameters);

} // namespace cdm

#endif
