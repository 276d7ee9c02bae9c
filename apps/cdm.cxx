/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
// The `cdm` command line: train, synthesize, impute, evaluate, phantom, montage, info.
// Exit codes: 0 success, 1 bad input or failure, 2 usage error, 130 training interrupted (checkpoint saved).
#include "cdmAtomicFile.h"
#include "cdmDataset.h"
#include "cdmError.h"
#include "cdmImageIO.h"
#include "cdmImpute.h"
#include "cdmMetrics.h"
#include "cdmModel.h"
#include "cdmMontage.h"
#include "cdmPhantom.h"
#include "cdmStreamedSynthesis.h"
#include "cdmTrainer.h"

#include "itkMultiThreaderBase.h"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <random>
#include <sstream>

namespace
{
std::atomic<bool> g_StopRequested{ false };

extern "C" void
RequestStop(int)
{
  g_StopRequested = true;
  std::signal(SIGINT, SIG_DFL); // a second Ctrl-C ends the process at once
}

std::vector<std::string>
SplitList(const std::string & text)
{
  std::vector<std::string> items;
  std::stringstream        stream(text);
  std::string              item;
  while (std::getline(stream, item, ','))
  {
    if (!item.empty())
    {
      items.push_back(item);
    }
  }
  return items;
}

std::string
FormatSeconds(double seconds)
{
  std::ostringstream out;
  if (seconds >= 3600)
  {
    out << static_cast<int>(seconds / 3600) << "h" << std::setw(2) << std::setfill('0')
        << static_cast<int>(seconds / 60) % 60 << "m";
  }
  else if (seconds >= 60)
  {
    out << static_cast<int>(seconds / 60) << "m" << std::setw(2) << std::setfill('0') << static_cast<int>(seconds) % 60
        << "s";
  }
  else
  {
    out << std::fixed << std::setprecision(1) << seconds << "s";
  }
  return out.str();
}

/** torch's intra-op threads follow ITK's global default unless --threads says otherwise. */
void
ConfigureThreads(int threads)
{
  cdm::SetNumberOfThreads(threads > 0 ? threads
                                      : static_cast<int>(itk::MultiThreaderBase::GetGlobalDefaultNumberOfThreads()));
}

struct TrainArguments
{
  cdm::TrainingOptions Options;
  bool                 TargetGiven{ false };
  std::string          Data;
  std::string          Sources;
  std::string          StageIterations;
  std::string          IntensityRule{ "percentile" };
  int                  Threads{ 0 };
};

int
RunTrain(const TrainArguments & arguments)
{
  ConfigureThreads(arguments.Threads);
  cdm::CheckOutputFile(arguments.Options.Output, "--out"); // before hours of training, not at its first checkpoint
  cdm::TrainingOptions options = arguments.Options;
  // Under torchrun every rank runs this; rank 0 alone reports (errors still come from every rank).
  const char *   rankVariable = std::getenv("RANK");
  std::ostream   silent(nullptr);
  std::ostream & out =
    options.DistributedBackend != "off" && rankVariable && std::string(rankVariable) != "0" ? silent : std::cout;
  const bool segmenter = options.ModelKind == "segmenter";
  if (segmenter && arguments.TargetGiven && options.Target != cdm::SegmentationName)
  {
    throw cdm::InputError("--target " + options.Target +
                          ": a segmenter predicts the tumour labels (the cases' -seg "
                          "files); leave --target out, or give seg");
  }
  if (!segmenter && !arguments.TargetGiven)
  {
    throw cdm::InputError("--target is required: the modality to synthesize (" +
                          cdm::JoinNames(cdm::KnownModalities()) + "), a list, or any");
  }
  if (segmenter)
  {
    options.Target = cdm::SegmentationName;
  }
  // --target any, or a list: one unified model for those targets, reading every modality (the targets included).
  if (options.Target == "any")
  {
    options.Targets = cdm::BraTSModalities();
  }
  else if (options.Target.find(',') != std::string::npos)
  {
    options.Targets = SplitList(options.Target);
  }
  if (!options.Targets.empty())
  {
    options.Target = options.Targets.front();
  }
  if (arguments.Sources.empty())
  {
    options.Sources.clear();
    const std::vector<std::string> targets =
      options.Targets.empty() ? std::vector<std::string>{ options.Target } : options.Targets;
    for (const auto & m : segmenter ? cdm::BraTSModalities() : cdm::DefaultModalities(targets))
    {
      if (m != options.Target || !options.Targets.empty())
      {
        options.Sources.push_back(m);
      }
    }
  }
  else
  {
    options.Sources = SplitList(arguments.Sources);
  }
  for (const std::string & item : SplitList(arguments.StageIterations))
  {
    const size_t equals = item.find('=');
    int          count = 0;
    try
    {
      count = equals == std::string::npos ? 0 : std::stoi(item.substr(equals + 1));
    }
    catch (const std::exception &)
    {
      count = 0;
    }
    if (equals == std::string::npos || count < 1)
    {
      throw cdm::InputError("--stage-iterations: '" + item + "' is not STAGE=N with N >= 1 (e.g. cunet=450)");
    }
    options.StageIterations[item.substr(0, equals)] = count;
  }
  std::vector<std::string> modalities = options.Sources;
  // Validate names before reading any data.
  if (options.Targets.empty())
  {
    if (!segmenter) // a segmenter's labels are the cases' -seg files, which every scan reads when present
    {
      modalities.push_back(options.Target);
    }
    cdm::ModelConfig::FromPreset(options.Preset, options.Dimension, options.Sources, options.Target, options.ModelKind);
  }
  else
  {
    if (options.ModelKind != "cdm")
    {
      throw cdm::InputError("--target " + arguments.Options.Target +
                            ": one model for several targets is of kind cdm; "
                            "train the '" +
                            options.ModelKind + "' baseline once per target");
    }
    cdm::ModelConfig::UnifiedFromPreset(options.Preset, options.Dimension, options.Sources, options.Targets);
  }

  const cdm::DatasetScan scan = cdm::ScanBraTSFolder(arguments.Data, modalities);
  out << "[cdm train] reading " << scan.Cases.size() << " case(s) from " << arguments.Data << std::endl;
  const cdm::Dataset data =
    cdm::Dataset::Load(scan, cdm::ReadVolume, cdm::NormalizationRule::Named(arguments.IntensityRule));
  for (const auto & skipped : data.Skipped())
  {
    std::cerr << "[cdm train] skipped case " << skipped << std::endl;
  }
  if (data.Cases().empty())
  {
    throw cdm::InputError("no usable case in '" + arguments.Data + "'; expected <case>/<case>-<modality>.nii.gz for " +
                          std::to_string(modalities.size()) + " modalities");
  }
  std::string task =
    (segmenter ? "tumour labels" : "target " + options.Target) + " from " + cdm::JoinNames(options.Sources, ",");
  if (!options.Targets.empty())
  {
    task = "targets " + cdm::JoinNames(options.Targets, ",") + " (one unified model) from the others of " +
           cdm::JoinNames(options.Sources, ",");
  }
  out << "[cdm train] " << data.Cases().size() << " case(s), " << task << ", " << options.Dimension << "D '"
      << options.Preset << "' model on " << cdm::ResolveDevice(options.Device) << std::endl;

  std::signal(SIGINT, RequestStop);
  std::signal(SIGTERM, RequestStop);
  auto       lastPrint = std::chrono::steady_clock::now() - std::chrono::seconds(10);
  const auto progress = [&](const cdm::TrainingProgress & p) {
    const auto now = std::chrono::steady_clock::now();
    if (!p.HasValidation && !p.HasDice && p.Iteration != p.Iterations && now - lastPrint < std::chrono::seconds(1))
    {
      return;
    }
    lastPrint = now;
    out << "[cdm train] stage " << std::left << std::setw(8) << p.Stage << std::right << " iter " << p.Iteration << "/"
        << p.Iterations << "  loss " << std::fixed << std::setprecision(5) << p.Loss << "  " << std::setprecision(2)
        << p.IterationsPerSecond << " it/s  ETA " << FormatSeconds(p.EtaSeconds);
    if (p.HasValidation)
    {
      out << "  | val PSNR " << std::setprecision(2) << p.ValidationPSNR << " dB  SSIM " << std::setprecision(4)
          << p.ValidationSSIM;
      if (p.HasTumourValidation)
      {
        out << "  tumour PSNR " << std::setprecision(2) << p.ValidationTumourPSNR << " dB";
      }
    }
    if (p.HasDice)
    {
      out << "  | val Dice ET " << std::setprecision(3) << p.ValidationDice.EnhancingTumour << " TC "
          << p.ValidationDice.TumourCore << " WT " << p.ValidationDice.WholeTumour;
    }
    out << std::defaultfloat << std::endl;
  };
  const cdm::TrainingReport report = cdm::Train(data, options, progress, &g_StopRequested);
  if (report.Interrupted)
  {
    const auto & last = report.Stages.back();
    std::cerr << "[cdm train] interrupted in stage " << last.Stage << " after iteration " << last.LastIteration
              << "; checkpoint " << cdm::CheckpointPath(options.Output) << "; continue with --resume" << std::endl;
    return 130;
  }
  for (const auto & stage : report.Stages)
  {
    out << "[cdm train] stage " << stage.Stage << ": loss " << stage.FirstLoss << " -> " << stage.LastLoss
        << " (iterations " << stage.FirstIteration << "-" << stage.LastIteration << ", " << FormatSeconds(stage.Seconds)
        << "), validation ";
    if (segmenter)
    {
      out << "Dice ET " << stage.ValidationDice.EnhancingTumour << " TC " << stage.ValidationDice.TumourCore << " WT "
          << stage.ValidationDice.WholeTumour << std::endl;
    }
    else
    {
      out << "PSNR " << stage.ValidationPSNR << " dB SSIM " << stage.ValidationSSIM << ", tumour PSNR "
          << stage.ValidationTumourPSNR << " dB" << std::endl;
    }
  }
  if (!segmenter)
  {
    out << "[cdm train] constant-image baseline: PSNR " << report.ConstantBaselinePSNR << " dB SSIM "
        << report.ConstantBaselineSSIM << std::endl;
  }
  if (report.WorldSize > 1)
  {
    out << "[cdm train] " << report.WorldSize << " ranks; this rank spent "
        << FormatSeconds(report.CommunicationSeconds) << " in collectives" << std::endl;
  }
  out << "[cdm train] wrote " << options.Output << " in " << FormatSeconds(report.Seconds) << std::endl;
  return 0;
}

struct SynthesizeArguments
{
  std::string              Model;
  std::vector<std::string> Sources;
  std::string              Output;
  std::string              Uncertainty;
  std::string              Device{ "auto" };
  cdm::SynthesisOptions    Options;
  int64_t                  Tile{ 0 };
  int                      Threads{ 0 };
  bool                     Quiet{ false };
  std::string              TimingJson;
  std::string              RepresentationMode{ "sampled" };
  std::string              Reference;
  std::string              Precision{ "fp32" };
  unsigned int             StreamDivisions{ 0 };
};

/** The `--source NAME=FILE` options as (name, file), checked against the model's inputs. */
std::vector<std::pair<std::string, std::string>>
ParseSources(const std::vector<std::string> & items, const cdm::Model & model, const std::string & modelPath)
{
  std::vector<std::pair<std::string, std::string>> sources;
  for (const auto & item : items)
  {
    const size_t equals = item.find('=');
    if (equals == std::string::npos || equals == 0 || equals + 1 == item.size())
    {
      throw cdm::InputError("--source '" + item + "': expected NAME=FILE, e.g. t1n=case-t1n.nii.gz");
    }
    const std::string name = item.substr(0, equals);
    const std::string path = item.substr(equals + 1);
    if (model.Config().SourceIndex(name) < 0)
    {
      const std::string expected = cdm::JoinNames(model.Config().Sources);
      throw cdm::InputError("--source " + name + "=" + path + ": modality '" + name + "' is not an input of model '" +
                            modelPath + "'; expected " + expected);
    }
    for (const auto & earlier : sources)
    {
      if (earlier.first == name)
      {
        throw cdm::InputError("--source: modality '" + name + "' is given twice");
      }
    }
    sources.emplace_back(name, path);
  }
  return sources;
}

/** The images of `--source NAME=FILE` options, checked against the model's inputs. */
cdm::SourceVolumes
ReadSources(const std::vector<std::string> & items, const cdm::Model & model, const std::string & modelPath)
{
  cdm::SourceVolumes sources;
  for (const auto & [name, path] : ParseSources(items, model, modelPath))
  {
    sources[name] = cdm::ReadVolume(path);
  }
  return sources;
}

/** What `cdm synthesize --timing` reports of either path (whole images, or in pieces). */
struct SynthesisTiming
{
  std::string            ModelKind;
  std::string            Device;
  std::array<int64_t, 3> Size{ { 0, 0, 0 } };
  double                 LoadSeconds{ 0.0 };
  double                 SamplingSeconds{ 0.0 };  ///< source encoder + MDN
  double                 SynthesisSeconds{ 0.0 }; ///< the C-UNet
  double                 TotalSeconds{ 0.0 };     ///< from the start to the last file written
};

/** Writes `--timing`'s JSON, atomically: the keys both paths share, then `pathKeys` (what only one path has). */
void
WriteTiming(const SynthesizeArguments & arguments, const SynthesisTiming & timing, const nlohmann::json & pathKeys)
{
  nlohmann::json report = { { "model_kind", timing.ModelKind },
                            { "load_seconds", timing.LoadSeconds },
                            { "sampling_seconds", timing.SamplingSeconds },
                            { "synthesis_seconds", timing.SynthesisSeconds },
                            { "total_seconds", timing.TotalSeconds },
                            { "size", timing.Size },
                            { "device", timing.Device },
                            { "precision", arguments.Precision },
                            { "samples", arguments.Options.Samples } };
  report.update(pathKeys);
  cdm::WriteAtomically(arguments.TimingJson, [&](const std::string & temporary) {
    std::ofstream file(temporary);
    file << report.dump(2) << std::endl;
    if (!file)
    {
      throw cdm::Error("cannot write '" + arguments.TimingJson + "' (--timing)");
    }
  });
}

/** `cdm synthesize --stream-divisions N`: the ITK filters between the files, in N pieces (cdmStreamedSynthesis.h). */
int
RunSynthesizeInPieces(const SynthesizeArguments &                              arguments,
                      const cdm::Model &                                       model,
                      double                                                   loadSeconds,
                      const cdm::SynthesisOptions &                            options,
                      const std::vector<std::pair<std::string, std::string>> & sources,
                      const std::function<void(double, const std::string &)> & progress)
{
  if (arguments.RepresentationMode != "sampled")
  {
    throw cdm::InputError("--representation " + arguments.RepresentationMode +
                          " is not available with --stream-divisions (the pieces sample z from the sources); omit "
                          "one of the two");
  }
  cdm::StreamedSynthesisRequest request;
  request.Engine = &model;
  request.ModelPath = arguments.Model;
  request.Sources = sources;
  request.Output = arguments.Output;
  request.Uncertainty = arguments.Uncertainty;
  request.Options = options;
  request.Divisions = arguments.StreamDivisions;
  const cdm::StreamedSynthesisReport report = cdm::SynthesizeInPieces(request, progress);
  if (!arguments.Quiet)
  {
    std::cout << std::endl;
  }
  for (const std::string & path : report.WholeFiles)
  {
    std::cout << "[cdm synthesize] note: " << path
              << " was read or written whole (ITK reads NIfTI and uncompressed .mha sources in pieces, and writes only "
                 "uncompressed .mha outputs in pieces)"
              << std::endl;
  }
  if (!arguments.TimingJson.empty())
  {
    WriteTiming(arguments,
                { report.ModelKind,
                  report.DeviceName,
                  report.Size,
                  loadSeconds,
                  report.SamplingSeconds,
                  report.TotalSeconds - report.SamplingSeconds,
                  loadSeconds + report.TotalSeconds },
                { { "stream_divisions", arguments.StreamDivisions },
                  { "pieces", report.Pieces },
                  { "sampler_runs", report.SamplerRuns } });
  }
  std::cout << "[cdm synthesize] wrote " << arguments.Output << " (" << report.Target << ", " << report.Size[0] << "x"
            << report.Size[1] << "x" << report.Size[2] << ", " << options.Samples << " sample(s), " << report.DeviceName
            << ", " << report.Pieces << " piece(s)) in " << FormatSeconds(loadSeconds + report.TotalSeconds)
            << std::endl;
  return 0;
}

int
RunSynthesize(const SynthesizeArguments & arguments)
{
  ConfigureThreads(arguments.Threads);
  // Where the results go, before the synthesis (minutes for a 3D model on a CPU) rather than after it.
  cdm::CheckOutputImageFile(arguments.Output, "--output");
  if (!arguments.Uncertainty.empty())
  {
    cdm::CheckOutputImageFile(arguments.Uncertainty, "--uncertainty");
  }
  if (!arguments.TimingJson.empty())
  {
    cdm::CheckOutputFile(arguments.TimingJson, "--timing");
  }
  cdm::SynthesisOptions options = arguments.Options;
  options.TileSize = { arguments.Tile, arguments.Tile, arguments.Tile };
  options.NetworkPrecision = cdm::ParsePrecision(arguments.Precision, "--precision");
  const auto progress = [&](double fraction, const std::string & what) {
    if (!arguments.Quiet)
    {
      std::cout << "\r[cdm synthesize] " << what << " " << std::setw(3) << static_cast<int>(100 * fraction) << "%"
                << std::flush;
    }
  };
  const auto       start = std::chrono::steady_clock::now();
  const cdm::Model model = cdm::Model::Load(arguments.Model, arguments.Device);
  if (arguments.StreamDivisions > 0)
  {
    // A single slice has nothing to divide: 2D files take the path below.
    const auto named = ParseSources(arguments.Sources, model, arguments.Model);
    if (std::any_of(named.begin(), named.end(), [](const auto & s) { return cdm::IsVolumeFile(s.second); }))
    {
      const double loadSeconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      return RunSynthesizeInPieces(arguments, model, loadSeconds, options, named, progress);
    }
  }
  const cdm::SourceVolumes sources = ReadSources(arguments.Sources, model, arguments.Model);
  // The two halves timed apart: source encoder + MDN sampling, then the C-UNet (what bench/ reports).
  const auto          loaded = std::chrono::steady_clock::now();
  cdm::Representation representation = model.SampleRepresentation(sources, options);
  if (arguments.RepresentationMode != "sampled")
  {
    cdm::Volume reference;
    if (!arguments.Reference.empty())
    {
      reference = cdm::ReadVolume(arguments.Reference);
    }
    representation = model.ReplaceRepresentation(
      representation, arguments.RepresentationMode, arguments.Reference.empty() ? nullptr : &reference);
  }
  const auto                 sampled = std::chrono::steady_clock::now();
  const cdm::SynthesisResult result = model.SynthesizeRegion(sources, representation, cdm::Region{}, options, progress);
  const auto                 synthesized = std::chrono::steady_clock::now();
  if (!arguments.Quiet)
  {
    std::cout << std::endl;
  }
  cdm::WriteVolume(result.Image, arguments.Output);
  if (!arguments.Uncertainty.empty())
  {
    // One sample has no spread: its uncertainty map is zero.
    cdm::Volume uncertainty =
      result.Uncertainty.Voxels.empty() ? result.Image.EmptyCopy("uncertainty") : result.Uncertainty;
    cdm::WriteVolume(uncertainty, arguments.Uncertainty);
  }
  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!arguments.TimingJson.empty())
  {
    const auto seconds = [](auto from, auto to) { return std::chrono::duration<double>(to - from).count(); };
    WriteTiming(arguments,
                { model.Config().ModelKind,
                  model.DeviceName(),
                  result.Image.Size,
                  seconds(start, loaded),
                  seconds(loaded, sampled),
                  seconds(sampled, synthesized),
                  total },
                { { "slices", model.Config().Dimension == 2 ? result.Image.Size[model.Config().SliceAxis] : 1 } });
  }
  std::cout << "[cdm synthesize] wrote " << arguments.Output << " (" << representation.Target << ", "
            << result.Image.Size[0] << "x" << result.Image.Size[1] << "x" << result.Image.Size[2] << ", "
            << options.Samples << " sample(s), " << model.DeviceName() << ") in " << FormatSeconds(total) << std::endl;
  return 0;
}

struct SegmentArguments
{
  std::string              Model;
  std::vector<std::string> Sources;
  std::string              Output;
  std::string              Device{ "auto" };
  cdm::SegmentationOptions Options;
  std::string              Precision{ "fp32" };
  int                      Threads{ 0 };
  bool                     Quiet{ false };
};

int
RunSegment(const SegmentArguments & arguments)
{
  ConfigureThreads(arguments.Threads);
  cdm::CheckOutputImageFile(arguments.Output, "--output");
  const auto               start = std::chrono::steady_clock::now();
  const cdm::Model         model = cdm::Model::Load(arguments.Model, arguments.Device);
  const cdm::SourceVolumes sources = ReadSources(arguments.Sources, model, arguments.Model);
  cdm::SegmentationOptions options = arguments.Options;
  options.NetworkPrecision = cdm::ParsePrecision(arguments.Precision, "--precision");
  const cdm::Volume labels = model.Segment(sources, options, [&](double fraction, const std::string & what) {
    if (!arguments.Quiet)
    {
      std::cout << "\r[cdm segment] " << what << " " << std::setw(3) << static_cast<int>(100 * fraction) << "%"
                << std::flush;
    }
  });
  if (!arguments.Quiet)
  {
    std::cout << std::endl;
  }
  cdm::WriteLabelVolume(labels, arguments.Output);
  std::array<int64_t, cdm::SegmentationClasses> counts{};
  for (const float label : labels.Voxels)
  {
    ++counts[static_cast<size_t>(label)];
  }
  std::cout << "[cdm segment] wrote " << arguments.Output << " (" << labels.Size[0] << "x" << labels.Size[1] << "x"
            << labels.Size[2] << "; voxels: necrotic core " << counts[1] << ", oedema " << counts[2] << ", enhancing "
            << counts[3] << "; " << model.DeviceName() << ") in "
            << FormatSeconds(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count())
            << std::endl;
  return 0;
}

struct ImputeArguments
{
  cdm::ImputeOptions Options;
  std::string        Shard;
  std::string        Precision{ "fp32" };
  int                Threads{ 0 };
  bool               Json{ false };
};

int
RunImpute(ImputeArguments arguments)
{
  ConfigureThreads(arguments.Threads);
  cdm::ImputeOptions & options = arguments.Options;
  options.Synthesis.NetworkPrecision = cdm::ParsePrecision(arguments.Precision, "--precision");
  if (!arguments.Shard.empty())
  {
    const size_t slash = arguments.Shard.find('/');
    try
    {
      size_t used = 0;
      options.ShardIndex = std::stoi(arguments.Shard.substr(0, slash), &used);
      options.ShardCount = slash == std::string::npos ? 0 : std::stoi(arguments.Shard.substr(slash + 1));
      if (used != slash)
      {
        options.ShardCount = 0;
      }
    }
    catch (const std::exception &)
    {
      options.ShardCount = 0;
    }
    if (options.ShardCount < 1 || options.ShardIndex < 0 || options.ShardIndex >= options.ShardCount)
    {
      throw cdm::InputError("--shard '" + arguments.Shard + "': expected i/N with 0 <= i < N, e.g. 0/4");
    }
  }
  // With --json the report is the only thing on stdout (for programs: itk_cdm.impute); progress goes to stderr.
  std::ostream &          out = arguments.Json ? std::cerr : std::cout;
  const cdm::ImputeReport report =
    cdm::Impute(options, [&out](const std::string & line) { out << "[cdm impute] " << line << std::endl; });
  if (arguments.Json)
  {
    std::cout << cdm::ImputeReportJson(report) << std::endl;
  }
  out << "[cdm impute] " << report.Cases
      << " case(s): " << (options.DryRun ? report.Planned.size() : report.Written.size())
      << (options.DryRun ? " file(s) to write" : " file(s) written") << ", " << report.Existing.size()
      << " already there, " << report.CompleteCases << " complete, " << report.Failed.size() << " failed";
  if (!options.DryRun && !report.Written.empty())
  {
    out << "; manifest " << report.Manifest;
  }
  out << std::endl;
  for (const auto & [caseName, reason] : report.Failed)
  {
    std::cerr << "[cdm impute] failed: " << caseName << ": " << reason << std::endl;
  }
  return report.Failed.empty() ? 0 : 1;
}

struct EvaluateArguments
{
  std::string Reference;
  std::string Prediction;
  std::string Mask;
  std::string Segmentation;
  std::string SegmentationReference;
  std::string Normalize{ "percentile" };
  std::string Protocol{ "default" };
  std::string Uncertainty;
  std::string ErrorMap;
  bool        Json{ false };
};

/** `cdm evaluate --segmentation-reference REF --segmentation PRED`: Dice in BraTS's regions. */
int
RunEvaluateSegmentation(const EvaluateArguments & arguments)
{
  if (arguments.Segmentation.empty())
  {
    throw cdm::InputError("--segmentation-reference " + arguments.SegmentationReference +
                          ": give the predicted labels with --segmentation (e.g. from cdm segment)");
  }
  if (!arguments.Reference.empty() || !arguments.Prediction.empty())
  {
    throw cdm::InputError("--segmentation-reference scores labels; --reference and --prediction score images: "
                          "run cdm evaluate once for each");
  }
  const cdm::SegmentationDice dice = cdm::CompareSegmentations(cdm::ReadVolume(arguments.SegmentationReference),
                                                               cdm::ReadVolume(arguments.Segmentation));
  if (arguments.Json)
  {
    const nlohmann::json j = { { "dice",
                                 { { "enhancing_tumour", dice.EnhancingTumour },
                                   { "tumour_core", dice.TumourCore },
                                   { "whole_tumour", dice.WholeTumour } } },
                               { "segmentation_reference", arguments.SegmentationReference },
                               { "segmentation", arguments.Segmentation } };
    std::cout << j.dump(2) << std::endl;
  }
  else
  {
    std::cout << std::fixed << std::setprecision(4) << "Dice enhancing tumour (ET) " << dice.EnhancingTumour
              << "\nDice tumour core (TC)      " << dice.TumourCore << "\nDice whole tumour (WT)     "
              << dice.WholeTumour << std::endl;
  }
  return 0;
}

int
RunEvaluate(const EvaluateArguments & arguments)
{
  if (!arguments.SegmentationReference.empty())
  {
    return RunEvaluateSegmentation(arguments);
  }
  if (arguments.Reference.empty() || arguments.Prediction.empty())
  {
    throw cdm::InputError("cdm evaluate: give --reference and --prediction (images), or --segmentation-reference and "
                          "--segmentation (labels)");
  }
  cdm::Volume reference = cdm::ReadVolume(arguments.Reference);
  cdm::Volume prediction = cdm::ReadVolume(arguments.Prediction);
  cdm::CheckFinite(reference);
  cdm::CheckFinite(prediction);
  cdm::Volume mask;
  if (!arguments.Mask.empty())
  {
    mask = cdm::ReadVolume(arguments.Mask);
  }
  cdm::Volume segmentation;
  if (!arguments.Segmentation.empty())
  {
    segmentation = cdm::ReadVolume(arguments.Segmentation);
  }
  double range = 1.0;
  if (arguments.Protocol == "brasyn")
  {
    // BraSyn scores each image after clipping to its own 0.5/99.5 percentiles inside the brain, scaled to [0, 1].
    cdm::Volume brain = arguments.Mask.empty() ? reference : mask;
    cdm::BraSynNormalize(reference, brain);
    cdm::BraSynNormalize(prediction, brain);
  }
  else if (arguments.Normalize == "percentile" || arguments.Normalize == "gain")
  {
    // The reference by a fixed robust rule, so that the figures do not depend on intensity units; the prediction
    // by the same rule (percentile) or by its best global gain against that reference (gain).
    const cdm::NormalizationRule rule = cdm::EvaluationRule();
    rule.Apply(reference.Voxels, rule.ComputeScale(reference));
    const double scale =
      arguments.Normalize == "gain"
        ? 1.0 / cdm::LeastSquaresGain(reference, prediction, arguments.Mask.empty() ? nullptr : &mask)
        : rule.ComputeScale(prediction);
    rule.Apply(prediction.Voxels, scale);
  }
  else
  {
    const auto [low, high] = std::minmax_element(reference.Voxels.begin(), reference.Voxels.end());
    range = std::max(1e-12, static_cast<double>(*high - *low));
  }
  cdm::Volume brain = mask;
  if (arguments.Mask.empty())
  {
    brain = reference.EmptyCopy("the whole image");
    std::fill(brain.Voxels.begin(), brain.Voxels.end(), 1.0f);
  }
  const std::map<std::string, cdm::ImageMetrics> regions =
    cdm::CompareRegions(reference, prediction, range, brain, arguments.Segmentation.empty() ? nullptr : &segmentation);
  const cdm::ImageMetrics & metrics = regions.at("brain");
  cdm::UncertaintyFigures   uncertaintyFigures;
  if (!arguments.Uncertainty.empty())
  {
    // Judged against the errors in the figures' units; a spread is unit-free in rank terms, so no scaling.
    uncertaintyFigures =
      cdm::CompareUncertainty(reference, prediction, cdm::ReadVolume(arguments.Uncertainty), brain, 0.1);
  }
  if (!arguments.ErrorMap.empty())
  {
    // |reference - prediction| in the units the figures use (inside the mask when one is given).
    cdm::Volume error = reference.EmptyCopy("|error|");
    for (size_t i = 0; i < error.Voxels.size(); ++i)
    {
      const bool inside = arguments.Mask.empty() || mask.Voxels[i] != 0.0f;
      error.Voxels[i] = inside ? std::abs(reference.Voxels[i] - prediction.Voxels[i]) : 0.0f;
    }
    error.Dimension = reference.Dimension;
    cdm::WriteVolume(error, arguments.ErrorMap);
  }
  if (arguments.Json)
  {
    nlohmann::json j = { { "psnr", metrics.PSNR },
                         { "ssim", metrics.SSIM },
                         { "mae", metrics.MAE },
                         { "voxels", metrics.Voxels },
                         { "data_range", range },
                         { "normalize", arguments.Protocol == "brasyn" ? "brasyn" : arguments.Normalize },
                         { "protocol", arguments.Protocol },
                         { "reference", arguments.Reference },
                         { "prediction", arguments.Prediction } };
    for (const auto & [name, m] : regions)
    {
      j["regions"][name] = { { "psnr", m.PSNR }, { "ssim", m.SSIM }, { "mae", m.MAE }, { "voxels", m.Voxels } };
    }
    if (!arguments.Uncertainty.empty())
    {
      j["uncertainty"] = { { "spearman", uncertaintyFigures.Spearman },
                           { "auroc_worst", uncertaintyFigures.AUROC },
                           { "worst_fraction", uncertaintyFigures.Fraction },
                           { "file", arguments.Uncertainty } };
    }
    std::cout << j.dump(2) << std::endl;
  }
  else if (regions.size() == 1)
  {
    std::cout << std::fixed << "PSNR " << std::setprecision(3) << metrics.PSNR << " dB\nSSIM " << std::setprecision(4)
              << metrics.SSIM << "\nMAE  " << std::setprecision(5) << metrics.MAE << "\nvoxels " << metrics.Voxels
              << std::endl;
  }
  else
  {
    std::cout << std::left << std::setw(12) << "region" << std::right << std::setw(10) << "PSNR (dB)" << std::setw(9)
              << "SSIM" << std::setw(10) << "MAE" << std::setw(10) << "voxels"
              << "\n";
    for (const char * name : { "brain", "tumour", "enhancing", "non_tumour" })
    {
      const auto found = regions.find(name);
      if (found == regions.end())
      {
        continue;
      }
      const cdm::ImageMetrics & m = found->second;
      std::cout << std::left << std::setw(12) << name << std::right << std::fixed << std::setprecision(3)
                << std::setw(10) << m.PSNR << std::setprecision(4) << std::setw(9) << m.SSIM << std::setprecision(5)
                << std::setw(10) << m.MAE << std::setw(10) << m.Voxels << "\n";
    }
    std::cout << std::flush;
  }
  if (!arguments.Json && !arguments.Uncertainty.empty())
  {
    std::cout << std::fixed << std::setprecision(3) << "uncertainty vs |error|: Spearman "
              << uncertaintyFigures.Spearman << ", AUROC for the worst 10 % " << uncertaintyFigures.AUROC << std::endl;
  }
  return 0;
}

struct PhantomArguments
{
  cdm::PhantomOptions Options;
  std::string         Output;
  std::string         Size;
  int                 Cases{ 1 };
  uint64_t            Seed{ 0 };
  std::string         Prefix{ "PHANTOM" };
  std::string         Drop{ "none" };
  std::string         HeldOut;
};

/** The modality `--drop` removes from case `index`: a fixed one, or (random) one drawn from the seed and the index,
 *  as BraSyn's validation set lacks one modality at random per case. */
std::string
DroppedModality(const PhantomArguments & arguments, int index)
{
  if (arguments.Drop != "random")
  {
    return arguments.Drop;
  }
  std::mt19937_64 random(arguments.Seed * 1000003ull + static_cast<uint64_t>(index) + 17);
  const auto &    modalities = arguments.Options.Contrasts; // the case's contrasts
  return modalities[std::uniform_int_distribution<size_t>(0, modalities.size() - 1)(random)];
}

int
RunPhantom(const PhantomArguments & arguments)
{
  ConfigureThreads(0);
  cdm::PhantomOptions options = arguments.Options;
  if (arguments.Drop != "none" && arguments.Drop != "random" &&
      std::find(options.Contrasts.begin(), options.Contrasts.end(), arguments.Drop) == options.Contrasts.end())
  {
    throw cdm::InputError("--drop " + arguments.Drop + ": not among the contrasts written (--contrasts " +
                          cdm::JoinNames(options.Contrasts, ",") + ")");
  }
  if (!arguments.Size.empty())
  {
    const std::vector<std::string> parts = SplitList(arguments.Size);
    if (parts.size() != 3)
    {
      throw cdm::InputError("--size '" + arguments.Size + "': expected three extents X,Y,Z");
    }
    for (size_t a = 0; a < 3; ++a)
    {
      try
      {
        options.Size[a] = std::stoll(parts[a]);
      }
      catch (const std::exception &)
      {
        throw cdm::InputError("--size '" + arguments.Size + "': '" + parts[a] + "' is not a whole number");
      }
    }
  }
  const std::string           heldOut = arguments.HeldOut.empty() ? arguments.Output + "-held-out" : arguments.HeldOut;
  const auto                  start = std::chrono::steady_clock::now();
  const cdm::PhantomGenerator generator(options);
  for (int i = 0; i < arguments.Cases; ++i)
  {
    std::ostringstream name;
    name << arguments.Prefix << "-" << std::setw(5) << std::setfill('0') << i;
    const cdm::PhantomCase phantom = generator.Generate(arguments.Seed * 100003ull + static_cast<uint64_t>(i));
    cdm::PhantomGenerator::Write(phantom, arguments.Output, name.str());
    std::cout << "[cdm phantom] " << (i + 1) << "/" << arguments.Cases << " " << arguments.Output << "/" << name.str();
    if (arguments.Drop != "none")
    {
      // Kept aside, not deleted: the reference for scoring an imputation of it.
      const std::string file = name.str() + "-" + DroppedModality(arguments, i) + ".nii.gz";
      std::filesystem::create_directories(heldOut + "/" + name.str());
      std::filesystem::rename(arguments.Output + "/" + name.str() + "/" + file,
                              heldOut + "/" + name.str() + "/" + file);
      std::cout << " (" << file << " moved to " << heldOut << "/" << name.str() << ")";
    }
    std::cout << std::endl;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cout << "[cdm phantom] wrote " << arguments.Cases << " case(s) (" << options.Anatomy << ", " << options.Size[0]
            << "x" << options.Size[1] << "x" << options.Size[2] << " at " << options.Spacing << " mm) in "
            << FormatSeconds(seconds) << std::endl;
  return 0;
}

struct MontageArguments
{
  std::vector<std::string> Images;
  std::vector<std::string> Errors;
  std::vector<std::string> Uncertainties;
  std::string              Output;
  std::string              Focus;
  int                      Axis{ 2 };
  int64_t                  Slice{ -1 };
  double                   ErrorMaximum{ 0.5 };
};

int
RunMontage(const MontageArguments & arguments)
{
  cdm::CheckOutputImageFile(arguments.Output, "--out");
  std::vector<cdm::MontagePanel> panels;
  for (const auto & path : arguments.Images)
  {
    panels.push_back({ cdm::ReadVolume(path), 0.0 });
  }
  for (const auto & path : arguments.Errors)
  {
    panels.push_back({ cdm::ReadVolume(path), arguments.ErrorMaximum });
  }
  for (const auto & path : arguments.Uncertainties)
  {
    panels.push_back({ cdm::ReadVolume(path), 0.0 });
  }
  int64_t slice = arguments.Slice;
  if (slice < 0)
  {
    slice = arguments.Focus.empty() ? panels.front().Image.Size[arguments.Axis] / 2
                                    : cdm::MostLabelledSlice(cdm::ReadVolume(arguments.Focus), arguments.Axis);
  }
  cdm::WriteMontage(panels, arguments.Axis, slice, arguments.Output);
  std::cout << "[cdm montage] wrote " << arguments.Output << " (" << panels.size() << " panels, slice " << slice
            << " along axis " << arguments.Axis << ")" << std::endl;
  return 0;
}

int
RunInfo(const std::string & path)
{
  const cdm::ModelFileInfo info = cdm::ReadModelFileInfo(path);
  const cdm::ModelConfig & c = info.Config;
  const std::string        sources = cdm::JoinNames(c.Sources);
  std::cout << "model file     " << path << " (" << info.FileBytes << " bytes, " << info.Tensors << " tensors, "
            << info.Parameters << " parameters)\n"
            << "format version " << c.FormatVersion << "\n"
            << "kind           " << c.ModelKind << ", preset " << c.Preset << ", " << c.Dimension << "D"
            << (c.Dimension == 2 ? ", slices along axis " + std::to_string(c.SliceAxis) : std::string()) << "\n"
            << "task           "
            << (c.IsUnified() ? "unified: synthesizes any of " + cdm::JoinNames(c.Targets, ",") +
                                  " from whichever others of " + sources + " are present"
                : c.IsSegmenter() ? sources + " -> tumour labels (0 background, 1 necrotic core, 2 oedema, 3 " +
                                      "enhancing tumour)" + (c.SourcesOptional ? " (sources optional)" : "")
                                  : sources + " -> " + c.Target + (c.SourcesOptional ? " (sources optional)" : ""))
            << "\n"
            << "representation " << c.Network.RepresentationDim << "-d, MDN " << c.Diffusion.TrainSteps << " steps ("
            << c.Diffusion.Schedule << ", sampling " << c.Diffusion.SamplingSteps << ")\n"
            << "receptive field radius " << c.UNetReceptiveRadius() << " voxels, alignment " << c.UNetAlignment()
            << "\n"
            << "header:\n"
            << c.ToJson(2) << std::endl;
  return 0;
}
} // namespace

int
main(int argc, char ** argv)
{
  cdm::KeepWorkingMemoryInTheHeap(); // this program's choice of allocator settings (cdmModel.h says why)
  CLI::App app{ "cdm: synthesize a missing MRI contrast with the Cross-conditioned Diffusion Model (itk-cdm)" };
  app.require_subcommand(1);
  app.set_version_flag("--version", "itk-cdm " CDM_VERSION_STRING);

  TrainArguments train;
  auto *         trainCommand = app.add_subcommand("train", "Train a CDM model on a folder of BraTS-layout cases");
  trainCommand->add_option("--data", train.Data, "Folder of cases: <case>/<case>-<modality>.nii.gz")->required();
  auto * targetOption =
    trainCommand->add_option("--target",
                             train.Options.Target,
                             "Modality to synthesize (t1n, t1c, t2w, t2f, pd); a list (t1c,t2f) or any (the four "
                             "BraTS ones): one unified model that synthesizes each of them from whichever others are "
                             "present. Required, except for a segmenter (which learns the cases' -seg labels)");
  trainCommand->add_option(
    "--sources",
    train.Sources,
    "Comma-separated source modalities (default: the other BraTS three, or for pd IXI's t1n, t2w; a segmenter: the "
    "four BraTS ones)");
  trainCommand->add_option("--dim", train.Options.Dimension, "Network dimension")
    ->check(CLI::IsMember({ 2, 3 }))
    ->capture_default_str();
  trainCommand->add_option("--preset", train.Options.Preset, "Network sizes")
    ->check(CLI::IsMember({ "tiny", "small", "paper" }))
    ->capture_default_str();
  trainCommand
    ->add_option(
      "--model-kind",
      train.Options.ModelKind,
      "cdm, a baseline: unet (no guidance), ddim (image-space diffusion), or segmenter (the UNet labelling the "
      "tumour: 1 necrotic core, 2 oedema, 3 enhancing; for BraSyn's segmentation score)")
    ->check(CLI::IsMember({ "cdm", "unet", "ddim", "segmenter" }))
    ->capture_default_str();
  trainCommand
    ->add_option("--stage",
                 train.Options.Stage,
                 "Stage(s) to train (cdm: mrm, cunet, mdn, finetune; unet: unet; ddim: ddim; segmenter: segment)")
    ->check(CLI::IsMember({ "all", "mrm", "cunet", "mdn", "finetune", "unet", "ddim", "segment" }))
    ->capture_default_str();
  trainCommand->add_option("--iterations", train.Options.Iterations, "Iterations per stage")
    ->check(CLI::PositiveNumber)
    ->capture_default_str();
  trainCommand->add_option("--stage-iterations",
                           train.StageIterations,
                           "Per-stage overrides of --iterations, e.g. mrm=150,cunet=450,mdn=150,finetune=250");
  trainCommand->add_flag("--resume", train.Options.Resume, "Continue from OUT.ckpt");
  trainCommand->add_option("--device", train.Options.Device, "auto, cpu, cuda or cuda:N")->capture_default_str();
  trainCommand->add_option("--seed", train.Options.Seed, "Random seed (repeatable runs on CPU)")->capture_default_str();
  trainCommand->add_option("--out", train.Options.Output, "Model file to write (.cdm)")->required();
  trainCommand->add_option("--batch-size", train.Options.BatchSize, "Batch size (0: the preset's)")
    ->capture_default_str();
  trainCommand
    ->add_option(
      "--patch-size", train.Options.PatchSize, "Patch edge in voxels (0: whole slices in 2D, the preset's in 3D)")
    ->capture_default_str();
  trainCommand->add_option("--learning-rate", train.Options.LearningRate, "Adam learning rate (0: the preset's)")
    ->capture_default_str();
  trainCommand
    ->add_option("--lr-decay-at",
                 train.Options.LearningRateDecayAt,
                 "From this fraction of each stage's iterations on, train at --lr-decay-factor times the learning rate "
                 "(0: a constant rate)")
    ->capture_default_str();
  trainCommand->add_option("--lr-decay-factor", train.Options.LearningRateDecayFactor, "See --lr-decay-at")
    ->capture_default_str();
  trainCommand->add_option("--validation-interval", train.Options.ValidationInterval, "Iterations between validations")
    ->check(CLI::PositiveNumber)
    ->capture_default_str();
  trainCommand->add_option("--checkpoint-interval", train.Options.CheckpointInterval, "Iterations between checkpoints")
    ->check(CLI::PositiveNumber)
    ->capture_default_str();
  trainCommand->add_option("--validation-fraction", train.Options.ValidationFraction, "Fraction of cases held out")
    ->check(CLI::Range(0.0, 0.9))
    ->capture_default_str();
  trainCommand->add_option("--slice-axis", train.Options.SliceAxis, "Axis a 2D model slices along (0, 1, 2)")
    ->check(CLI::Range(0, 2))
    ->capture_default_str();
  trainCommand
    ->add_option(
      "--source-dropout", train.Options.SourceDropout, "Probability of hiding each source (missing-modality training)")
    ->check(CLI::Range(0.0, 0.9))
    ->capture_default_str();
  trainCommand
    ->add_option("--tumour-fraction",
                 train.Options.TumourFraction,
                 "Share of training patches centred on a tumour voxel (cases with a -seg file)")
    ->check(CLI::Range(0.0, 1.0))
    ->capture_default_str();
  trainCommand
    ->add_option("--tumour-loss-weight",
                 train.Options.TumourLossWeight,
                 "Extra weight of the synthesis loss inside the tumour (weighted 1 + w there)")
    ->check(CLI::Range(0.0, 1000.0))
    ->capture_default_str();
  trainCommand
    ->add_option("--intensity-rule",
                 train.IntensityRule,
                 "Per-image normalisation, stored in the model: percentile (99.5th percentile = 1, clip 1.5) or "
                 "median (foreground median = 1, clip 4: the enhancing rim neither sets the scale nor is clipped)")
    ->check(CLI::IsMember({ "percentile", "median" }))
    ->capture_default_str();
  trainCommand
    ->add_option("--synthesis-loss",
                 train.Options.SynthesisLoss,
                 "L_Syn: l1 (median where the sources leave a voxel uncertain) or l2 (mean, what PSNR rewards)")
    ->check(CLI::IsMember({ "l1", "l2" }))
    ->capture_default_str();
  trainCommand
    ->add_option("--teacher-encoder",
                 train.Options.TeacherEncoder,
                 "true: the C-UNet stage trains the MRM encoder with it (z learns what the synthesis needs); false: "
                 "the MRM encoder stays frozen")
    ->capture_default_str();
  trainCommand
    ->add_option("--mdn-schedule",
                 train.Options.MdnSchedule,
                 "The MDN's diffusion: diffir (T = 4, unrolled, near-deterministic) or linear (T = 1000, 20 DDIM "
                 "steps, stochastic samples of z)")
    ->check(CLI::IsMember({ "diffir", "linear" }))
    ->capture_default_str();
  trainCommand
    ->add_option("--representation-noise",
                 train.Options.RepresentationNoise,
                 "Noise on z while the C-UNet trains, relative to z's spread")
    ->check(CLI::Range(0.0, 10.0))
    ->capture_default_str();
  trainCommand
    ->add_option("--film-init",
                 train.Options.FilmInit,
                 "How the Condition Embedding (FiLM from z) starts: zero (identity) or small (z gets a gradient from "
                 "the first step)")
    ->check(CLI::IsMember({ "zero", "small" }))
    ->capture_default_str();
  trainCommand->add_option("--threads", train.Threads, "CPU threads (default: ITK's global default)");
  trainCommand
    ->add_option("--dist-backend",
                 train.Options.DistributedBackend,
                 "Data-parallel training under torchrun (WORLD_SIZE > 1): auto (gloo on the CPU, nccl on CUDA), "
                 "gloo, nccl, or off (ignore torchrun's environment)")
    ->check(CLI::IsMember({ "auto", "gloo", "nccl", "off" }))
    ->capture_default_str();
  trainCommand
    ->add_option("--dist-timeout",
                 train.Options.DistributedTimeoutSeconds,
                 "Seconds a rank waits for the others (rendezvous, each all-reduce) before the run stops with an "
                 "error: a rank that died or fell behind")
    ->check(CLI::PositiveNumber)
    ->capture_default_str();

  SynthesizeArguments synthesize;
  auto * synthesizeCommand = app.add_subcommand("synthesize", "Synthesize the target modality from source images");
  synthesizeCommand->add_option("--model", synthesize.Model, "Model file (.cdm)")->required();
  synthesizeCommand->add_option("--source", synthesize.Sources, "NAME=FILE, once per source modality")->required();
  synthesizeCommand->add_option("--output", synthesize.Output, "Output image")->required();
  synthesizeCommand->add_option("--samples", synthesize.Options.Samples, "Representation samples K (mean output)")
    ->check(CLI::PositiveNumber)
    ->capture_default_str();
  synthesizeCommand->add_option(
    "--uncertainty", synthesize.Uncertainty, "Also write the voxel-wise standard deviation over samples");
  synthesizeCommand->add_option("--seed", synthesize.Options.Seed, "Seed of the starting noise")->capture_default_str();
  synthesizeCommand->add_option("--target",
                                synthesize.Options.Target,
                                "Modality to synthesize with a unified model (default: the one the sources lack; a "
                                "per-target model: its target)");
  synthesizeCommand
    ->add_option("--representation",
                 synthesize.RepresentationMode,
                 "The ablation of z: sampled (the MDN's, the default), oracle (the MRM encoding of --reference, the "
                 "true target), zero")
    ->check(CLI::IsMember({ "sampled", "oracle", "zero" }))
    ->capture_default_str();
  synthesizeCommand->add_option(
    "--reference", synthesize.Reference, "An image of the target modality, for --representation oracle");
  synthesizeCommand->add_option(
    "--eta", synthesize.Options.Eta, "DDIM eta (default: the model's, 0 = deterministic steps)");
  synthesizeCommand->add_option("--tile", synthesize.Tile, "Tile edge in voxels (0: whole image)")
    ->check(CLI::NonNegativeNumber)
    ->capture_default_str();
  synthesizeCommand
    ->add_option("--voxels-per-call",
                 synthesize.Options.VoxelsPerCall,
                 "Memory bound: voxels one network call reads (2D: slices per call; 3D: the source encoder's and "
                 "the C-UNet's slabs along z); 0: automatic (2^16 in 2D, 2^18 in 3D)")
    ->check(CLI::NonNegativeNumber)
    ->capture_default_str();
  synthesizeCommand
    ->add_option("--stream-divisions",
                 synthesize.StreamDivisions,
                 "Synthesize and write a 3D image in this many pieces through ITK's pipeline (itk::CDMImageFilter), "
                 "sampling z once: with NIfTI or uncompressed MetaImage (.mha) sources and an uncompressed .mha "
                 "output no whole image is held in memory; other sources are read whole, and another output is "
                 "gathered from the pieces and written whole. 0: read, synthesize and write whole images. Each "
                 "piece makes the image and, with --uncertainty, its uncertainty")
    ->capture_default_str();
  synthesizeCommand
    ->add_option("--precision",
                 synthesize.Precision,
                 "Arithmetic of the source encoder and the C-UNet: fp32, or bf16 / fp16 (autocast; faster where the "
                 "hardware has it, at a fidelity cost: bench/PRECISION.md)")
    ->check(CLI::IsMember({ "fp32", "bf16", "fp16" }))
    ->capture_default_str();
  synthesizeCommand->add_option("--device", synthesize.Device, "auto, cpu, cuda or cuda:N")->capture_default_str();
  synthesizeCommand->add_option("--threads", synthesize.Threads, "CPU threads (default: ITK's global default)");
  synthesizeCommand->add_flag("--quiet", synthesize.Quiet, "No progress output");
  synthesizeCommand->add_option(
    "--timing", synthesize.TimingJson, "Write the time of each half (sampling, C-UNet) as JSON");

  SegmentArguments segment;
  auto *           segmentCommand =
    app.add_subcommand("segment", "Label the tumour of a case with a segmenter (cdm train --model-kind segmenter)");
  segmentCommand->add_option("--model", segment.Model, "Segmenter model file (.cdm)")->required();
  segmentCommand->add_option("--source", segment.Sources, "NAME=FILE, once per modality")->required();
  segmentCommand
    ->add_option("--output",
                 segment.Output,
                 "Label image to write (8-bit: 0 background, 1 necrotic "
                 "core, 2 oedema, 3 enhancing tumour)")
    ->required();
  segmentCommand->add_flag("--missing-as-zero",
                           segment.Options.MissingSourcesAsZero,
                           "Let modalities be absent even for a model not trained for it: they enter as zero images "
                           "(the floor of BraSyn's segmentation score)");
  segmentCommand
    ->add_option("--voxels-per-call",
                 segment.Options.VoxelsPerCall,
                 "Memory bound: voxels one network call reads (2D: slices per call; 0: 2^16); a 3D model labels the "
                 "whole volume at once")
    ->check(CLI::NonNegativeNumber)
    ->capture_default_str();
  segmentCommand->add_option("--precision", segment.Precision, "fp32, bf16 or fp16 (as synthesize)")
    ->check(CLI::IsMember({ "fp32", "bf16", "fp16" }))
    ->capture_default_str();
  segmentCommand->add_option("--device", segment.Device, "auto, cpu, cuda or cuda:N")->capture_default_str();
  segmentCommand->add_option("--threads", segment.Threads, "CPU threads (default: ITK's global default)");
  segmentCommand->add_flag("--quiet", segment.Quiet, "No progress output");

  ImputeArguments impute;
  auto *          imputeCommand = app.add_subcommand(
    "impute", "Fill every missing modality of a folder of BraTS-layout cases (never overwrites; resumable)");
  imputeCommand->add_option("--data", impute.Options.Data, "Folder of <case>/<case>-<modality>.nii.gz")->required();
  imputeCommand
    ->add_option("--model",
                 impute.Options.Models,
                 "Model file (.cdm); repeat for several targets. Each gap is filled by the model that can use the "
                 "most of the case's real scans")
    ->required();
  imputeCommand->add_option(
    "--out", impute.Options.Output, "Folder for <case>/<case>-<modality>.nii.gz and the manifest (default: --data)");
  imputeCommand->add_flag("--dry-run", impute.Options.DryRun, "Print what would be written, write nothing");
  imputeCommand->add_option(
    "--shard", impute.Shard, "i/N: only every N-th case from the i-th (0-based; for array jobs), its own manifest");
  imputeCommand->add_option("--seed", impute.Options.Synthesis.Seed, "Seed of the starting noise (every file)")
    ->capture_default_str();
  imputeCommand->add_option("--samples", impute.Options.Synthesis.Samples, "Representation samples K (mean output)")
    ->check(CLI::PositiveNumber)
    ->capture_default_str();
  imputeCommand->add_option("--precision", impute.Precision, "fp32, bf16 or fp16 (as synthesize)")
    ->check(CLI::IsMember({ "fp32", "bf16", "fp16" }))
    ->capture_default_str();
  imputeCommand->add_option("--device", impute.Options.Device, "auto, cpu, cuda or cuda:N")->capture_default_str();
  imputeCommand->add_option("--threads", impute.Threads, "CPU threads (default: ITK's global default)");
  imputeCommand->add_flag("--json", impute.Json, "Print the report as JSON on stdout (progress on stderr)");

  EvaluateArguments evaluate;
  auto *            evaluateCommand = app.add_subcommand(
    "evaluate",
    "PSNR, SSIM and MAE of a prediction against a reference; or, with --segmentation-reference, the Dice of a "
               "predicted segmentation in BraTS's regions");
  evaluateCommand->add_option("--reference", evaluate.Reference, "Reference image");
  evaluateCommand->add_option("--prediction", evaluate.Prediction, "Predicted image");
  evaluateCommand->add_option("--mask", evaluate.Mask, "Mask image (nonzero = inside)");
  evaluateCommand
    ->add_option(
      "--normalize",
      evaluate.Normalize,
      "percentile: each image by a fixed robust rule (foreground 99.5th percentile = 1, clipped at 1.5), data range "
      "1; gain: the reference by that rule and the prediction by its least-squares gain against it; none: raw "
      "values, data range of the reference")
    ->check(CLI::IsMember({ "percentile", "gain", "none" }))
    ->capture_default_str();
  evaluateCommand->add_option("--segmentation",
                              evaluate.Segmentation,
                              "BraTS labels (1 core, 2 oedema, 3 enhancing): with --reference, adds figures inside "
                              "the tumour, the enhancing tumour and the non-tumour brain; with "
                              "--segmentation-reference, the predicted labels it scores");
  evaluateCommand->add_option("--segmentation-reference",
                              evaluate.SegmentationReference,
                              "True BraTS labels: reports the Dice of --segmentation for the enhancing tumour (3), "
                              "the tumour core (1, 3) and the whole tumour (1, 2, 3)");
  evaluateCommand->add_option("--uncertainty",
                              evaluate.Uncertainty,
                              "A voxel-wise uncertainty (cdm synthesize --uncertainty): adds its Spearman rho with "
                              "|error| and its AUROC for flagging the worst 10 % of voxels");
  evaluateCommand
    ->add_option("--protocol",
                 evaluate.Protocol,
                 "default: --normalize applies; brasyn: both images clipped to their 0.5/99.5 percentiles inside the "
                 "brain (--mask, else the whole image) and scaled to [0, 1], as the BraSyn challenge scores")
    ->check(CLI::IsMember({ "default", "brasyn" }))
    ->capture_default_str();
  evaluateCommand->add_flag("--json", evaluate.Json, "Print JSON");
  evaluateCommand->add_option(
    "--error-map", evaluate.ErrorMap, "Also write |reference - prediction| in the figures' units");

  MontageArguments montage;
  auto * montageCommand = app.add_subcommand("montage", "Write one slice of several images side by side as a PNG");
  montageCommand->add_option("images", montage.Images, "Images, left to right (each scaled by its robust maximum)")
    ->required();
  montageCommand->add_option("--error", montage.Errors, "Error maps appended on the right, shown on [0, --error-max]");
  montageCommand->add_option(
    "--uncertainty", montage.Uncertainties, "Uncertainty maps appended after the errors, each on its own scale");
  montageCommand->add_option("--error-max", montage.ErrorMaximum, "Upper end of the error maps' grey scale")
    ->capture_default_str();
  montageCommand->add_option("--out", montage.Output, "PNG file")->required();
  montageCommand->add_option("--axis", montage.Axis, "Slice across this axis (2: axial)")
    ->check(CLI::Range(0, 2))
    ->capture_default_str();
  montageCommand->add_option("--slice", montage.Slice, "Slice index (default: the middle, or see --focus)");
  montageCommand->add_option("--focus", montage.Focus, "Label image: show the slice with the most labelled voxels");

  PhantomArguments phantom;
  auto *           phantomCommand = app.add_subcommand("phantom", "Generate BraTS-like multi-contrast phantom cases");
  phantomCommand->add_option("--out", phantom.Output, "Folder to write <case>/<case>-<modality>.nii.gz into")
    ->required();
  phantomCommand->add_option("--cases", phantom.Cases, "Number of cases")
    ->check(CLI::PositiveNumber)
    ->capture_default_str();
  phantomCommand->add_option("--seed", phantom.Seed, "Seed (the same seed gives the same cases)")
    ->capture_default_str();
  phantomCommand->add_option("--anatomy", phantom.Options.Anatomy, "colin27 (Debian's mricron-data) or procedural")
    ->check(CLI::IsMember({ "colin27", "procedural" }))
    ->capture_default_str();
  phantomCommand->add_option("--size", phantom.Size, "Grid size X,Y,Z (default 128,128,96)");
  phantomCommand->add_option("--spacing", phantom.Options.Spacing, "Isotropic voxel spacing in mm")
    ->capture_default_str();
  phantomCommand->add_option("--prefix", phantom.Prefix, "Case name prefix")->capture_default_str();
  phantomCommand
    ->add_option("--tumour-slab",
                 phantom.Options.TumourSlab,
                 "Keep only this many axial slices, centred on the tumour (0: the whole grid)")
    ->capture_default_str();
  phantomCommand->add_option(
    "--gadolinium",
    phantom.Options.Gadolinium,
    "Gadolinium in the enhancing rim, mM, for every case (default: drawn in 0.3..0.8 per case; "
    "with the same seed, a case's counterfactual dose)");
  phantomCommand->add_option("--templates", phantom.Options.TemplateDirectory, "Folder of the Colin27 templates")
    ->capture_default_str();
  std::vector<std::string> dropChoices{ "none", "random" };
  dropChoices.insert(dropChoices.end(), cdm::KnownModalities().begin(), cdm::KnownModalities().end());
  phantomCommand
    ->add_option("--drop",
                 phantom.Drop,
                 "Remove one modality per case, as in BraSyn: random (drawn per case from the seed) or a named one; "
                 "the removed files are moved to --held-out for scoring")
    ->check(CLI::IsMember(dropChoices))
    ->capture_default_str();
  phantomCommand->add_option(
    "--held-out", phantom.HeldOut, "Where --drop moves the removed files (default: OUT-held-out)");
  phantomCommand
    ->add_option("--contrasts",
                 phantom.Options.Contrasts,
                 "Contrasts to write: any of t1n, t1c, t2w, t2f (BraTS, the default) and pd (proton density: with "
                 "t1n and t2w the IXI set), e.g. t1n,t2w,pd")
    ->delimiter(',')
    ->capture_default_str();

  std::string infoPath;
  auto *      infoCommand = app.add_subcommand("info", "Print a model file's header");
  infoCommand->add_option("model", infoPath, "Model file (.cdm)")->required();

  try
  {
    app.parse(argc, argv);
  }
  catch (const CLI::CallForHelp & e)
  {
    return app.exit(e);
  }
  catch (const CLI::CallForAllHelp & e)
  {
    return app.exit(e);
  }
  catch (const CLI::CallForVersion & e)
  {
    return app.exit(e);
  }
  catch (const CLI::ParseError & e)
  {
    app.exit(e);
    return 2;
  }

  try
  {
    if (*trainCommand)
    {
      train.TargetGiven = targetOption->count() > 0;
      return RunTrain(train);
    }
    if (*synthesizeCommand)
    {
      return RunSynthesize(synthesize);
    }
    if (*imputeCommand)
    {
      return RunImpute(impute);
    }
    if (*segmentCommand)
    {
      return RunSegment(segment);
    }
    if (*evaluateCommand)
    {
      return RunEvaluate(evaluate);
    }
    if (*montageCommand)
    {
      return RunMontage(montage);
    }
    if (*phantomCommand)
    {
      return RunPhantom(phantom);
    }
    return RunInfo(infoPath);
  }
  catch (const std::exception & e)
  {
    std::cerr << "cdm: error: " << e.what() << std::endl;
    return 1;
  }
}
