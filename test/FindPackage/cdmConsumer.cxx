// A user program of the installed core engine: a tiny 2D model saved to a .cdm file, loaded again, and run on a
// small three-source volume. Exit code 0 when the synthesis has the sources' size and finite voxels.
//   cdmConsumer MODEL.cdm
#include "cdmModel.h"

#include <cmath>
#include <iostream>

int
main(int argc, char * argv[])
{
  if (argc != 2)
  {
    std::cerr << "usage: " << argv[0] << " MODEL.cdm" << std::endl;
    return 2;
  }
  try
  {
    const cdm::ModelConfig config = cdm::ModelConfig::FromPreset("tiny", 2, { "t1n", "t2w", "t2f" }, "t1c");
    cdm::Model::Create(config, 1, "cpu").Save(argv[1]);
    const cdm::Model model = cdm::Model::Load(argv[1], "cpu");

    cdm::SourceVolumes sources;
    float              contrast = 1.0f;
    for (const char * name : { "t1n", "t2w", "t2f" })
    {
      cdm::Volume volume;
      volume.Size = { 24, 20, 3 };
      volume.Allocate();
      for (int64_t i = 0; i < volume.NumberOfVoxels(); ++i)
      {
        volume.Voxels[static_cast<size_t>(i)] = contrast * static_cast<float>(1 + i % 37);
      }
      sources[name] = volume;
      contrast += 0.5f;
    }
    const cdm::SynthesisResult result = model.Synthesize(sources);
    bool                       finite = true;
    for (const float v : result.Image.Voxels)
    {
      finite = finite && std::isfinite(v);
    }
    std::cout << "synthesized " << config.Target << ": " << result.Image.Size[0] << "x" << result.Image.Size[1] << "x"
              << result.Image.Size[2] << (finite ? ", finite" : ", NOT finite") << std::endl;
    return result.Image.Size == sources["t1n"].Size && finite ? 0 : 1;
  }
  catch (const std::exception & error)
  {
    std::cerr << "cdmConsumer: " << error.what() << std::endl;
    return 1;
  }
}
