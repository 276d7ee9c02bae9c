/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#include "cdmImpute.h"

#include "cdmAtomicFile.h"
#include "cdmDataset.h"
#include "cdmError.h"
#include "cdmImageIO.h"
#include "cdmSha256.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iterator>
#include <map>
#include <set>
#include <sstream>

#include <fcntl.h>
#include <unistd.h>

namespace cdm
{
namespace fs = std::filesystem;

namespace
{
struct LoadedModel
{
  std::string Path;
  std::string Sha256;
  Model       Network;
};

/** The folder the manifest and the written case folders live in. */
fs::path
OutputRoot(const ImputeOptions & options)
{
  return fs::path(options.Output.empty() ? options.Data : options.Output);
}

/** Appends one line and flushes it to the disk before returning (O_APPEND: one write per row). */
void
AppendLineDurably(const std::string & path, const std::string & line)
{
  const int descriptor = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (descriptor < 0)
  {
    throw InputError("cannot open the manifest '" + path + "' to append to it: " + std::strerror(errno));
  }
  const std::string text = line + "\n";
  const ssize_t     written = ::write(descriptor, text.data(), text.size());
  const bool        synced = ::fsync(descriptor) == 0;
  ::close(descriptor);
  if (written != static_cast<ssize_t>(text.size()) || !synced)
  {
    throw InputError("cannot append to the manifest '" + path + "': " + std::strerror(errno));
  }
}

/** The files (relative to the output root) that earlier runs' manifests list as synthesized. */
std::set<std::string>
SynthesizedFiles(const fs::path & root)
{
  std::set<std::string> files;
  if (!fs::is_directory(root))
  {
    return files;
  }
  for (const auto & entry : fs::directory_iterator(root))
  {
    const std::string name = entry.path().filename().string();
    if (name.rfind("impute-manifest", 0) != 0 || entry.path().extension() != ".jsonl")
    {
      continue;
    }
    std::ifstream stream(entry.path());
    std::string   line;
    while (std::getline(stream, line))
    {
      // A line cut short by a kill (it would have been the last) is not a row.
      const nlohmann::json row = nlohmann::json::parse(line, nullptr, false);
      if (row.is_object() && row.contains("file") && row["file"].is_string())
      {
        files.insert(row["file"].get<std::string>());
      }
    }
  }
  return files;
}

/** The model that fills `modality` from `present` using the most of them (the first given on a tie), or null. */
const LoadedModel *
ChooseModel(const std::vector<LoadedModel> & models,
            const std::string &              modality,
            const std::set<std::string> &    present,
            std::vector<std::string> *       sources)
{
  const LoadedModel * best = nullptr;
  for (const LoadedModel & candidate : models)
  {
    const ModelConfig & config = candidate.Network.Config();
    if (config.TargetIndex(modality) < 0)
    {
      continue;
    }
    std::vector<std::string> usable;
    bool                     complete = true;
    for (const auto & source : config.Sources)
    {
      if (present.count(source))
      {
        usable.push_back(source);
      }
      else
      {
        complete = false;
      }
    }
    const bool canRun = complete || (config.SourcesOptional && !usable.empty());
    if (canRun && (best == nullptr || usable.size() > sources->size()))
    {
      best = &candidate;
      *sources = usable;
    }
  }
  return best;
}

/** Why no model fills `modality`: what each candidate needs, or that none synthesizes it. */
std::string
NoModelReason(const std::vector<LoadedModel> & models,
              const std::string &              modality,
              const std::set<std::string> &    present)
{
  std::string needs;
  for (const LoadedModel & candidate : models)
  {
    const ModelConfig & config = candidate.Network.Config();
    if (config.TargetIndex(modality) >= 0)
    {
      std::vector<std::string> others;
      std::copy_if(config.Sources.begin(),
                   config.Sources.end(),
                   std::back_inserter(others),
                   [&modality](const std::string & source) { return source != modality; });
      needs += std::string(needs.empty() ? "" : "; ") + "'" + candidate.Path + "' needs " +
               (config.SourcesOptional ? "any of " : "") + JoinNames(others, ",");
    }
  }
  std::vector<std::string> presentInOrder;
  for (const std::string & name : KnownModalities())
  {
    if (present.count(name))
    {
      presentInOrder.push_back(name);
    }
  }
  const std::string has =
    "the case has " + (present.empty() ? std::string("no modality") : JoinNames(presentInOrder, ","));
  if (needs.empty())
  {
    return "no model given synthesizes " + modality + " (" + has + ")";
  }
  return "no model can synthesize " + modality + " from what is present: " + has + "; " + needs;
}

nlohmann::json
RowJson(const ImputedFile & file)
{
  return { { "case", file.Case },   { "modality", file.Modality },        { "file", file.File },
           { "model", file.Model }, { "model_sha256", file.ModelSha256 }, { "sources", file.Sources },
           { "seed", file.Seed },   { "samples", file.Samples },          { "seconds", file.Seconds } };
}

std::string
FormatDuration(double seconds)
{
  std::ostringstream text;
  text << std::fixed << std::setprecision(1) << seconds << " s";
  return text.str();
}
} // namespace

std::string
ImputeManifestPath(const ImputeOptions & options)
{
  const std::string name = options.ShardCount > 1 ? "impute-manifest.shard-" + std::to_string(options.ShardIndex) +
                                                      "-of-" + std::to_string(options.ShardCount) + ".jsonl"
                                                  : "impute-manifest.jsonl";
  return (OutputRoot(options) / name).string();
}

ImputeReport
Impute(const ImputeOptions & options, const std::function<void(const std::string &)> & progress)
{
  const auto say = [&progress](const std::string & line) {
    if (progress)
    {
      progress(line);
    }
  };
  if (options.Models.empty())
  {
    throw InputError("--model: no model file given; expected one or more .cdm files");
  }
  if (options.ShardCount < 1 || options.ShardIndex < 0 || options.ShardIndex >= options.ShardCount)
  {
    throw InputError("--shard " + std::to_string(options.ShardIndex) + "/" + std::to_string(options.ShardCount) +
                     ": expected i/N with 0 <= i < N");
  }
  if (!fs::is_directory(options.Data))
  {
    throw InputError("--data '" + options.Data + "' is not a folder; expected a folder of BraTS-layout cases");
  }
  std::vector<LoadedModel> models;
  for (const std::string & path : options.Models)
  {
    models.push_back({ path, FileSha256Hex(path), Model::Load(path, options.Device) });
    if (models.back().Network.Config().IsSegmenter())
    {
      throw InputError("--model '" + path +
                       "' is a segmenter; impute fills gaps with synthesis models (segment the "
                       "filled cases afterwards with cdm segment)");
    }
  }
  // The modalities a case should have: every one a model reads or synthesizes, in the BraTS order. A case that
  // lacks one that no model given can fill is reported, not passed over.
  std::set<std::string> named;
  for (const LoadedModel & m : models)
  {
    for (const std::string & target : m.Network.Config().SynthesizedModalities())
    {
      named.insert(target);
    }
    named.insert(m.Network.Config().Sources.begin(), m.Network.Config().Sources.end());
  }
  std::vector<std::string> modalities;
  for (const std::string & modality : KnownModalities())
  {
    if (named.count(modality))
    {
      modalities.push_back(modality);
    }
  }

  const fs::path root = OutputRoot(options);
  const bool     inPlace =
    options.Output.empty() || fs::weakly_canonical(options.Output) == fs::weakly_canonical(options.Data);
  const std::set<std::string> synthesizedBefore = SynthesizedFiles(root);
  std::vector<fs::path>       folders;
  for (const auto & entry : fs::directory_iterator(options.Data))
  {
    if (entry.is_directory())
    {
      folders.push_back(entry.path());
    }
  }
  std::sort(folders.begin(), folders.end());

  ImputeReport report;
  report.Manifest = ImputeManifestPath(options);
  const size_t shard = static_cast<size_t>(options.ShardIndex);
  const size_t shardCount = static_cast<size_t>(options.ShardCount);
  const size_t shardCases = folders.size() > shard ? (folders.size() - shard + shardCount - 1) / shardCount : 0;
  for (size_t index = shard; index < folders.size(); index += shardCount)
  {
    const std::string caseName = folders[index].filename().string();
    const fs::path    outFolder = inPlace ? folders[index] : root / caseName;
    ++report.Cases;
    const std::string where =
      "[" + std::to_string(report.Cases) + "/" + std::to_string(shardCases) + "] " + caseName + ": ";

    // Real scans: present in the case folder and not written by an earlier imputation.
    std::map<std::string, std::string> realFiles;
    std::set<std::string>              present;
    for (const std::string & modality : modalities)
    {
      const std::string path = FindCaseFile(folders[index].string(), caseName, modality);
      const bool        synthesized =
        !path.empty() && inPlace && synthesizedBefore.count(fs::relative(path, root).generic_string()) != 0;
      if (!path.empty() && !synthesized)
      {
        realFiles[modality] = path;
        present.insert(modality);
      }
    }
    std::vector<ImputedFile> plan;
    std::string              failure;
    for (const std::string & modality : modalities)
    {
      if (realFiles.count(modality))
      {
        continue;
      }
      const fs::path output = outFolder / (caseName + "-" + modality + ".nii.gz");
      if (!FindCaseFile(outFolder.string(), caseName, modality).empty())
      {
        report.Existing.push_back(fs::relative(output, root).generic_string());
        continue; // written by an earlier run: never overwritten
      }
      std::vector<std::string> sources;
      const LoadedModel *      chosen = ChooseModel(models, modality, present, &sources);
      if (chosen == nullptr)
      {
        failure = NoModelReason(models, modality, present);
        break;
      }
      ImputedFile file;
      file.Case = caseName;
      file.Modality = modality;
      file.File = fs::relative(output, root).generic_string();
      file.Model = chosen->Path;
      file.ModelSha256 = chosen->Sha256;
      file.Sources = sources;
      file.Seed = options.Synthesis.Seed;
      file.Samples = options.Synthesis.Samples;
      plan.push_back(file);
    }
    if (!failure.empty())
    {
      report.Failed.emplace_back(caseName, failure);
      say(where + "skipped: " + failure);
      continue;
    }
    if (plan.empty())
    {
      ++report.CompleteCases;
      say(where + "nothing missing");
      continue;
    }
    if (options.DryRun)
    {
      for (const ImputedFile & file : plan)
      {
        say(where + "would write " + file.File + " from " + JoinNames(file.Sources, ",") + " with " + file.Model);
        report.Planned.push_back(file);
      }
      continue;
    }
    try
    {
      SourceVolumes scans;
      for (const ImputedFile & file : plan)
      {
        for (const std::string & source : file.Sources)
        {
          if (!scans.count(source))
          {
            scans[source] = ReadVolume(realFiles.at(source)); // described by its path
          }
        }
      }
      const Volume & first = scans.begin()->second;
      for (const auto & [name, volume] : scans)
      {
        std::string why;
        if (!SameGeometry(first, volume, &why))
        {
          throw InputError("its scans are on different grids: " + why);
        }
      }
      fs::create_directories(outFolder);
      for (ImputedFile & file : plan)
      {
        const auto    start = std::chrono::steady_clock::now();
        SourceVolumes sources;
        for (const std::string & source : file.Sources)
        {
          sources[source] = scans.at(source);
        }
        const LoadedModel & model =
          *std::find_if(models.begin(), models.end(), [&file](const LoadedModel & m) { return m.Path == file.Model; });
        SynthesisOptions synthesis = options.Synthesis;
        synthesis.Target = file.Modality;
        SynthesisResult result = model.Network.Synthesize(sources, synthesis);
        const fs::path  output = root / file.File;
        WriteAtomically(output.string(), [&](const std::string & temporary) {
          WriteVolume(result.Image, temporary);
          file.Seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
          // Listed before it appears under its name: a kill between the two leaves a row without a file (redone
          // by the next run), never a synthesized file without a row.
          AppendLineDurably(report.Manifest, RowJson(file).dump());
        });
        report.Written.push_back(file);
        say(where + "wrote " + file.File + " from " + JoinNames(file.Sources, ",") + " with " + file.Model + " in " +
            FormatDuration(file.Seconds));
      }
    }
    catch (const std::exception & e)
    {
      report.Failed.emplace_back(caseName, e.what());
      say(where + "skipped: " + e.what());
    }
  }
  return report;
}

std::string
ImputeReportJson(const ImputeReport & report)
{
  nlohmann::json j = { { "cases", report.Cases },
                       { "complete_cases", report.CompleteCases },
                       { "written", nlohmann::json::array() },
                       { "planned", nlohmann::json::array() },
                       { "existing", report.Existing },
                       { "failed", nlohmann::json::array() },
                       { "manifest", report.Manifest } };
  for (const ImputedFile & file : report.Written)
  {
    j["written"].push_back(RowJson(file));
  }
  for (const ImputedFile & file : report.Planned)
  {
    j["planned"].push_back(RowJson(file));
  }
  for (const auto & [caseName, reason] : report.Failed)
  {
    j["failed"].push_back({ { "case", caseName }, { "reason", reason } });
  }
  return j.dump(2);
}

} // namespace cdm
