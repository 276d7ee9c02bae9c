// A user program of the installed ITK filters: itk::CDMImageFilter on three in-memory images with the model file
// that cdmConsumer wrote, streamed in two pieces. Exit code 0 when the output has the sources' size and finite
// voxels.
//   cdmConsumerFilter MODEL.cdm
#include "itkCDMImageFilter.h"
#include "itkImageRegionIterator.h"
#include "itkStreamingImageFilter.h"

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
  using ImageType = itk::Image<float, 3>;
  try
  {
    auto model = itk::CDMModel::New();
    model->Load(argv[1], "cpu");
    auto filter = itk::CDMImageFilter<ImageType>::New();
    filter->SetModel(model);
    float contrast = 1.0f;
    for (const char * name : { "t1n", "t2w", "t2f" })
    {
      auto                  image = ImageType::New();
      ImageType::RegionType region;
      region.SetSize({ { 24, 20, 3 } });
      image->SetRegions(region);
      image->Allocate();
      itk::ImageRegionIterator<ImageType> it(image, region);
      for (int i = 0; !it.IsAtEnd(); ++it, ++i)
      {
        it.Set(contrast * static_cast<float>(1 + i % 37));
      }
      filter->SetSource(name, image);
      contrast += 0.5f;
    }
    auto streamer = itk::StreamingImageFilter<ImageType, ImageType>::New();
    streamer->SetInput(filter->GetOutput());
    streamer->SetNumberOfStreamDivisions(2);
    streamer->Update();
    const ImageType * output = streamer->GetOutput();
    bool              finite = true;
    for (itk::ImageRegionConstIterator<ImageType> it(output, output->GetBufferedRegion()); !it.IsAtEnd(); ++it)
    {
      finite = finite && std::isfinite(it.Get());
    }
    std::cout << "itk::CDMImageFilter: " << output->GetBufferedRegion().GetSize()
              << (finite ? ", finite" : ", NOT finite") << std::endl;
    return output->GetBufferedRegion().GetNumberOfPixels() == 24 * 20 * 3 && finite ? 0 : 1;
  }
  catch (const itk::ExceptionObject & error)
  {
    std::cerr << "cdmConsumerFilter: " << error.GetDescription() << std::endl;
    return 1;
  }
}
