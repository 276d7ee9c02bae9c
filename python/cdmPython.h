/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#ifndef cdmPython_h
#define cdmPython_h

// The face of the core engine that SWIG wraps for the `itk_cdm` Python package: plain types (flat float buffers,
// geometry as lists) so that the interface file stays small. The Python layer (itk_cdm/__init__.py) turns
// `itk.Image` objects and NumPy arrays into these and back. No torch and no ITK here.

#include "cdmModel.h"
#include "cdmTrainer.h"

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace cdm
{
namespace python
{

/** A float array handed to Python without a copy: the Python layer gets a NumPy array that owns `Values`. */
struct FloatArray
{
  std::vector<float>   Values;
  std::vector<int64_t> Shape; ///< NumPy order (slowest axis first)
};

/** Images with names and a shared geometry, as the engine takes them. */
class ImageSet
{
public:
  /** Adds `voxels` (x fastest, `size` = x, y, z) with spacing (3), origin (3) and a row-major direction (9).
   *  The voxels are copied once into the engine's buffer. Throws InputError on a size/buffer mismatch. */
  void
  Add(const std::string &          name,
      const float *                voxels,
      int64_t                      count,
      const std::vector<int64_t> & size,
      const std::vector<double> &  spacing,
      const std::vector<double> &  origin,
      const std::vector<double> &  direction);

  std::vector<std::string>
  Names() const;

  const SourceVolumes &
  Volumes() const
  {
    return m_Volumes;
  }

private:
  SourceVolumes m_Volumes;
};

/** A sampled or encoded representation z: values [samples][cells][dim] plus the sources' normalisation scales. */
class RepresentationData
{
public:
  explicit RepresentationData(Representation representation = {})
      : m_Representation(std::move(representation))
  {}
  int
  Samples() const
  {
    return m_Representation.Samples;
  }
  int64_t
  Cells() const
  {
    return m_Representation.Cells;
  }
  int
  Dim() const
  {
    return m_Representation.Dim;
  }
  std::map<std::string, double>
  SourceScales() const
  {
    return m_Representation.SourceScales;
  }
  /** A copy of the values as a [samples, cells, dim] array. */
  FloatArray
  Values() const;

  const Representation &
  Get() const
  {
    return m_Representation;
  }

private:
  Representation m_Representation;
};

/** A synthesis result: the image and, with several samples, the uncertainty (their standard deviation). */
class SynthesisData
{
public:
  explicit SynthesisData(SynthesisResult result)
      : m_Result(std::move(result))
  {}
  /** Moves the image out (a second call returns an empty array). */
  FloatArray
  TakeImage();
  FloatArray
  TakeUncertainty();
  bool
  HasUncertainty() const
  {
    return !m_Result.Uncertainty.Voxels.empty();
  }

private:
  SynthesisResult m_Result;
};

/** A loaded `.cdm` model. */
class ModelHandle
{
public:
  /** Reads and validates the file; throws ModelFileError naming it. Device: auto, cpu, cuda or cuda:N. */
  ModelHandle(const std::string & path, const std::string & device);

  std::string
  Path() const
  {
    return m_Path;
  }
  std::string
  Device() const;
  std::string
  Target() const;
  /** What the model synthesizes: a unified model's targets, or its one target. */
  std::vector<std::string>
  Targets() const;
  std::vector<std::string>
  Sources() const;
  unsigned int
  Dimension() const;
  std::string
  Preset() const;
  std::string
  Kind() const;
  bool
  SourcesOptional() const;
  int64_t
  NumberOfParameters() const;
  /** The model's whole configuration (with its training provenance) as JSON. */
  std::string
  ConfigJson() const;

  /** `target`: the modality to synthesize (empty: the model's, or the one a unified model's sources lack).
   *  `voxelsPerCall`: SynthesisOptions::VoxelsPerCall (0: automatic). */
  SynthesisData
  Synthesize(const ImageSet &    sources,
             int                 samples,
             uint64_t            seed,
             double              eta,
             const std::string & precision = "fp32",
             const std::string & target = "",
             int64_t             voxelsPerCall = 0) const;

  /** A segmenter's tumour labels (Model::Segment) as the result's image. */
  SynthesisData
  Segment(const ImageSet & sources, const std::string & precision = "fp32", bool missingSourcesAsZero = false) const;

  /** `target` holds one image, named by its modality (one the model synthesizes). */
  RepresentationData
  Encode(const ImageSet & target) const;

  RepresentationData
  SampleRepresentation(const ImageSet &    sources,
                       int                 samples,
                       uint64_t            seed,
                       double              eta,
                       const std::string & target = "") const;

private:
  std::string m_Path;
  Model       m_Model;
};

/** Training progress reaches Python through this class (a SWIG director): return false to stop the run
 *  (a checkpoint is saved and the run can be resumed). */
class TrainingObserver
{
public:
  virtual ~TrainingObserver() = default;
  virtual bool
  Report(const TrainingProgress & progress)
  {
    (void)progress;
    return true;
  }
};

/** Reads one image file for training (a SWIG director: the Python layer reads with itk.imread). A Python
 *  exception raised by Read skips the case, with the exception's message as the reason. */
class VolumeFileReader
{
public:
  virtual ~VolumeFileReader() = default;
  /** Reads `path` and adds it to `images` under `name` (ImageSet::Add). */
  virtual void
  Read(const std::string & path, const std::string & name, ImageSet & images) = 0;
};

/** Training cases in memory. */
class TrainingData
{
public:
  /** Scans `directory` for cases that hold every modality and reads them with `reader`, as `cdm train` does
   *  (Dataset::Load): a case that cannot be read or whose images disagree is skipped, named in Skipped(). */
  void
  Load(const std::string & directory, const std::vector<std::string> & modalities, VolumeFileReader & reader);
  size_t
  NumberOfCases() const
  {
    return m_Data.Cases().size();
  }
  /** "<case>: <reason>" for every case left out by Load. */
  std::vector<std::string>
  Skipped() const
  {
    return m_Data.Skipped();
  }
  const Dataset &
  Get() const
  {
    return m_Data;
  }

private:
  Dataset m_Data;
};

/** Trains as `cdm train` does and returns the run's report as JSON (stages, losses, validation, interrupted). */
std::string
Train(const TrainingData & data, const TrainingOptions & options, TrainingObserver * observer);

/** The modality names the engine knows (t1n, t1c, t2w, t2f, pd). */
std::vector<std::string>
KnownModalityNames();

/** The BraTS 2023 modalities (t1n, t1c, t2w, t2f). */
std::vector<std::string>
BraTSModalityNames();

/** The modalities a model for `targets` reads by default (cdm::DefaultModalities). */
std::vector<std::string>
DefaultModalityNames(const std::vector<std::string> & targets);

/** Torch's intra-op threads (0 leaves torch's default). */
void
SetThreads(int threads);

std::string
Version();

} // namespace python
} // namespace cdm

#endif
