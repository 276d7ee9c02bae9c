/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
// Devices and the process: which device a request names, LibTorch's thread count, the C library's allocator.
#include "cdmError.h"
#include "cdmModel.h"
#include "cdmModelImpl.h"

#include <torch/torch.h>

#include <cstdlib>
#include <string>

#if defined(__GLIBC__)
#  include <malloc.h>
#endif
#if defined(__linux__)
#  include <dlfcn.h>
#  include <unistd.h>
#endif

namespace cdm
{

namespace
{
/** Whether an NVIDIA driver is installed (its control device or its /proc entry exists). */
bool
NvidiaDriverPresent()
{
#if defined(__linux__)
  return access("/dev/nvidiactl", F_OK) == 0 || access("/proc/driver/nvidia/version", F_OK) == 0;
#else
  return true;
#endif
}

/** Loads LibTorch's CUDA backend (libtorch_cuda.so, beside libtorch_cpu.so), which a build with CDM_CUDA_ON_DEMAND
 *  (the default) does not link: the backend and the CUDA runtime it pulls in cost about 230 MB of resident memory
 *  and start-up time that a CPU run should not pay. (Where it is linked, dlopen returns the loaded library.) Returns
 *  an empty string on success, else why it failed. */
std::string
LoadCudaBackend()
{
#if defined(__linux__)
  static const std::string failure = []() -> std::string {
    Dl_info info{};
    if (dladdr(reinterpret_cast<void *>(&torch::cuda::device_count), &info) == 0 || info.dli_fname == nullptr)
    {
      return "the LibTorch library folder could not be found";
    }
    std::string path(info.dli_fname);
    path = path.substr(0, path.find_last_of('/') + 1) + "libtorch_cuda.so";
    if (dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL) == nullptr)
    {
      const char * why = dlerror();
      return "'" + path + "' could not be loaded (" + (why ? why : "no reason given") + ")";
    }
    return {};
  }();
  return failure;
#else
  return {};
#endif
}

// LibTorch caches its CUDA hooks at their first use, so the backend must be in before any tensor work: at load time,
// on every machine with an NVIDIA driver (and nowhere else).
[[maybe_unused]] const bool cudaBackendLoadedAtStart = NvidiaDriverPresent() && LoadCudaBackend().empty();
} // namespace

bool
CudaAvailable()
{
  return NvidiaDriverPresent() && LoadCudaBackend().empty() && torch::cuda::is_available();
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
      const std::string why = !NvidiaDriverPresent()       ? "no NVIDIA driver is installed"
                              : !LoadCudaBackend().empty() ? "LibTorch's CUDA backend " + LoadCudaBackend()
                                                           : "LibTorch sees no CUDA device";
      throw InputError("device '" + requested + "' is not available: " + why + "; expected auto or cpu");
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

bool
KeepWorkingMemoryInTheHeap()
{
#if defined(__GLIBC__)
  for (const char * chosen :
       { "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES", "CDM_KEEP_MALLOC_DEFAULTS" })
  {
    if (std::getenv(chosen) != nullptr)
    {
      return false;
    }
  }
#  if defined(__linux__)
  if (dlsym(RTLD_DEFAULT, "tc_malloc") != nullptr)
  {
    return false; // tcmalloc took malloc over (the `cdm` build links it): glibc's settings do not apply
  }
#  endif
  // 32 MiB is the largest mmap threshold glibc accepts; trimming only above 256 MiB keeps freed activations for the
  // next call instead of returning them to the kernel between calls.
  return mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024) == 1 && mallopt(M_TRIM_THRESHOLD, 256 * 1024 * 1024) == 1;
#else
  return false;
#endif
}

} // namespace cdm
