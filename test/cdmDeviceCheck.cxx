/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
// The device check of scripts/gpu-check.sh (core engine only, no ITK): does a synthesis on the accelerator equal the
// CPU's, and how long do CDM, the UNet and DDIM-50 take on a 240x240x155 volume there, in fp32 and in bf16 (autocast)?
// Writes one JSON file.
//   cdmDeviceCheck --model MODEL.cdm --device cuda --out check.json [--size 240,240,155] [--tolerance 1e-3]
// Exit code 3 when the CPU and device syntheses differ by more than the tolerance (relative to the image range).
#include "cdmModel.h"
#include "cdmTestData.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>

namespace
{
using Clock = std::chrono::steady_clock;

double
Seconds(Clock::time_point start)
{
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double
MaxRelativeDifference(const cdm::Volume & a, const cdm::Volume & b)
{
  if (a.Voxels.size() != b.Voxels.size())
  {
    throw std::runtime_error("the two syntheses differ in size");
  }
  const auto [low, high] = std::minmax_element(a.Voxels.begin(), a.Voxels.end());
  double difference = 0.0;
  for (size_t i = 0; i < a.Voxels.size(); ++i)
  {
    difference = std::max(difference, static_cast<double>(std::abs(a.Voxels[i] - b.Voxels[i])));
  }
  return difference / std::max(1e-12, static_cast<double>(*high - *low));
}

cdm::SourceVolumes
Sources(const cdm::ModelConfig & config, const std::array<int64_t, 3> & size)
{
  const auto         all = cdm::testing::MakeCase(5, size);
  cdm::SourceVolumes sources;
  for (const auto & name : config.Sources)
  {
    sources[name] = all.at(name);
  }
  return sources;
}
} // namespace

int
main(int argc, char ** argv)
{
  std::string            modelPath, device = "cuda", out = "device-check.json";
  std::array<int64_t, 3> size{ { 240, 240, 155 } };
  double                 tolerance = 1e-3;
  for (int i = 1; i + 1 < argc; i += 2)
  {
    const std::string key = argv[i], value = argv[i + 1];
    if (key == "--model")
      modelPath = value;
    else if (key == "--device")
      device = value;
    else if (key == "--out")
      out = value;
    else if (key == "--tolerance")
      tolerance = std::stod(value);
    else if (key == "--size")
    {
      std::stringstream stream(value);
      char              comma = 0;
      stream >> size[0] >> comma >> size[1] >> comma >> size[2];
    }
    else
    {
      std::cerr << "cdmDeviceCheck: unknown option '" << key
                << "'; expected --model, --device, --out, --size, --tolerance\n";
      return 2;
    }
  }
  if (modelPath.empty())
  {
    std::cerr << "cdmDeviceCheck: --model MODEL.cdm is required\n";
    return 2;
  }
  try
  {
    nlohmann::json report = { { "device", cdm::ResolveDevice(device) }, { "size", size }, { "model", modelPath } };
    // 1. The same synthesis on the CPU and on the device (a 16-slice slab keeps the CPU's part short).
    const cdm::Model         cpuModel = cdm::Model::Load(modelPath, "cpu");
    const cdm::Model         deviceModel = cdm::Model::Load(modelPath, device);
    const cdm::SourceVolumes slab = Sources(cpuModel.Config(), { size[0], size[1], 16 });
    cdm::SynthesisOptions    options;
    options.Seed = 3;
    const cdm::SynthesisResult onDevice = deviceModel.Synthesize(slab, options);
    const double difference = MaxRelativeDifference(cpuModel.Synthesize(slab, options).Image, onDevice.Image);
    report["cpu_vs_device_max_relative_difference"] = difference;
    std::cout << "[device-check] CPU vs " << device << ": largest difference " << difference << " of the range\n";
    cdm::SynthesisOptions reduced = options;
    reduced.NetworkPrecision = cdm::Precision::BFloat16;
    const double reducedDifference = MaxRelativeDifference(onDevice.Image, deviceModel.Synthesize(slab, reduced).Image);
    report["bf16_vs_fp32_max_relative_difference"] = reducedDifference;
    std::cout << "[device-check] bf16 vs fp32 on " << device << ": largest difference " << reducedDifference
              << " of the range\n";

    // 2. Time per synthesis of the whole volume on the device: the bundled CDM, and a UNet and DDIM-50 of the same
    //    preset (fresh weights: the cost does not depend on their values); one warm-up run each.
    const cdm::SourceVolumes volume = Sources(cpuModel.Config(), size);
    const cdm::ModelConfig & bundled = cpuModel.Config();
    for (const std::string kind : { "cdm", "unet", "ddim" })
    {
      const cdm::Model model =
        kind == "cdm" ? deviceModel
                      : cdm::Model::Create(cdm::ModelConfig::FromPreset(
                                             bundled.Preset, bundled.Dimension, bundled.Sources, bundled.Target, kind),
                                           1,
                                           device);
      for (const cdm::Precision precision : { cdm::Precision::Float32, cdm::Precision::BFloat16 })
      {
        cdm::SynthesisOptions timed = options;
        timed.NetworkPrecision = precision;
        model.Synthesize(Sources(model.Config(), { size[0], size[1], 4 }), timed); // warm-up (kernels, allocator)
        const auto start = Clock::now();
        model.Synthesize(volume, timed);
        const double seconds = Seconds(start);
        report["seconds"][kind][cdm::PrecisionName(precision)] = seconds;
        std::cout << "[device-check] " << kind << " (" << cdm::PrecisionName(precision) << ") on " << size[0] << "x"
                  << size[1] << "x" << size[2] << ": " << seconds << " s\n";
      }
    }
    report["tolerance"] = tolerance;
    std::ofstream(out) << report.dump(2) << std::endl;
    std::cout << "[device-check] wrote " << out << std::endl;
    if (!(difference <= tolerance))
    {
      std::cerr << "cdmDeviceCheck: CPU and " << device << " differ by " << difference
                << " of the range; expected at most " << tolerance << std::endl;
      return 3;
    }
  }
  catch (const std::exception & e)
  {
    std::cerr << "cdmDeviceCheck: " << e.what() << std::endl;
    return 1;
  }
  return 0;
}
