/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#ifndef cdmDataset_h
#define cdmDataset_h

#include "cdmNormalization.h"
#include "cdmVolume.h"

#include <functional>
#include <map>
#include <string>
#include <vector>

namespace cdm
{

/** \brief The files of one case in the BraTS 2023 layout: `<case>/<case>-<modality>.nii.gz`. */
struct CaseFiles
{
  std::string                        Name;
  std::map<std::string, std::string> Files;        ///< modality -> path
  std::string                        Segmentation; ///< `-seg` file, empty when absent
};

/** \brief The result of scanning a data folder: usable cases, and the skipped ones with the reason. */
struct DatasetScan
{
  std::vector<CaseFiles>   Cases;
  std::vector<std::string> Skipped; ///< "<case>: <reason>"
};

/** A case's file in the BraTS layout: `<folder>/<name>-<suffix>.nii.gz`, or `.nii`; empty when neither exists. */
std::string
FindCaseFile(const std::string & folder, const std::string & name, const std::string & suffix);

/** Lists the case folders of `directory` (sorted by name) that hold every modality asked for (`.nii.gz` or
 *  `.nii`). Throws InputError when the folder does not exist. */
DatasetScan
ScanBraTSFolder(const std::string & directory, const std::vector<std::string> & modalities);

/** Reads one image file into a Volume (the ITK face supplies one; the core engine has no image IO). */
using VolumeReader = std::function<Volume(const std::string & path)>;

/** \brief One case in memory, every modality normalised by the model's rule. */
struct TrainingCase
{
  std::string                   Name;
  std::map<std::string, Volume> Images; ///< normalised
  std::map<std::string, double> Scales; ///< each modality's normalisation scale
  Volume Segmentation; ///< BraTS labels (1 core, 2 oedema, 3 enhancing) as read; no voxels when the case has none
};

/** \brief Cases held in memory for training and validation. */
class Dataset
{
public:
  explicit Dataset(NormalizationRule rule = {});

  /** Reads every scanned case (and its `-seg` file when there is one: tumour-aware training uses it). A case that
   *  cannot be read, or whose modalities disagree in size, spacing,
   *  origin or direction, is reported in Skipped() by name and left out, never silently used. */
  static Dataset
  Load(const DatasetScan & scan, const VolumeReader & reader, const NormalizationRule & rule = {});

  /** Adds a case from raw (not yet normalised) images and, when given, its segmentation; throws InputError when
   *  they disagree in geometry or hold a non-finite voxel. */
  void
  AddCase(const std::string &                   name,
          const std::map<std::string, Volume> & rawImages,
          const Volume *                        segmentation = nullptr);

  const std::vector<TrainingCase> &
  Cases() const
  {
    return m_Cases;
  }
  const std::vector<std::string> &
  Skipped() const
  {
    return m_Skipped;
  }
  const NormalizationRule &
  Rule() const
  {
    return m_Rule;
  }

private:
  NormalizationRule         m_Rule;
  std::vector<TrainingCase> m_Cases;
  std::vector<std::string>  m_Skipped;
};

} // namespace cdm

#endif
