/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#ifndef cdmPhantom_h
#define cdmPhantom_h

#include "cdmVolume.h"

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace cdm
{

/** \brief Options of the BraTS-like phantom generator (`cdm phantom`). */
struct PhantomOptions
{
  std::string            Anatomy{ "colin27" }; ///< "colin27" (Debian's mricron-data) or "procedural"
  std::array<int64_t, 3> Size{ { 128, 128, 96 } };
  double                 Spacing{ 1.5 }; ///< mm, isotropic
  std::string            TemplateDirectory{ "/usr/share/mricron/templates" };
  /** > 0: keep only this many axial slices, centred on the tumour (benchmarks on the slices that matter). */
  int64_t TumourSlab{ 0 };
  /** >= 0: every case's gadolinium concentration in the enhancing rim, in mM, instead of its draw from 0.3..0.8
   *  (the draw still happens, so every other parameter of a seed stays the same: a case's counterfactual dose). */
  double Gadolinium{ -1.0 };
  /** The contrasts written: any of t1n, t1c, t2w, t2f (BraTS) and pd (proton-density weighted spin echo, long TR and
   *  short TE: with t1n and t2w the IXI set). A case's other parameters do not depend on the choice: pd's draws come
   *  after every other. */
  std::vector<std::string> Contrasts{ "t1n", "t1c", "t2w", "t2f" };
};

/** \brief One generated case: its contrasts (t1n, t1c, t2w, t2f by default; float) and the BraTS labels (1 necrotic
 * core, 2 oedema, 3 enhancing tumour), plus the case's drawn parameters as JSON. */
struct PhantomCase
{
  std::map<std::string, Volume> Images;
  Volume                        Segmentation;
  std::map<std::string, Volume> TissueFractions; ///< "csf", "grey", "white" after deformation (for checks)
  std::string                   ParametersJson;
};

/** \brief A physics simulator of multi-contrast brain MRI with a tumour (the BrainWeb method): tissue fractions
 *  from a real anatomy (Colin27) or a procedural head, a random smooth deformation and affine per case, a random
 *  tumour, MR signal equations with 3 T relaxation times, bias field and Rician noise. The image work uses ITK
 *  filters. Deterministic for a given seed. */
class PhantomGenerator
{
public:
  /** Prepares the anatomy once (tissue fractions on the output grid). Throws InputError when the Colin27
   *  templates are missing or an option is out of range. */
  explicit PhantomGenerator(const PhantomOptions & options);
  ~PhantomGenerator();

  PhantomCase
  Generate(uint64_t seed) const;

  /** Writes `<directory>/<name>/<name>-t1n.nii.gz` ... and `-seg.nii.gz` (atomic writes). */
  static void
  Write(const PhantomCase & phantomCase, const std::string & directory, const std::string & name);

private:
  struct Anatomy;
  PhantomOptions           m_Options;
  std::unique_ptr<Anatomy> m_Anatomy;
};

} // namespace cdm

#endif
