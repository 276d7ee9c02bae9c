/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#include "cdmPhantom.h"
#include "cdmError.h"
#include "cdmImageIO.h"
#include "cdmModelConfig.h"

#include "itkAffineTransform.h"
#include "itkBSplineInterpolateImageFunction.h"
#include "itkBSplineTransform.h"
#include "itkBinaryThresholdImageFilter.h"
#include "itkCompositeTransform.h"
#include "itkImageFileReader.h"
#include "itkImageRegionConstIterator.h"
#include "itkImageRegionIterator.h"
#include "itkLabelStatisticsImageFilter.h"
#include "itkLinearInterpolateImageFunction.h"
#include "itkOtsuMultipleThresholdsImageFilter.h"
#include "itkResampleImageFilter.h"
#include "itkSmoothingRecursiveGaussianImageFilter.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>

namespace cdm
{

namespace
{
using ImageType = itk::Image<float, 3>;
using LabelImageType = itk::Image<unsigned char, 3>;

/** Relaxation times (ms) and proton density of a tissue at 3 T. */
struct TissueParameters
{
  double T1;
  double T2;
  double PD;
};

// Literature values at 3 T:
//  - grey and white matter T1/T2: Stanisz GJ et al., "T1, T2 relaxation and magnetization transfer in tissue at 3T",
//    Magn Reson Med 54:507-512, 2005 (GM 1820/99 ms, WM 1084/69 ms);
//  - CSF T1 4163 ms: Lu H et al., "Routine clinical brain MRI sequences for use at 3.0 Tesla", JMRI 22:13-22, 2005;
//    CSF T2 ~2000 ms (long-T2 free water, same source);
//  - proton densities: the BrainWeb phantom (Kwan RK-S, Evans AC, Pike GB, IEEE TMI 18:1085-1097, 1999):
//    CSF 1.0, GM 0.86, WM 0.77;
//  - tumour tissues (necrosis, enhancing tumour, vasogenic oedema): prolonged T1/T2 and raised water content as
//    reported for glioblastoma at 3 T (e.g. Blystad I et al., "Quantitative MRI for analysis of peritumoral
//    oedema in malignant gliomas", PLoS One 12:e0177135, 2017): oedema T1 ~1900 ms, T2 ~170 ms;
//  - gadolinium: R1 = 1/T1 + r1 C with r1 = 4.5 /s/mM (gadobutrol-like at 3 T: Rohrer M et al., Invest Radiol
//    40:715-724, 2005), C drawn in 0.3-0.8 mM in the enhancing rim, ~10 % of that in the necrotic core.
enum Tissue
{
  Csf,
  Grey,
  White,
  NecroticCore,
  EnhancingRim,
  Oedema,
  TissueCount
};
const std::array<TissueParameters, TissueCount> TissueTable{ { { 4163.0, 2000.0, 1.00 },
                                                               { 1820.0, 99.0, 0.86 },
                                                               { 1084.0, 69.0, 0.77 },
                                                               { 2500.0, 250.0, 0.95 },
                                                               { 1700.0, 120.0, 0.85 },
                                                               { 1900.0, 170.0, 0.88 } } };
constexpr double                                GadoliniumRelaxivity = 4.5e-3; // per ms per mM

ImageType::Pointer
MakeGrid(const PhantomOptions & options, const itk::Point<double, 3> & centre)
{
  auto                   image = ImageType::New();
  ImageType::SizeType    size;
  ImageType::SpacingType spacing;
  ImageType::PointType   origin;
  for (unsigned int a = 0; a < 3; ++a)
  {
    size[a] = static_cast<itk::SizeValueType>(options.Size[a]);
    spacing[a] = options.Spacing;
    origin[a] = centre[a] - 0.5 * (options.Size[a] - 1) * options.Spacing;
  }
  image->SetRegions(ImageType::RegionType(size));
  image->SetSpacing(spacing);
  image->SetOrigin(origin);
  image->Allocate();
  image->FillBuffer(0.0f);
  return image;
}

ImageType::Pointer
Blank(const ImageType * grid)
{
  auto image = ImageType::New();
  image->CopyInformation(grid);
  image->SetRegions(grid->GetLargestPossibleRegion());
  image->Allocate();
  image->FillBuffer(0.0f);
  return image;
}

/** Resamples `input` onto `grid` through `transform` (linear, or cubic B-spline when `cubic`). */
ImageType::Pointer
Resample(const ImageType *                    input,
         const ImageType *                    grid,
         const itk::Transform<double, 3, 3> * transform,
         bool                                 cubic = false)
{
  using ResampleType = itk::ResampleImageFilter<ImageType, ImageType>;
  auto resample = ResampleType::New();
  resample->SetInput(input);
  resample->SetOutputParametersFromImage(grid);
  resample->SetDefaultPixelValue(0.0f);
  if (transform)
  {
    resample->SetTransform(transform);
  }
  if (cubic)
  {
    resample->SetInterpolator(itk::BSplineInterpolateImageFunction<ImageType, double>::New());
  }
  else
  {
    resample->SetInterpolator(itk::LinearInterpolateImageFunction<ImageType, double>::New());
  }
  resample->Update();
  return resample->GetOutput();
}

ImageType::Pointer
Smooth(const ImageType * input, double sigmaMillimetres)
{
  using SmoothType = itk::SmoothingRecursiveGaussianImageFilter<ImageType, ImageType>;
  auto smooth = SmoothType::New();
  smooth->SetInput(input);
  smooth->SetSigma(sigmaMillimetres);
  smooth->Update();
  return smooth->GetOutput();
}

/** A smooth random field with zero mean and unit standard deviation: i.i.d. normal values on a coarse grid of
 *  `cells` per axis spanning the grid, interpolated by cubic B-splines. */
ImageType::Pointer
RandomField(const ImageType * grid, unsigned int cells, std::mt19937_64 & random)
{
  auto                   coarse = ImageType::New();
  ImageType::SizeType    size;
  ImageType::SpacingType spacing;
  ImageType::PointType   origin;
  const auto             fine = grid->GetLargestPossibleRegion().GetSize();
  for (unsigned int a = 0; a < 3; ++a)
  {
    size[a] = cells + 2;
    const double extent = fine[a] * grid->GetSpacing()[a];
    spacing[a] = extent / cells;
    origin[a] = grid->GetOrigin()[a] - spacing[a];
  }
  coarse->SetRegions(ImageType::RegionType(size));
  coarse->SetSpacing(spacing);
  coarse->SetOrigin(origin);
  coarse->SetDirection(grid->GetDirection());
  coarse->Allocate();
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (itk::ImageRegionIterator<ImageType> it(coarse, coarse->GetLargestPossibleRegion()); !it.IsAtEnd(); ++it)
  {
    it.Set(normal(random));
  }
  ImageType::Pointer field = Resample(coarse, grid, nullptr, true);
  double             sum = 0.0, squares = 0.0;
  const size_t       n = grid->GetLargestPossibleRegion().GetNumberOfPixels();
  float *            values = field->GetBufferPointer();
  for (size_t i = 0; i < n; ++i)
  {
    sum += values[i];
    squares += values[i] * values[i];
  }
  const double mean = sum / n;
  const double deviation = std::sqrt(std::max(1e-12, squares / n - mean * mean));
  for (size_t i = 0; i < n; ++i)
  {
    values[i] = static_cast<float>((values[i] - mean) / deviation);
  }
  return field;
}

double
Uniform(std::mt19937_64 & random, double low, double high)
{
  return std::uniform_real_distribution<double>(low, high)(random);
}
} // namespace

struct PhantomGenerator::Anatomy
{
  ImageType::Pointer Fractions[3]; // CSF, grey, white on the output grid
};

namespace
{
/** Colin27 (Debian's mricron-data): the 0.5 mm T1, masked by the brain of the 1 mm extracted template; partial-volume
 *  fractions from the intensity between the Otsu class means of CSF, grey and white matter. */
void
PrepareColin27(const PhantomOptions & options, ImageType::Pointer fractions[3])
{
  const std::string t1Path = options.TemplateDirectory + "/ch2better.nii.gz";
  const std::string brainPath = options.TemplateDirectory + "/ch2bet.nii.gz";
  for (const auto & path : { t1Path, brainPath })
  {
    if (!std::filesystem::is_regular_file(path))
    {
      throw InputError("anatomy colin27: template '" + path +
                       "' is missing; install Debian's mricron-data or use --anatomy procedural");
    }
  }
  const auto read = [](const std::string & path) {
    RegisterImageIOFactories();
    auto reader = itk::ImageFileReader<ImageType>::New();
    reader->SetFileName(path);
    reader->Update();
    return ImageType::Pointer(reader->GetOutput());
  };
  const ImageType::Pointer t1 = read(t1Path);
  const ImageType::Pointer brain = read(brainPath);

  // The output grid is centred on the brain's centroid.
  itk::Point<double, 3> centre;
  centre.Fill(0.0);
  double count = 0.0;
  for (itk::ImageRegionConstIteratorWithIndex<ImageType> it(brain, brain->GetLargestPossibleRegion()); !it.IsAtEnd();
       ++it)
  {
    if (it.Get() > 0.0f)
    {
      itk::Point<double, 3> p;
      brain->TransformIndexToPhysicalPoint(it.GetIndex(), p);
      for (unsigned int a = 0; a < 3; ++a)
      {
        centre[a] += p[a];
      }
      count += 1.0;
    }
  }
  for (unsigned int a = 0; a < 3; ++a)
  {
    centre[a] /= std::max(count, 1.0);
  }
  const ImageType::Pointer grid = MakeGrid(options, centre);

  using ThresholdType = itk::BinaryThresholdImageFilter<ImageType, ImageType>;
  auto mask = ThresholdType::New();
  mask->SetInput(brain);
  mask->SetLowerThreshold(1e-6f);
  mask->SetInsideValue(1.0f);
  mask->SetOutsideValue(0.0f);
  mask->Update();
  const double             antiAlias = 0.5 * options.Spacing;
  const ImageType::Pointer softMask = Resample(Smooth(mask->GetOutput(), antiAlias), grid, nullptr);
  const ImageType::Pointer intensity = Resample(Smooth(t1, antiAlias), grid, nullptr);

  // Otsu on the masked T1: background, CSF, grey, white.
  ImageType::Pointer masked = Blank(grid);
  const size_t       n = grid->GetLargestPossibleRegion().GetNumberOfPixels();
  for (size_t i = 0; i < n; ++i)
  {
    masked->GetBufferPointer()[i] = softMask->GetBufferPointer()[i] > 0.5f ? intensity->GetBufferPointer()[i] : 0.0f;
  }
  using OtsuType = itk::OtsuMultipleThresholdsImageFilter<ImageType, LabelImageType>;
  auto otsu = OtsuType::New();
  otsu->SetInput(masked);
  otsu->SetNumberOfThresholds(3);
  otsu->SetNumberOfHistogramBins(256);
  otsu->Update();
  using StatisticsType = itk::LabelStatisticsImageFilter<ImageType, LabelImageType>;
  auto statistics = StatisticsType::New();
  statistics->SetInput(masked);
  statistics->SetLabelInput(otsu->GetOutput());
  statistics->Update();
  double means[3];
  for (unsigned char label = 1; label <= 3; ++label)
  {
    if (!statistics->HasLabel(label))
    {
      throw InputError("anatomy colin27: the template could not be segmented into CSF, grey and white matter");
    }
    means[label - 1] = statistics->GetMean(label);
  }
  for (auto & f : { 0, 1, 2 })
  {
    fractions[f] = Blank(grid);
  }
  for (size_t i = 0; i < n; ++i)
  {
    const double v = intensity->GetBufferPointer()[i];
    const double m = std::clamp(static_cast<double>(softMask->GetBufferPointer()[i]), 0.0, 1.0);
    double       csf = 0.0, grey = 0.0, white = 0.0;
    if (v <= means[0])
    {
      csf = 1.0;
    }
    else if (v < means[1])
    {
      grey = (v - means[0]) / (means[1] - means[0]);
      csf = 1.0 - grey;
    }
    else if (v < means[2])
    {
      white = (v - means[1]) / (means[2] - means[1]);
      grey = 1.0 - white;
    }
    else
    {
      white = 1.0;
    }
    fractions[0]->GetBufferPointer()[i] = static_cast<float>(m * csf);
    fractions[1]->GetBufferPointer()[i] = static_cast<float>(m * grey);
    fractions[2]->GetBufferPointer()[i] = static_cast<float>(m * white);
  }
}

/** A procedural head: an ellipsoidal brain with a noise-perturbed surface, a cortical grey-matter ribbon folded by
 *  CSF-filled sulci, and two lateral ventricles. */
void
PrepareProcedural(const PhantomOptions & options, ImageType::Pointer fractions[3])
{
  itk::Point<double, 3> centre;
  centre.Fill(0.0);
  const ImageType::Pointer grid = MakeGrid(options, centre);
  std::mt19937_64          random(20240917);
  const ImageType::Pointer surface = RandomField(grid, 5, random);
  const ImageType::Pointer folds = RandomField(grid, 14, random);
  ImageType::Pointer       labels[3] = { Blank(grid), Blank(grid), Blank(grid) };
  double                   radii[3];
  for (unsigned int a = 0; a < 3; ++a)
  {
    radii[a] = 0.42 * options.Size[a] * options.Spacing;
  }
  const double ribbon = 3.5 / ((radii[0] + radii[1] + radii[2]) / 3.0); // ~3.5 mm of cortex
  for (itk::ImageRegionConstIteratorWithIndex<ImageType> it(grid, grid->GetLargestPossibleRegion()); !it.IsAtEnd();
       ++it)
  {
    itk::Point<double, 3> p;
    grid->TransformIndexToPhysicalPoint(it.GetIndex(), p);
    const size_t i = grid->ComputeOffset(it.GetIndex());
    const double r =
      std::sqrt(std::pow(p[0] / radii[0], 2) + std::pow(p[1] / radii[1], 2) + std::pow(p[2] / radii[2], 2)) *
      (1.0 + 0.04 * surface->GetBufferPointer()[i]);
    if (r >= 1.0)
    {
      continue;
    }
    int tissue = White;
    if (r > 1.0 - ribbon * (1.0 + 0.5 * folds->GetBufferPointer()[i]))
    {
      tissue = Grey;
    }
    if (r > 0.8 && folds->GetBufferPointer()[i] > 1.1)
    {
      tissue = Csf; // sulci
    }
    for (const double side : { -1.0, 1.0 })
    {
      const double v = std::pow((p[0] - side * 0.12 * radii[0]) / (0.08 * radii[0]), 2) +
                       std::pow((p[1] + 0.05 * radii[1]) / (0.3 * radii[1]), 2) +
                       std::pow((p[2] - 0.1 * radii[2]) / (0.15 * radii[2]), 2);
      if (v < 1.0)
      {
        tissue = Csf;
      }
    }
    labels[tissue]->GetBufferPointer()[i] = 1.0f;
  }
  for (unsigned int f = 0; f < 3; ++f)
  {
    fractions[f] = Smooth(labels[f], 0.6 * options.Spacing);
  }
}
} // namespace

PhantomGenerator::PhantomGenerator(const PhantomOptions & options)
    : m_Options(options)
    , m_Anatomy(std::make_unique<Anatomy>())
{
  for (unsigned int a = 0; a < 3; ++a)
  {
    if (options.Size[a] < 8 || options.Size[a] > 1024)
    {
      throw InputError("phantom --size: each extent must be within 8..1024 voxels, got " +
                       std::to_string(options.Size[a]));
    }
  }
  if (options.Contrasts.empty())
  {
    throw InputError("phantom --contrasts: expected at least one of " + JoinNames(KnownModalities()));
  }
  for (const std::string & contrast : options.Contrasts)
  {
    if (std::find(KnownModalities().begin(), KnownModalities().end(), contrast) == KnownModalities().end())
    {
      throw InputError("phantom --contrasts: '" + contrast + "' is unknown; expected some of " +
                       JoinNames(KnownModalities()));
    }
  }
  if (options.TumourSlab < 0 || options.TumourSlab > options.Size[2])
  {
    throw InputError("phantom --tumour-slab: expected 0 (whole grid) .. " + std::to_string(options.Size[2]) +
                     " slices, got " + std::to_string(options.TumourSlab));
  }
  if (!(options.Gadolinium < 0.0 || options.Gadolinium <= 5.0))
  {
    throw InputError("phantom --gadolinium: expected 0..5 mM (or leave it out to draw 0.3..0.8 per case), got " +
                     std::to_string(options.Gadolinium));
  }
  if (!(options.Spacing >= 0.25 && options.Spacing <= 10.0))
  {
    throw InputError("phantom --spacing: expected 0.25..10 mm, got " + std::to_string(options.Spacing));
  }
  if (options.Anatomy == "colin27")
  {
    PrepareColin27(options, m_Anatomy->Fractions);
  }
  else if (options.Anatomy == "procedural")
  {
    PrepareProcedural(options, m_Anatomy->Fractions);
  }
  else
  {
    throw InputError("phantom --anatomy '" + options.Anatomy + "' is unknown; expected colin27 or procedural");
  }
}

PhantomGenerator::~PhantomGenerator() = default;

PhantomCase
PhantomGenerator::Generate(uint64_t seed) const
{
  std::mt19937_64   random(seed * 0x9E3779B97F4A7C15ull + 12345);
  const ImageType * grid = m_Anatomy->Fractions[0];
  nlohmann::json    parameters;
  parameters["seed"] = seed;

  // 1. Per-case anatomy: a small affine and a smooth B-spline deformation about the grid centre.
  const auto            size = grid->GetLargestPossibleRegion().GetSize();
  itk::Point<double, 3> centre;
  for (unsigned int a = 0; a < 3; ++a)
  {
    centre[a] = grid->GetOrigin()[a] + 0.5 * (size[a] - 1) * grid->GetSpacing()[a];
  }
  auto affine = itk::AffineTransform<double, 3>::New();
  affine->SetCenter(centre);
  const double scale = Uniform(random, 0.93, 1.07);
  affine->Scale(scale);
  const double angle = Uniform(random, -0.08, 0.08);
  affine->Rotate(0, 1, angle);
  itk::Vector<double, 3> shift;
  for (unsigned int a = 0; a < 3; ++a)
  {
    shift[a] = Uniform(random, -3.0, 3.0);
  }
  affine->Translate(shift);
  using BSplineType = itk::BSplineTransform<double, 3, 3>;
  auto                                bspline = BSplineType::New();
  BSplineType::PhysicalDimensionsType dimensions;
  BSplineType::MeshSizeType           mesh;
  BSplineType::OriginType             origin;
  for (unsigned int a = 0; a < 3; ++a)
  {
    dimensions[a] = (size[a] - 1) * grid->GetSpacing()[a];
    origin[a] = grid->GetOrigin()[a];
    mesh[a] = 4;
  }
  bspline->SetTransformDomainOrigin(origin);
  bspline->SetTransformDomainPhysicalDimensions(dimensions);
  bspline->SetTransformDomainMeshSize(mesh);
  bspline->SetTransformDomainDirection(grid->GetDirection());
  BSplineType::ParametersType      coefficients(bspline->GetNumberOfParameters());
  const double                     deformation = Uniform(random, 1.5, 3.5); // mm
  std::normal_distribution<double> normal(0.0, 1.0);
  for (unsigned int i = 0; i < coefficients.size(); ++i)
  {
    coefficients[i] = deformation * normal(random);
  }
  bspline->SetParametersByValue(coefficients);
  auto composite = itk::CompositeTransform<double, 3>::New();
  composite->AddTransform(affine);
  composite->AddTransform(bspline);
  parameters["affine"] = { { "scale", scale },
                           { "rotation_rad", angle },
                           { "shift_mm", { shift[0], shift[1], shift[2] } } };
  parameters["deformation_mm"] = deformation;

  ImageType::Pointer tissue[TissueCount];
  for (unsigned int f = 0; f < 3; ++f)
  {
    tissue[f] = Resample(m_Anatomy->Fractions[f], grid, composite);
  }
  const size_t n = grid->GetLargestPossibleRegion().GetNumberOfPixels();

  // 2. The tumour: a centre in white matter, an irregular core / enhancing rim / oedema.
  itk::Point<double, 3> tumourCentre = centre;
  for (int attempt = 0; attempt < 20000; ++attempt)
  {
    ImageType::IndexType index;
    for (unsigned int a = 0; a < 3; ++a)
    {
      index[a] = static_cast<itk::IndexValueType>(random() % size[a]);
    }
    if (tissue[White]->GetPixel(index) > 0.7f)
    {
      grid->TransformIndexToPhysicalPoint(index, tumourCentre);
      break;
    }
  }
  const double radius = Uniform(random, 6.0, 14.0);
  const double coreRatio = Uniform(random, 0.35, 0.6);
  const double oedemaRatio = Uniform(random, 1.5, 2.4);
  double       stretch[3];
  for (double & s : stretch)
  {
    s = Uniform(random, 0.8, 1.25);
  }
  const ImageType::Pointer irregularity = RandomField(grid, 10, random);
  ImageType::Pointer       indicators[3] = { Blank(grid), Blank(grid), Blank(grid) };
  for (itk::ImageRegionConstIteratorWithIndex<ImageType> it(grid, grid->GetLargestPossibleRegion()); !it.IsAtEnd();
       ++it)
  {
    itk::Point<double, 3> p;
    grid->TransformIndexToPhysicalPoint(it.GetIndex(), p);
    const size_t i = grid->ComputeOffset(it.GetIndex());
    double       distance = 0.0;
    for (unsigned int a = 0; a < 3; ++a)
    {
      distance += std::pow((p[a] - tumourCentre[a]) / stretch[a], 2);
    }
    const double d =
      std::sqrt(distance) / radius * std::clamp(1.0 + 0.25 * irregularity->GetBufferPointer()[i], 0.6, 1.4);
    const double brain =
      tissue[Csf]->GetBufferPointer()[i] + tissue[Grey]->GetBufferPointer()[i] + tissue[White]->GetBufferPointer()[i];
    if (brain < 0.5)
    {
      continue;
    }
    if (d < coreRatio)
    {
      indicators[0]->GetBufferPointer()[i] = 1.0f;
    }
    else if (d < 1.0)
    {
      indicators[1]->GetBufferPointer()[i] = 1.0f;
    }
    else if (d < oedemaRatio && tissue[White]->GetBufferPointer()[i] > 0.3f)
    {
      indicators[2]->GetBufferPointer()[i] = 1.0f; // vasogenic oedema spreads in white matter
    }
  }
  for (unsigned int k = 0; k < 3; ++k)
  {
    tissue[NecroticCore + k] = Smooth(indicators[k], 0.5 * m_Options.Spacing);
  }
  Volume segmentation = ToVolume(grid, "seg");
  for (size_t i = 0; i < n; ++i)
  {
    const float brain =
      tissue[Csf]->GetBufferPointer()[i] + tissue[Grey]->GetBufferPointer()[i] + tissue[White]->GetBufferPointer()[i];
    float lesion = 0.0f;
    for (unsigned int k = NecroticCore; k < TissueCount; ++k)
    {
      float & f = tissue[k]->GetBufferPointer()[i];
      f = std::min(f, brain);
      lesion += f;
    }
    const float keep = brain > 0.0f ? std::max(0.0f, brain - lesion) / brain : 0.0f;
    for (unsigned int k = Csf; k <= White; ++k)
    {
      tissue[k]->GetBufferPointer()[i] *= keep;
    }
    // BraTS labels: 1 necrotic core, 2 oedema, 3 enhancing tumour.
    const float core = tissue[NecroticCore]->GetBufferPointer()[i];
    const float rim = tissue[EnhancingRim]->GetBufferPointer()[i];
    const float oedema = tissue[Oedema]->GetBufferPointer()[i];
    float       label = 0.0f;
    if (std::max({ core, rim, oedema }) >= 0.5f)
    {
      label = core >= rim && core >= oedema ? 1.0f : (rim >= oedema ? 3.0f : 2.0f);
    }
    segmentation.Voxels[i] = label;
  }
  parameters["tumour"] = { { "centre_mm", { tumourCentre[0], tumourCentre[1], tumourCentre[2] } },
                           { "radius_mm", radius },
                           { "core_ratio", coreRatio },
                           { "oedema_ratio", oedemaRatio } };

  // 3. Sequences (jittered per case) and signal equations.
  const double jitter = 0.1;
  const double tr1 = 500.0 * Uniform(random, 1 - jitter, 1 + jitter),
               te1 = 10.0 * Uniform(random, 1 - jitter, 1 + jitter);
  const double tr2 = 4000.0 * Uniform(random, 1 - jitter, 1 + jitter),
               te2 = 100.0 * Uniform(random, 1 - jitter, 1 + jitter);
  const double trF = 9000.0 * Uniform(random, 1 - jitter, 1 + jitter),
               teF = 120.0 * Uniform(random, 1 - jitter, 1 + jitter);
  const double csfT1 = TissueTable[Csf].T1;
  const double tiF = csfT1 * std::log(2.0 / (1.0 + std::exp(-trF / csfT1))) * Uniform(random, 0.97, 1.03); // nulls CSF
  const double drawnGadolinium = Uniform(random, 0.3, 0.8);                                                // mM
  const double gadolinium = m_Options.Gadolinium >= 0.0 ? m_Options.Gadolinium : drawnGadolinium;
  parameters["sequences"] = { { "t1", { { "TR", tr1 }, { "TE", te1 } } },
                              { "t2w", { { "TR", tr2 }, { "TE", te2 } } },
                              { "flair", { { "TR", trF }, { "TE", teF }, { "TI", tiF } } },
                              { "gadolinium_mM", gadolinium } };
  const auto spinEcho = [](const TissueParameters & t, double tr, double te) {
    return t.PD * (1.0 - std::exp(-tr / t.T1)) * std::exp(-te / t.T2);
  };
  const auto inversionRecovery = [](const TissueParameters & t, double tr, double te, double ti) {
    return t.PD * std::abs(1.0 - 2.0 * std::exp(-ti / t.T1) + std::exp(-tr / t.T1)) * std::exp(-te / t.T2);
  };
  std::map<std::string, std::array<double, TissueCount>> signal;
  for (int k = 0; k < TissueCount; ++k)
  {
    TissueParameters enhanced = TissueTable[k];
    const double     concentration = k == EnhancingRim ? gadolinium : (k == NecroticCore ? 0.1 * gadolinium : 0.0);
    enhanced.T1 = 1.0 / (1.0 / enhanced.T1 + GadoliniumRelaxivity * concentration);
    signal["t1n"][k] = spinEcho(TissueTable[k], tr1, te1);
    signal["t1c"][k] = spinEcho(enhanced, tr1, te1);
    signal["t2w"][k] = spinEcho(TissueTable[k], tr2, te2);
    signal["t2f"][k] = inversionRecovery(TissueTable[k], trF, teF, tiF);
  }

  // 4. Bias field, scanner units, Rician noise; background zero as in skull-stripped BraTS images.
  PhantomCase  result;
  const double snr = Uniform(random, 18.0, 40.0);
  parameters["snr"] = snr;
  const auto render = [&](const std::string & modality, const std::array<double, TissueCount> & values) {
    const double                     unit = Uniform(random, 400.0, 1600.0);
    const double                     biasAmplitude = Uniform(random, 0.05, 0.2);
    const ImageType::Pointer         bias = RandomField(grid, 3, random);
    const double                     sigma = values[White] / snr;
    std::normal_distribution<double> noise(0.0, sigma);
    Volume                           volume = ToVolume(grid, modality);
    for (size_t i = 0; i < n; ++i)
    {
      double clean = 0.0, brain = 0.0;
      for (int k = 0; k < TissueCount; ++k)
      {
        const double f = tissue[k]->GetBufferPointer()[i];
        clean += f * values[k];
        brain += f;
      }
      clean *= std::exp(biasAmplitude * bias->GetBufferPointer()[i]);
      const double real = clean + noise(random);
      const double imaginary = noise(random);
      volume.Voxels[i] = brain > 0.5 ? static_cast<float>(unit * std::sqrt(real * real + imaginary * imaginary)) : 0.0f;
    }
    parameters["units"][modality] = unit;
    parameters["bias_amplitude"][modality] = biasAmplitude;
    result.Images[modality] = std::move(volume);
  };
  if (std::find(m_Options.Contrasts.begin(), m_Options.Contrasts.end(), "pd") != m_Options.Contrasts.end())
  {
    // Proton density weighting: a spin echo whose long TR lets T1 recover and whose short TE leaves T2 little
    // time. Drawn after every other parameter (and rendered last), so that the BraTS contrasts of a seed stay.
    signal["pd"] = {};
  }
  for (const auto & [modality, values] : signal)
  {
    if (modality == "pd")
    {
      continue;
    }
    render(modality, values);
  }
  if (signal.count("pd"))
  {
    const double trPD = 5000.0 * Uniform(random, 1 - jitter, 1 + jitter);
    const double tePD = 10.0 * Uniform(random, 1 - jitter, 1 + jitter);
    parameters["sequences"]["pd"] = { { "TR", trPD }, { "TE", tePD } };
    std::array<double, TissueCount> values{};
    for (int k = 0; k < TissueCount; ++k)
    {
      values[k] = spinEcho(TissueTable[k], trPD, tePD);
    }
    render("pd", values);
  }
  for (auto it = result.Images.begin(); it != result.Images.end();)
  {
    const bool wanted =
      std::find(m_Options.Contrasts.begin(), m_Options.Contrasts.end(), it->first) != m_Options.Contrasts.end();
    it = wanted ? std::next(it) : result.Images.erase(it);
  }
  result.Segmentation = std::move(segmentation);
  result.TissueFractions["csf"] = ToVolume(tissue[Csf], "csf");
  result.TissueFractions["grey"] = ToVolume(tissue[Grey], "grey");
  result.TissueFractions["white"] = ToVolume(tissue[White], "white");
  if (m_Options.TumourSlab > 0)
  {
    // The axial slab about the tumour's centroid slice, kept inside the grid.
    const auto sx = static_cast<int64_t>(size[0]), sy = static_cast<int64_t>(size[1]),
               sz = static_cast<int64_t>(size[2]);
    double sum = 0.0, count = 0.0;
    for (size_t i = 0; i < n; ++i)
    {
      if (result.Segmentation.Voxels[i] > 0.0f)
      {
        sum += static_cast<double>(static_cast<int64_t>(i) / (sx * sy));
        count += 1.0;
      }
    }
    const int64_t centreSlice = count > 0.0 ? std::llround(sum / count) : sz / 2;
    const int64_t first = std::clamp<int64_t>(centreSlice - m_Options.TumourSlab / 2, 0, sz - m_Options.TumourSlab);
    const std::array<int64_t, 3> index{ { 0, 0, first } };
    const std::array<int64_t, 3> slab{ { sx, sy, m_Options.TumourSlab } };
    for (auto & [name, volume] : result.Images)
    {
      volume = CropVolume(volume, index, slab);
    }
    result.Segmentation = CropVolume(result.Segmentation, index, slab);
    for (auto & [name, volume] : result.TissueFractions)
    {
      volume = CropVolume(volume, index, slab);
    }
    parameters["tumour_slab"] = { { "first_slice", first }, { "slices", m_Options.TumourSlab } };
  }
  result.ParametersJson = parameters.dump();
  return result;
}

void
PhantomGenerator::Write(const PhantomCase & phantomCase, const std::string & directory, const std::string & name)
{
  const std::string folder = directory + "/" + name;
  std::filesystem::create_directories(folder);
  for (const auto & [modality, volume] : phantomCase.Images)
  {
    WriteVolume(volume, folder + "/" + name + "-" + modality + ".nii.gz");
  }
  WriteLabelVolume(phantomCase.Segmentation, folder + "/" + name + "-seg.nii.gz");
}

} // namespace cdm
