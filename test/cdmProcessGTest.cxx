/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
// The process-wide settings a program may take from the engine: the C library's allocator.
#include "cdmModel.h"

#include <gtest/gtest.h>

#include <cstdlib>

#if defined(__GLIBC__)
#  include <malloc.h>
#endif
#if defined(__linux__)
#  include <dlfcn.h>
#endif

namespace
{
TEST(ProcessAllocator, BlocksOfSomeMegabytesStayInTheHeapUnlessTheEnvironmentChose)
{
#if defined(__GLIBC__)
  for (const char * chosen : { "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES" })
  {
    if (std::getenv(chosen) != nullptr)
    {
      GTEST_SKIP() << chosen << " is set in this test's environment: the allocator is the environment's choice";
    }
  }
#  if defined(__linux__)
  if (dlsym(RTLD_DEFAULT, "tc_malloc") != nullptr) // ctest runs this test under tcmalloc too, where it is found
  {
    EXPECT_FALSE(cdm::KeepWorkingMemoryInTheHeap()) << "tcmalloc serves malloc: glibc's settings do not apply";
    return;
  }
#  endif
  // The user's choice wins: nothing is changed.
  ASSERT_EQ(setenv("CDM_KEEP_MALLOC_DEFAULTS", "1", 1), 0);
  EXPECT_FALSE(cdm::KeepWorkingMemoryInTheHeap());
  ASSERT_EQ(unsetenv("CDM_KEEP_MALLOC_DEFAULTS"), 0);

  // ctest runs each test in a process of its own, where glibc's threshold is still near its 128 KiB start: without
  // the call, a 24 MiB block would be mapped from the kernel (one more mmapped block).
  ASSERT_TRUE(cdm::KeepWorkingMemoryInTheHeap());
  const size_t mappedBefore = mallinfo2().hblks;
  void *       block = std::malloc(24u << 20);
  ASSERT_NE(block, nullptr);
  const size_t mappedDuring = mallinfo2().hblks;
  std::free(block);
  EXPECT_EQ(mappedDuring, mappedBefore) << "a 24 MiB block was mapped instead of taken from the heap";
  // Beyond glibc's largest threshold (32 MiB) blocks are still mapped: the check above can tell the two apart.
  void * huge = std::malloc(64u << 20);
  ASSERT_NE(huge, nullptr);
  EXPECT_EQ(mallinfo2().hblks, mappedBefore + 1);
  std::free(huge);
#else
  EXPECT_FALSE(cdm::KeepWorkingMemoryInTheHeap());
#endif
}
} // namespace
