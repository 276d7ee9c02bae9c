/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#ifndef cdmTestData_h
#define cdmTestData_h

#include "cdmDataset.h"
#include "cdmModel.h"
#include "cdmError.h"
#include "cdmVolume.h"

#include <array>
#include <cstdint>
#include <map>
#include <string>

namespace cdm
{
namespace testing
{

/** A small multi-contrast test case: an elliptic "brain" (grey matter rim, white matter, a CSF ventricle) with a
 *  lesion (core, enhancing rim, oedema). Intensities per tissue follow MR contrast rules (CSF dark on T1 and FLAIR,
 *  bright on T2; the rim enhances on t1c), with a per-case contrast parameter that every modality shows, a random
 *  intensity unit per modality, and noise. Non-trivial spacing, origin and direction. Deterministic for a seed.
 *  (The project's full phantom generator is `cdm phantom`; this one is for fast unit tests.) With `segmentation`,
 *  also the lesion's BraTS labels (1 core, 2 oedema, 3 enhancing rim) on the same grid. */
std::map<std::string, Volume>
MakeCase(uint64_t seed, const std::array<int64_t, 3> & size = { { 32, 32, 6 } }, Volume * segmentation = nullptr);

/** A data set of `cases` generated cases (with their segmentations when asked). */
Dataset
MakeDataset(int                            cases,
            uint64_t                       seed,
            const std::array<int64_t, 3> & size = { { 32, 32, 6 } },
            bool                           withSegmentation = false);

/** Gives the C-UNet's FiLM layers seeded non-zero weights (a fresh model's are zero, so z would not shape its
 *  output): with them a wrong z index, a dropped z or another sample's z changes the synthesis, so that tests of
 *  tiling, streaming, the model file and the uncertainty can fail. */
void
RandomizeFilm(const Model & model, uint64_t seed);

/** The device the core tests put their models on: $CDM_TEST_DEVICE (scripts/gpu-check.sh sets "cuda"), else "cpu". */
std::string
TestDevice();

/** \brief A finished program: its exit code (-1 when it did not exit normally) and its stdout and stderr together. */
struct CommandResult
{
  int         ExitCode{ -1 };
  std::string Output;
};

/** Runs a shell command line (stderr joined to stdout) and waits for it. */
CommandResult
RunCommand(const std::string & commandLine);

/** InputError's message when `work` throws one (empty otherwise). */
template <typename TWork>
std::string
InputErrorOf(TWork && work)
{
  try
  {
    work();
  }
  catch (const cdm::InputError & e)
  {
    return e.what();
  }
  return {};
}

/** The largest voxel-wise |a - b| of two volumes of one size. */
double
MaxDifference(const Volume & a, const Volume & b);

/** A fresh, empty temporary folder for one test. */
std::string
MakeTemporaryDirectory(const std::string & name);

} // namespace testing
} // namespace cdm

#endif
