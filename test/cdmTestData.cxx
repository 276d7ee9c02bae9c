/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#include "cdmTestData.h"
#include "cdmModelImpl.h"

#include <ATen/CPUGeneratorImpl.h>

#include <array>
#include <cstdio>
#include <sys/wait.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <unistd.h>

namespace cdm
{
namespace testing
{

namespace
{
enum Tissue
{
  Background,
  Csf,
  Grey,
  White,
  Core,
  Rim,
  Oedema,
  TissueCount
};
} // namespace

std::map<std::string, Volume>
MakeCase(uint64_t seed, const std::array<int64_t, 3> & size, Volume * segmentation)
{
  std::mt19937_64                        random(seed * 7919 + 13);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  const double                           contrast = uniform(random); // a per-case property every modality shows
  const double                           cx = size[0] * (0.45 + 0.1 * uniform(random));
  const double                           cy = size[1] * (0.45 + 0.1 * uniform(random));
  const double                           rx = size[0] * (0.36 + 0.06 * uniform(random));
  const double                           ry = size[1] * (0.36 + 0.06 * uniform(random));
  const double                           lx = cx + rx * (uniform(random) - 0.5) * 0.8;
  const double                           ly = cy + ry * (uniform(random) - 0.5) * 0.8;
  const double                           lr = std::min(rx, ry) * (0.22 + 0.12 * uniform(random));

  // Intensity per tissue and modality (relative units).
  const std::map<std::string, std::array<double, TissueCount>> table{
    { "t1n", { 0.0, 0.20, 0.50, 0.65 + 0.15 * contrast, 0.30, 0.45, 0.40 } },
    { "t1c", { 0.0, 0.20, 0.50, 0.65 + 0.15 * contrast, 0.30, 0.95, 0.40 } },
    { "t2w", { 0.0, 1.00, 0.60, 0.50 - 0.15 * contrast, 0.90, 0.70, 0.80 } },
    { "t2f", { 0.0, 0.10, 0.60, 0.50 - 0.10 * contrast, 0.70, 0.60, 0.95 } },
  };

  Volume geometry;
  geometry.Dimension = size[2] > 1 ? 3 : 2;
  geometry.Size = size;
  geometry.Spacing = { 0.9, 1.1, size[2] > 1 ? 2.5 : 1.0 };
  geometry.Origin = { -12.5, 30.0, size[2] > 1 ? 7.0 : 0.0 };
  geometry.Direction = { 0, 1, 0, -1, 0, 0, 0, 0, 1 }; // rotated in-plane: geometry must be kept exactly
  std::map<std::string, Volume> images;
  if (segmentation)
  {
    *segmentation = geometry.EmptyCopy("seg");
  }
  for (const auto & [name, intensities] : table)
  {
    Volume                           volume = geometry.EmptyCopy(name);
    const double                     unit = 300.0 + 1500.0 * uniform(random);
    std::normal_distribution<double> noise(0.0, 0.015);
    for (int64_t z = 0; z < size[2]; ++z)
    {
      const double zf = size[2] > 1 ? (z - 0.5 * (size[2] - 1)) / (0.5 * size[2]) : 0.0;
      for (int64_t y = 0; y < size[1]; ++y)
      {
        for (int64_t x = 0; x < size[0]; ++x)
        {
          const double dx = (x - cx) / rx;
          const double dy = (y - cy) / ry;
          const double r = std::sqrt(dx * dx + dy * dy + 0.5 * zf * zf);
          const double ventricle =
            std::sqrt(std::pow((x - cx) / (0.18 * rx), 2) + std::pow((y - cy + 0.15 * ry) / (0.10 * ry), 2));
          const double lesion = std::sqrt(std::pow(x - lx, 2) + std::pow(y - ly, 2)) / lr + 0.6 * std::abs(zf);
          Tissue       tissue = Background;
          if (r < 1.0)
          {
            tissue = r > 0.82 ? Grey : White;
            if (ventricle < 1.0)
            {
              tissue = Csf;
            }
            if (lesion < 0.5)
            {
              tissue = Core;
            }
            else if (lesion < 0.8)
            {
              tissue = Rim;
            }
            else if (lesion < 1.4 && tissue == White)
            {
              tissue = Oedema;
            }
          }
          const double value = intensities[tissue] + (tissue == Background ? 0.0 : noise(random));
          const auto   index = static_cast<size_t>(x + size[0] * (y + size[1] * z));
          volume.Voxels[index] = static_cast<float>(std::max(0.0, value) * unit);
          if (segmentation)
          {
            segmentation->Voxels[index] =
              tissue == Core ? 1.0f : (tissue == Oedema ? 2.0f : (tissue == Rim ? 3.0f : 0.0f));
          }
        }
      }
    }
    images[name] = std::move(volume);
  }
  return images;
}

Dataset
MakeDataset(int cases, uint64_t seed, const std::array<int64_t, 3> & size, bool withSegmentation)
{
  Dataset data;
  for (int i = 0; i < cases; ++i)
  {
    Volume                              segmentation;
    const std::map<std::string, Volume> images =
      MakeCase(seed + static_cast<uint64_t>(i), size, withSegmentation ? &segmentation : nullptr);
    data.AddCase("case" + std::to_string(i), images, withSegmentation ? &segmentation : nullptr);
  }
  return data;
}

void
RandomizeFilm(const Model & model, uint64_t seed)
{
  torch::NoGradGuard noGrad;
  at::Generator      generator = at::detail::createCPUGenerator(seed);
  for (const auto & parameter : model.GetImpl().UNet->named_parameters())
  {
    if (parameter.key().find("film") != std::string::npos)
    {
      at::Tensor value = parameter.value(); // shares the parameter's storage
      value.copy_(at::normal(0.0, 0.2, value.sizes(), generator).to(value.device()));
    }
  }
}

std::string
TestDevice()
{
  const char * device = std::getenv("CDM_TEST_DEVICE");
  return device && *device ? std::string(device) : std::string("cpu");
}

std::string
MakeTemporaryDirectory(const std::string & name)
{
  namespace fs = std::filesystem;
  const fs::path path = fs::temp_directory_path() / ("cdm-test-" + name + "-" + std::to_string(::getpid()));
  fs::remove_all(path);
  fs::create_directories(path);
  return path.string();
}

double
MaxDifference(const Volume & a, const Volume & b)
{
  double largest = 0.0;
  for (size_t i = 0; i < std::min(a.Voxels.size(), b.Voxels.size()); ++i)
  {
    largest = std::max(largest, static_cast<double>(std::abs(a.Voxels[i] - b.Voxels[i])));
  }
  return largest;
}

CommandResult
RunCommand(const std::string & commandLine)
{
  CommandResult     result;
  const std::string command = commandLine + " 2>&1";
  FILE *            pipe = ::popen(command.c_str(), "r");
  if (!pipe)
  {
    return result;
  }
  std::array<char, 4096> buffer{};
  while (std::fgets(buffer.data(), static_cast<int>(buffer.size()), pipe))
  {
    result.Output += buffer.data();
  }
  const int status = ::pclose(pipe);
  result.ExitCode = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

} // namespace testing
} // namespace cdm
