/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#include "cdmDistributed.h"
#include "cdmError.h"

#include <torch/torch.h>
#ifdef CDM_WITH_DISTRIBUTED
#  include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#  include <torch/csrc/distributed/c10d/TCPStore.hpp>
#  ifdef CDM_WITH_NCCL
#    include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#  endif
#endif

#include <cstdlib>
#include <map>

namespace cdm
{

namespace
{
/** An environment variable as a whole number, or `fallback` when unset; InputError when it is not one. */
int
IntegerVariable(const char * name, int fallback)
{
  const char * text = std::getenv(name);
  if (!text || !*text)
  {
    return fallback;
  }
  char *     end = nullptr;
  const long value = std::strtol(text, &end, 10);
  if (*end != '\0' || value < 0 || value > 1000000)
  {
    throw InputError(std::string("distributed training: environment variable ") + name + "='" + text +
                     "' is not a whole number; torchrun sets it");
  }
  return static_cast<int>(value);
}
} // namespace

DistributedEnvironment
DistributedEnvironment::FromProcess()
{
  DistributedEnvironment environment;
  environment.WorldSize = IntegerVariable("WORLD_SIZE", 1);
  if (environment.WorldSize < 1)
  {
    throw InputError("distributed training: WORLD_SIZE must be at least 1");
  }
  if (environment.WorldSize == 1)
  {
    return environment;
  }
  if (!std::getenv("RANK") || !std::getenv("MASTER_PORT"))
  {
    throw InputError("distributed training: WORLD_SIZE is " + std::to_string(environment.WorldSize) +
                     " but RANK or MASTER_PORT is unset; launch with torchrun (or set RANK, WORLD_SIZE, "
                     "MASTER_ADDR, MASTER_PORT)");
  }
  environment.Rank = IntegerVariable("RANK", 0);
  environment.LocalRank = IntegerVariable("LOCAL_RANK", environment.Rank);
  environment.MasterPort = IntegerVariable("MASTER_PORT", 29500);
  if (const char * address = std::getenv("MASTER_ADDR"); address && *address)
  {
    environment.MasterAddress = address;
  }
  if (environment.Rank >= environment.WorldSize)
  {
    throw InputError("distributed training: RANK " + std::to_string(environment.Rank) + " is not below WORLD_SIZE " +
                     std::to_string(environment.WorldSize));
  }
  return environment;
}

struct ProcessGroup::Impl
{
  int                       Rank{ 0 };
  int                       WorldSize{ 1 };
  std::string               Backend;
  std::chrono::milliseconds Timeout{ 0 };
  double                    Seconds{ 0.0 };
#ifdef CDM_WITH_DISTRIBUTED
  c10::intrusive_ptr<c10d::Store>   Store;
  c10::intrusive_ptr<c10d::Backend> Group;
#endif

  std::string
  Who() const
  {
    return "rank " + std::to_string(Rank) + " of " + std::to_string(WorldSize);
  }

  /** Runs a collective, timing it and turning c10d's failures into DistributedError. */
  template <typename TCall>
  void
  Collective(const char * what, TCall && call)
  {
    const auto start = std::chrono::steady_clock::now();
    try
    {
      call();
    }
    catch (const std::exception & e)
    {
      throw DistributedError("distributed training, " + Who() + ": " + what + " failed (" + e.what() +
                             "); another rank stopped, died or fell more than " +
                             std::to_string(Timeout.count() / 1000) + " s behind");
    }
    Seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
};

ProcessGroup::ProcessGroup(const DistributedEnvironment & environment,
                           const std::string &            backend,
                           const c10::Device &            device,
                           std::chrono::milliseconds      timeout)
    : m_Impl(std::make_unique<Impl>())
{
  Impl & impl = *m_Impl;
  impl.Rank = environment.Rank;
  impl.WorldSize = environment.WorldSize;
  impl.Timeout = timeout;
  impl.Backend = backend == "auto" ? (device.is_cuda() ? "nccl" : "gloo") : backend;
  if (impl.Backend != "gloo" && impl.Backend != "nccl")
  {
    throw InputError("--dist-backend '" + backend + "' is unknown; expected auto, gloo or nccl");
  }
#ifndef CDM_WITH_DISTRIBUTED
  throw InputError("distributed training (WORLD_SIZE " + std::to_string(environment.WorldSize) +
                   "): this build of itk-cdm has none; it needs c10d's Gloo headers (Debian's libgloo-dev) when "
                   "it is built (scripts/install-deps.sh installs them)");
#else
#  ifndef CDM_WITH_NCCL
  if (impl.Backend == "nccl")
  {
    throw InputError("--dist-backend nccl: this build of itk-cdm has no NCCL (nccl.h was not found when it was "
                     "built); use gloo");
  }
#  endif
  if (impl.Backend == "nccl" && !device.is_cuda())
  {
    throw InputError("--dist-backend nccl needs a CUDA device; the run is on " + device.str() + " (use gloo)");
  }
  try
  {
    c10d::TCPStoreOptions options;
    options.port = static_cast<uint16_t>(environment.MasterPort);
    options.isServer = environment.Rank == 0;
    options.numWorkers = environment.WorldSize;
    options.waitWorkers = true;
    options.timeout = timeout;
    impl.Store = c10::make_intrusive<c10d::TCPStore>(environment.MasterAddress, options);
    if (impl.Backend == "gloo")
    {
      auto glooOptions = c10d::ProcessGroupGloo::Options::create(timeout);
      glooOptions->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      impl.Group =
        c10::make_intrusive<c10d::ProcessGroupGloo>(impl.Store, environment.Rank, environment.WorldSize, glooOptions);
    }
#  ifdef CDM_WITH_NCCL
    else
    {
      auto ncclOptions = c10d::ProcessGroupNCCL::Options::create();
      ncclOptions->timeout = timeout;
      impl.Group =
        c10::make_intrusive<c10d::ProcessGroupNCCL>(impl.Store, environment.Rank, environment.WorldSize, ncclOptions);
    }
#  endif
  }
  catch (const std::exception & e)
  {
    throw DistributedError("distributed training, " + impl.Who() + ": joining the process group at " +
                           environment.MasterAddress + ":" + std::to_string(environment.MasterPort) + " failed (" +
                           e.what() + ")");
  }
#endif
}

ProcessGroup::~ProcessGroup() = default;

int
ProcessGroup::Rank() const
{
  return m_Impl->Rank;
}

int
ProcessGroup::WorldSize() const
{
  return m_Impl->WorldSize;
}

std::string
ProcessGroup::BackendName() const
{
  return m_Impl->Backend;
}

double
ProcessGroup::CommunicationSeconds() const
{
  return m_Impl->Seconds;
}

void
ProcessGroup::Broadcast(std::vector<at::Tensor> & tensors)
{
#ifdef CDM_WITH_DISTRIBUTED
  m_Impl->Collective("broadcast from rank 0", [&] {
    for (at::Tensor & tensor : tensors)
    {
      std::vector<at::Tensor> one{ tensor };
      m_Impl->Group->broadcast(one)->wait();
    }
  });
#else
  (void)tensors;
#endif
}

void
ProcessGroup::AllReduceSum(std::vector<at::Tensor> & tensors)
{
#ifdef CDM_WITH_DISTRIBUTED
  if (tensors.empty())
  {
    return;
  }
  m_Impl->Collective("all-reduce", [&] {
    // One bucket per dtype: flattened, summed in one call, copied back.
    std::map<c10::ScalarType, std::vector<size_t>> byType;
    for (size_t i = 0; i < tensors.size(); ++i)
    {
      byType[tensors[i].scalar_type()].push_back(i);
    }
    for (const auto & [type, indices] : byType)
    {
      std::vector<at::Tensor> flat;
      for (const size_t i : indices)
      {
        flat.push_back(tensors[i].reshape({ -1 }));
      }
      std::vector<at::Tensor> bucket{ torch::cat(flat) };
      m_Impl->Group->allreduce(bucket)->wait();
      int64_t offset = 0;
      for (const size_t i : indices)
      {
        const int64_t count = tensors[i].numel();
        tensors[i].copy_(bucket[0].narrow(0, offset, count).view(tensors[i].sizes()));
        offset += count;
      }
    }
  });
#else
  (void)tensors;
#endif
}

} // namespace cdm
