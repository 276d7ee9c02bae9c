/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
// Devices and threads: which device a request names, and LibTorch's thread count.
#include "cdmError.h"
#include "cdmModel.h"
#include "cdmModelImpl.h"

#include <torch/torch.h>

#include <string>

namespace cdm
{

bool
CudaAvailable()
{
  return torch::cuda::is_available();
}

std::string
ResolveDevice(const std::string & requested)
{
  if (requested == "auto" || requested.empty())
  {
    return CudaAvailable() ? "cuda:0" : "cpu";
  }
  if (requested == "cpu")
  {
    return "cpu";
  }
  if (requested.rfind("cuda", 0) == 0)
  {
    if (!CudaAvailable())
    {
      throw InputError("device '" + requested +
                       "' is not available: LibTorch sees no CUDA device; expected auto or cpu");
    }
    int index = 0;
    if (requested.size() > 4)
    {
      if (requested[4] != ':' || requested.size() == 5 ||
          requested.find_first_not_of("0123456789", 5) != std::string::npos)
      {
        throw InputError("device '" + requested + "' is not understood; expected auto, cpu, cuda or cuda:N");
      }
      index = std::stoi(requested.substr(5));
    }
    if (index >= static_cast<int>(torch::cuda::device_count()))
    {
      throw InputError("device '" + requested + "' is not available: " + std::to_string(torch::cuda::device_count()) +
                       " CUDA device(s) present");
    }
    return "cuda:" + std::to_string(index);
  }
  throw InputError("device '" + requested + "' is not understood; expected auto, cpu, cuda or cuda:N");
}

c10::Device
ToTorchDevice(const std::string & resolved)
{
  return c10::Device(resolved);
}

void
SetNumberOfThreads(int threads)
{
  if (threads > 0)
  {
    torch::set_num_threads(threads);
  }
}

} // namespace cdm
