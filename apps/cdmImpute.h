/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#ifndef cdmImpute_h
#define cdmImpute_h

// `cdm impute`: fills every missing modality of a folder of BraTS-layout cases with the given models.
#include "cdmModel.h"

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace cdm
{

/** \brief What `cdm impute` is asked to do. */
struct ImputeOptions
{
  std::string              Data;   ///< folder of `<case>/<case>-<modality>.nii.gz`
  std::vector<std::string> Models; ///< model files; for each gap, the one that can use the most present sources
  std::string              Output; ///< folder of the written `<case>/<case>-<modality>.nii.gz`; empty: Data's cases
  bool                     DryRun{ false };
  int                      ShardIndex{ 0 }; ///< this process handles the cases whose index % ShardCount is this
  int                      ShardCount{ 1 };
  std::string              Device{ "auto" };
  SynthesisOptions         Synthesis; ///< seed, samples, precision: the same for every file
};

/** \brief One file to write (a dry run's plan) or written (a manifest row). */
struct ImputedFile
{
  std::string              Case;
  std::string              Modality;
  std::string              File; ///< relative to the manifest's folder
  std::string              Model;
  std::string              ModelSha256;
  std::vector<std::string> Sources; ///< the real scans it was synthesized from
  uint64_t                 Seed{ 0 };
  int                      Samples{ 1 };
  double                   Seconds{ 0.0 }; ///< read, synthesize and write
};

/** \brief What a run did: files planned (dry run) or written, outputs that already existed, and the cases that
 *  could not be imputed with the reason. */
struct ImputeReport
{
  int                                              Cases{ 0 }; ///< cases of this shard
  int                                              CompleteCases{ 0 };
  std::vector<ImputedFile>                         Planned;
  std::vector<ImputedFile>                         Written;
  std::vector<std::string>                         Existing; ///< outputs kept from an earlier run
  std::vector<std::pair<std::string, std::string>> Failed;   ///< case, reason
  std::string                                      Manifest;
};

/** The manifest of a run: JSON lines in the output folder (Output, else Data), `impute-manifest.jsonl`, or
 *  `impute-manifest.shard-<i>-of-<N>.jsonl` for a shard, so that shards running at once write apart. */
std::string
ImputeManifestPath(const ImputeOptions & options);

/** Runs `cdm impute`. For every case of the shard, the modalities the models know and the case lacks are
 *  synthesized from the case's real scans (never from a file a manifest lists as synthesized), each by the model
 *  that can use the most of the present ones, and written as `<case>-<modality>.nii.gz` with the sources' geometry.
 *  An existing output is never overwritten (a rerun skips it: resumable after a kill). Each file is written to a
 *  temporary name, its manifest row appended and flushed, then renamed into place, so a synthesized file is never
 *  unlisted. A case that cannot be imputed (no model can fill a gap from what is present, unreadable files,
 *  sources on different grids) is skipped whole and reported with the reason. `progress` receives a line per
 *  case. Throws InputError for bad options (no models, a missing data folder, a shard out of range). */
ImputeReport
Impute(const ImputeOptions & options, const std::function<void(const std::string &)> & progress = {});

/** The report as one JSON object: summary counts, planned and written rows, existing outputs and failures. */
std::string
ImputeReportJson(const ImputeReport & report);

} // namespace cdm

#endif
