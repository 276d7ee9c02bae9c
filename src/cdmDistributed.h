/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#ifndef cdmDistributed_h
#define cdmDistributed_h

// Internal header of the core engine (src/ only): data-parallel training joins PyTorch's c10d world as torchrun
// launches it. c10d's headers stay in cdmDistributed.cxx.
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace cdm
{

/** \brief Where this process stands in a torchrun launch: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT. */
struct DistributedEnvironment
{
  int         Rank{ 0 };
  int         WorldSize{ 1 };
  int         LocalRank{ 0 };
  std::string MasterAddress{ "127.0.0.1" };
  int         MasterPort{ 29500 };

  /** From the process environment; a world of one when WORLD_SIZE is unset. Throws InputError naming a variable
   *  that is malformed or missing beside WORLD_SIZE > 1. */
  static DistributedEnvironment
  FromProcess();
};

/** \brief A c10d process group (TCPStore rendezvous, then Gloo or NCCL) and the collectives training needs. Every
 *  failure (a timeout, a peer that died) throws DistributedError naming this rank. */
class ProcessGroup
{
public:
  /** Joins the group: rank 0 serves the TCPStore at MasterAddress:MasterPort and the others connect; then a Gloo
   *  (CPU) or NCCL (CUDA) backend. `backend`: "auto" (NCCL for a CUDA device, Gloo otherwise), "gloo" or "nccl".
   *  `timeout` bounds the rendezvous and every collective. */
  ProcessGroup(const DistributedEnvironment & environment,
               const std::string &            backend,
               const c10::Device &            device,
               std::chrono::milliseconds      timeout);
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup &) = delete;
  ProcessGroup &
  operator=(const ProcessGroup &) = delete;

  int
  Rank() const;
  int
  WorldSize() const;
  /** "gloo" or "nccl". */
  std::string
  BackendName() const;

  /** Copies rank 0's tensors into every rank's, in place. */
  void
  Broadcast(std::vector<at::Tensor> & tensors);

  /** Replaces each tensor by its sum over the ranks, in place: the tensors travel flattened in one buffer (DDP's
   *  bucket), so that a step makes one collective call whatever the number of tensors. */
  void
  AllReduceSum(std::vector<at::Tensor> & tensors);

  /** Seconds spent in collectives so far (waiting included): the communication share of a step. */
  double
  CommunicationSeconds() const;

private:
  struct Impl;
  std::unique_ptr<Impl> m_Impl;
};

} // namespace cdm

#endif
