/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#include "cdmDataset.h"
#include "cdmError.h"

#include <algorithm>
#include <filesystem>

namespace cdm
{

namespace fs = std::filesystem;

std::string
FindCaseFile(const std::string & folder, const std::string & name, const std::string & suffix)
{
  for (const char * extension : { ".nii.gz", ".nii" })
  {
    const fs::path candidate = fs::path(folder) / (name + "-" + suffix + extension);
    if (fs::is_regular_file(candidate))
    {
      return candidate.string();
    }
  }
  return {};
}

DatasetScan
ScanBraTSFolder(const std::string & directory, const std::vector<std::string> & modalities)
{
  if (!fs::is_directory(directory))
  {
    throw InputError("data folder '" + directory + "' does not exist; expected a folder of BraTS-layout cases");
  }
  std::vector<fs::path> folders;
  for (const auto & entry : fs::directory_iterator(directory))
  {
    if (entry.is_directory())
    {
      folders.push_back(entry.path());
    }
  }
  std::sort(folders.begin(), folders.end());
  DatasetScan scan;
  for (const auto & folder : folders)
  {
    CaseFiles   files;
    std::string missing;
    files.Name = folder.filename().string();
    for (const auto & modality : modalities)
    {
      const std::string path = FindCaseFile(folder.string(), files.Name, modality);
      if (path.empty())
      {
        missing += (missing.empty() ? "" : ", ") + files.Name + "-" + modality + ".nii.gz";
      }
      files.Files[modality] = path;
    }
    files.Segmentation = FindCaseFile(folder.string(), files.Name, "seg");
    if (missing.empty())
    {
      scan.Cases.push_back(std::move(files));
    }
    else
    {
      scan.Skipped.push_back(files.Name + ": missing " + missing);
    }
  }
  return scan;
}

Dataset::Dataset(NormalizationRule rule)
    : m_Rule(std::move(rule))
{}

Dataset
Dataset::Load(const DatasetScan & scan, const VolumeReader & reader, const NormalizationRule & rule)
{
  Dataset data(rule);
  data.m_Skipped = scan.Skipped;
  for (const auto & files : scan.Cases)
  {
    try
    {
      std::map<std::string, Volume> raw;
      for (const auto & [modality, path] : files.Files)
      {
        raw[modality] = reader(path);
        raw[modality].Description = path;
      }
      Volume segmentation;
      if (!files.Segmentation.empty())
      {
        segmentation = reader(files.Segmentation);
        segmentation.Description = files.Segmentation;
      }
      data.AddCase(files.Name, raw, files.Segmentation.empty() ? nullptr : &segmentation);
    }
    catch (const std::exception & e)
    {
      data.m_Skipped.push_back(files.Name + ": " + e.what());
    }
  }
  return data;
}

void
Dataset::AddCase(const std::string & name, const std::map<std::string, Volume> & rawImages, const Volume * segmentation)
{
  if (rawImages.empty())
  {
    throw InputError("case '" + name + "' has no image");
  }
  TrainingCase entry;
  entry.Name = name;
  const Volume & first = rawImages.begin()->second;
  for (const auto & [modality, image] : rawImages)
  {
    std::string why;
    if (!SameGeometry(first, image, &why))
    {
      throw InputError("modalities disagree: " + why);
    }
    CheckFinite(image);
    Volume       normalised = image;
    const double scale = m_Rule.ComputeScale(image);
    m_Rule.Apply(normalised.Voxels, scale);
    entry.Scales[modality] = scale;
    entry.Images[modality] = std::move(normalised);
  }
  if (segmentation)
  {
    std::string why;
    if (!SameGeometry(first, *segmentation, &why))
    {
      throw InputError("segmentation disagrees with the images: " + why);
    }
    CheckFinite(*segmentation);
    entry.Segmentation = *segmentation;
  }
  m_Cases.push_back(std::move(entry));
}

} // namespace cdm
