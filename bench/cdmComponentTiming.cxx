/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
// The engine's side of bench/eager.sh: the median time, after warm-up runs, of
//   unet_forward  one C-UNet pass over the network input (2D: the first --batch slices, by default the slices the
//                 synthesis puts in one call; 3D: the whole volume), normalised and zero-padded as the synthesis does;
//   encoder_mdn   the source encoder + MDN sampling of the whole image (Model::SampleRepresentation);
//   synthesis     the whole chain (Model::Synthesize),
// on the CPU with the given number of threads. Prints JSON (and writes it with --json); --outputs writes each
// component's result (safetensors) for bench/cdm_eager.py to compare with.
//   cdmComponentTiming --model M.cdm --source t1n=FILE [--source ...] [--threads 2] [--repeats 3] [--warmup 1]
//                      [--seed 0] [--batch 0] [--components unet_forward,encoder_mdn,synthesis]
//                      [--outputs FILE.safetensors] [--json FILE]
#include "cdmError.h"
#include "cdmImageIO.h"
#include "cdmModel.h"
#include "cdmModelImpl.h"
#include "cdmSafetensors.h"

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <functional>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace
{
using Clock = std::chrono::steady_clock;

struct Arguments
{
  std::string              Model;
  std::vector<std::string> Sources;
  int                      Threads{ 2 };
  int                      Repeats{ 3 };
  int                      Warmup{ 1 };
  uint64_t                 Seed{ 0 };
  int64_t                  Batch{ 0 };
  std::vector<std::string> Components{ "unet_forward", "encoder_mdn", "synthesis" };
  std::string              Outputs;
  std::string              Json;
};

std::vector<std::string>
SplitCommas(const std::string & text)
{
  std::vector<std::string> parts;
  std::stringstream        stream(text);
  for (std::string part; std::getline(stream, part, ',');)
  {
    parts.push_back(part);
  }
  return parts;
}

Arguments
Parse(int argc, char ** argv)
{
  Arguments arguments;
  for (int i = 1; i < argc; i += 2)
  {
    const std::string key = argv[i];
    if (i + 1 >= argc)
    {
      throw cdm::InputError("option '" + key + "' needs a value");
    }
    const std::string value = argv[i + 1];
    if (key == "--model")
      arguments.Model = value;
    else if (key == "--source")
      arguments.Sources.push_back(value);
    else if (key == "--threads")
      arguments.Threads = std::stoi(value);
    else if (key == "--repeats")
      arguments.Repeats = std::stoi(value);
    else if (key == "--warmup")
      arguments.Warmup = std::stoi(value);
    else if (key == "--seed")
      arguments.Seed = std::stoull(value);
    else if (key == "--batch")
      arguments.Batch = std::stoll(value);
    else if (key == "--components")
      arguments.Components = SplitCommas(value);
    else if (key == "--outputs")
      arguments.Outputs = value;
    else if (key == "--json")
      arguments.Json = value;
    else
      throw cdm::InputError("unknown option '" + key +
                            "'; expected --model, --source, --threads, --repeats, --warmup, --seed, --batch, "
                            "--components, --outputs, --json");
  }
  if (arguments.Model.empty() || arguments.Sources.empty())
  {
    throw cdm::InputError("--model MODEL.cdm and at least one --source NAME=FILE are required");
  }
  if (arguments.Repeats < 1 || arguments.Warmup < 0)
  {
    throw cdm::InputError("--repeats must be at least 1 and --warmup at least 0");
  }
  return arguments;
}

/** Every repeat's seconds after `warmup` untimed runs. */
std::vector<double>
TimeRepeats(const std::function<void()> & run, int repeats, int warmup)
{
  for (int i = 0; i < warmup; ++i)
  {
    run();
  }
  std::vector<double> seconds;
  for (int i = 0; i < repeats; ++i)
  {
    const auto start = Clock::now();
    run();
    seconds.push_back(std::chrono::duration<double>(Clock::now() - start).count());
  }
  return seconds;
}

double
Median(std::vector<double> values)
{
  std::sort(values.begin(), values.end());
  const size_t middle = values.size() / 2;
  return values.size() % 2 ? values[middle] : 0.5 * (values[middle - 1] + values[middle]);
}

at::Tensor
VolumeTensor(const cdm::Volume & volume)
{
  return torch::from_blob(const_cast<float *>(volume.Voxels.data()),
                          { volume.Size[2], volume.Size[1], volume.Size[0] },
                          torch::kFloat32)
    .clone();
}
} // namespace

int
main(int argc, char ** argv)
{
  try
  {
    const Arguments arguments = Parse(argc, argv);
    cdm::SetNumberOfThreads(arguments.Threads);
    const cdm::Model         model = cdm::Model::Load(arguments.Model, "cpu");
    const cdm::Model::Impl & impl = model.GetImpl();
    const cdm::ModelConfig & config = model.Config();
    cdm::SourceVolumes       sources;
    for (const auto & item : arguments.Sources)
    {
      const size_t equals = item.find('=');
      if (equals == std::string::npos)
      {
        throw cdm::InputError("--source '" + item + "': expected NAME=FILE");
      }
      sources[item.substr(0, equals)] = cdm::ReadVolume(item.substr(equals + 1));
    }
    cdm::SynthesisOptions options;
    options.Seed = arguments.Seed;
    const cdm::Volume & first = sources.begin()->second;

    // The C-UNet pass's input and guidance, built as the synthesis builds them.
    const cdm::Representation representation = model.SampleRepresentation(sources, options);
    c10::InferenceMode        guard;
    cdm::Region               window;
    window.Size = first.Size;
    int64_t batch = 1;
    if (config.Dimension == 2)
    {
      batch = arguments.Batch > 0 ? arguments.Batch : impl.SlicesPerCall(options, first.Size);
      batch = std::min(batch, first.Size[config.SliceAxis]);
      window.Size[config.SliceAxis] = batch;
    }
    const at::Tensor input =
      cdm::PadToMultiple(impl.ToNetworkLayout(impl.SourceWindow(sources, representation.SourceScales, window)),
                         config.UNetAlignment())
        .contiguous();
    const at::Tensor z = representation.Dim > 0 ? torch::from_blob(const_cast<float *>(representation.Values.data()),
                                                                   { representation.Cells, representation.Dim },
                                                                   torch::kFloat32)
                                                    .narrow(0, 0, batch)
                                                    .clone()
                                                : at::Tensor();

    const std::map<std::string, std::function<void()>> runs{
      { "unet_forward", [&]() { impl.SynthesizeBatch(input, z); } },
      { "encoder_mdn", [&]() { model.SampleRepresentation(sources, options); } },
      { "synthesis", [&]() { model.Synthesize(sources, options); } },
    };
    nlohmann::json report = { { "side", "engine" },
                              { "threads", at::get_num_threads() },
                              { "size", first.Size },
                              { "batch", batch },
                              { "unet_input_shape", input.sizes().vec() },
                              { "repeats", arguments.Repeats },
                              { "warmup", arguments.Warmup },
                              { "model", arguments.Model },
                              { "parallel_info", at::get_parallel_info() } };
    for (const auto & component : arguments.Components)
    {
      const auto run = runs.find(component);
      if (run == runs.end())
      {
        throw cdm::InputError("component '" + component +
                              "' is unknown; expected unet_forward, encoder_mdn, synthesis");
      }
      const std::vector<double> seconds = TimeRepeats(run->second, arguments.Repeats, arguments.Warmup);
      report["seconds"][component] = Median(seconds);
      report["all_seconds"][component] = seconds;
      std::cerr << "[cdmComponentTiming] " << component << ": " << Median(seconds) << " s (median of "
                << arguments.Repeats << ")" << std::endl;
    }
    if (!arguments.Outputs.empty())
    {
      cdm::safetensors::NamedTensors outputs;
      outputs.emplace_back("unet_forward", impl.SynthesizeBatch(input, z));
      outputs.emplace_back("encoder_mdn",
                           torch::from_blob(const_cast<float *>(representation.Values.data()),
                                            { representation.Samples, representation.Cells, representation.Dim },
                                            torch::kFloat32));
      outputs.emplace_back("synthesis", VolumeTensor(model.Synthesize(sources, options).Image));
      cdm::safetensors::Write(arguments.Outputs, { { "format", "cdm-component-timing" } }, outputs);
    }
    const std::string text = report.dump(1);
    if (!arguments.Json.empty())
    {
      std::ofstream(arguments.Json) << text << std::endl;
    }
    std::cout << text << std::endl;
  }
  catch (const std::exception & e)
  {
    std::cerr << "cdmComponentTiming: " << e.what() << std::endl;
    return 1;
  }
  return 0;
}
