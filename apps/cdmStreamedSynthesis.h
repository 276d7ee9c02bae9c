/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#ifndef cdmStreamedSynthesis_h
#define cdmStreamedSynthesis_h

// `cdm synthesize --stream-divisions N`: files -> itk::CDMImageFilter -> file in N pieces (the ITK filters' streaming,
// for command-line users).
#include "cdmModel.h"

#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace cdm
{

/** \brief What a synthesis in pieces reads, writes and how. */
struct StreamedSynthesisRequest
{
  const Model *                                    Engine{ nullptr }; ///< the loaded model (not owned)
  std::string                                      ModelPath;         ///< its file, for messages
  std::vector<std::pair<std::string, std::string>> Sources;           ///< modality name, image file
  std::string                                      Output;
  std::string                                      Uncertainty; ///< empty: not written
  SynthesisOptions                                 Options;
  unsigned int                                     Divisions{ 1 };
};

/** \brief What it cost. */
struct StreamedSynthesisReport
{
  double                 SamplingSeconds{ 0.0 }; ///< the sampler's runs (source encoder + MDN)
  double                 TotalSeconds{ 0.0 };    ///< from the call to the last file written
  unsigned int           Pieces{ 0 };            ///< updates of the filter, over all written images
  unsigned int           SamplerRuns{ 0 };       ///< 1: the representation was sampled once for all pieces
  std::array<int64_t, 3> Size{ { 0, 0, 0 } };
  std::string            Target;
  std::string            DeviceName;
  std::string            ModelKind;
  /** Files ITK reads or writes whole (sources: compressed MetaImage, NRRD; outputs: all but uncompressed MetaImage):
   *  said to the user, since they hold a whole image in memory whatever the divisions. */
  std::vector<std::string> WholeFiles;
};

/** The image and, when asked, the uncertainty of `request.Sources` written in `request.Divisions` pieces: an ITK
 *  reader per source, itk::CDMImageFilter (sampling once, then each piece from the sources it needs), the pieces
 *  written to each file as they are made, atomically (a temporary name, then a rename). Each piece is synthesized once,
 *  for the image and the uncertainty together. With NIfTI or uncompressed MetaImage (.mha) sources (ReadsInPieces) and
 *  uncompressed MetaImage outputs no whole image is held; an output ITK writes whole is gathered from the pieces and
 *  written at the end. The result equals Model::SynthesizeRegion's to float rounding. Throws InputError naming the
 *  file or option. `progress` gets (fraction, what). */
StreamedSynthesisReport
SynthesizeInPieces(const StreamedSynthesisRequest &                         request,
                   const std::function<void(double, const std::string &)> & progress);

/** Whether `path` is an image a streamed synthesis can read: a 3D file (2D files hold one slice: nothing to divide). */
bool
IsVolumeFile(const std::string & path);

} // namespace cdm

#endif
