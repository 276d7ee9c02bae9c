/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#include "cdmAtomicFile.h"
#include "cdmError.h"
#include "cdmModelImpl.h"
#include "cdmSafetensors.h"
#include "cdmTestData.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

namespace
{
namespace fs = std::filesystem;

std::string
ReadBytes(const std::string & path)
{
  std::ifstream in(path, std::ios::binary);
  return { std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>() };
}

void
WriteBytes(const std::string & path, const std::string & bytes)
{
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

/** Rewrites one field of a model file's configuration (a valid file again: tensors and checksum kept). */
void
RewriteConfigurationField(const std::string & path, const std::string & field, const std::string & replacement)
{
  cdm::safetensors::Header header;
  const auto               tensors = cdm::safetensors::Read(path, &header);
  std::string              config = header.Metadata.at("cdm");
  ASSERT_NE(config.find(field), std::string::npos) << field;
  config.replace(config.find(field), field.size(), replacement);
  cdm::safetensors::Write(path, { { "cdm", config } }, tensors);
}

/** Expects Model::Load to throw ModelFileError whose message holds every given fragment. */
void
ExpectRefused(const std::string & path, const std::vector<std::string> & fragments)
{
  try
  {
    cdm::Model::Load(path, cdm::testing::TestDevice());
    ADD_FAILURE() << "loading " << path << " did not fail";
  }
  catch (const cdm::ModelFileError & e)
  {
    for (const auto & fragment : fragments)
    {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what() << " lacks '" << fragment << "'";
    }
  }
}

class ModelFile : public ::testing::Test
{
protected:
  void
  SetUp() override
  {
    m_Directory = cdm::testing::MakeTemporaryDirectory("modelfile");
    m_Path = m_Directory + "/model.cdm";
    cdm::ModelConfig config = cdm::ModelConfig::FromPreset("tiny", 2, { "t1n", "t2w", "t2f" }, "t1c");
    config.TargetScale = 1234.5;
    m_Model = std::make_unique<cdm::Model>(cdm::Model::Create(config, 7, cdm::testing::TestDevice()));
    cdm::testing::RandomizeFilm(*m_Model, 7); // so that the round trip compares a non-zero uncertainty
    m_Model->Save(m_Path);
  }
  void
  TearDown() override
  {
    fs::remove_all(m_Directory);
  }
  std::string                 m_Directory;
  std::string                 m_Path;
  std::unique_ptr<cdm::Model> m_Model;
};

TEST_F(ModelFile, RoundTripGivesIdenticalOutputs)
{
  const cdm::Model loaded = cdm::Model::Load(m_Path, cdm::testing::TestDevice());
  EXPECT_EQ(loaded.Config().ToJson(), m_Model->Config().ToJson());
  auto sources = cdm::testing::MakeCase(3);
  sources.erase("t1c");
  cdm::SynthesisOptions options;
  options.Seed = 9;
  options.Samples = 2;
  const cdm::SynthesisResult a = m_Model->Synthesize(sources, options);
  const cdm::SynthesisResult b = loaded.Synthesize(sources, options);
  EXPECT_EQ(a.Image.Voxels, b.Image.Voxels);
  EXPECT_EQ(a.Uncertainty.Voxels, b.Uncertainty.Voxels);
  EXPECT_GT(*std::max_element(a.Uncertainty.Voxels.begin(), a.Uncertainty.Voxels.end()), 0.0f);
  // The file is in the safetensors layout: an 8-byte length, then a JSON header.
  const std::string bytes = ReadBytes(m_Path);
  uint64_t          length = 0;
  std::memcpy(&length, bytes.data(), 8);
  EXPECT_EQ(bytes[8], '{');
  EXPECT_NE(bytes.substr(8, length).find("\"__metadata__\""), std::string::npos);
  // Atomic writes leave no temporary file behind.
  EXPECT_EQ(std::distance(fs::directory_iterator(m_Directory), fs::directory_iterator{}), 1);
  const cdm::ModelFileInfo info = cdm::ReadModelFileInfo(m_Path);
  EXPECT_EQ(info.Parameters, m_Model->NumberOfParameters());
  EXPECT_DOUBLE_EQ(info.Config.TargetScale, 1234.5);
}

TEST_F(ModelFile, TruncatedFileIsRefused)
{
  const std::string bytes = ReadBytes(m_Path);
  WriteBytes(m_Path, bytes.substr(0, bytes.size() / 2));
  ExpectRefused(m_Path, { m_Path, "truncated" });
  WriteBytes(m_Path, bytes.substr(0, 5));
  ExpectRefused(m_Path, { m_Path, "truncated" });
}

TEST_F(ModelFile, CorruptedDataIsRefusedByTheChecksum)
{
  std::string bytes = ReadBytes(m_Path);
  bytes[bytes.size() - 100] ^= 0x5a;
  WriteBytes(m_Path, bytes);
  ExpectRefused(m_Path, { m_Path, "corrupt", "checksum" });
}

TEST_F(ModelFile, CorruptedHeaderIsRefused)
{
  std::string bytes = ReadBytes(m_Path);
  bytes[9] = '#';
  WriteBytes(m_Path, bytes);
  ExpectRefused(m_Path, { m_Path, "corrupt header" });
}

TEST_F(ModelFile, WrongFormatVersionIsRefused)
{
  RewriteConfigurationField(m_Path, "\"format_version\":1", "\"format_version\":99");
  ExpectRefused(m_Path, { m_Path, "format version 99", "reads versions 1 to 2", "the file is newer: update itk-cdm" });
}

TEST_F(ModelFile, ShapeMismatchIsRefusedNamingTheTensor)
{
  RewriteConfigurationField(m_Path, "\"unet_channels\":8", "\"unet_channels\":12");
  ExpectRefused(m_Path, { m_Path, "tensor 'unet.", "has shape", "expects" });
}

TEST_F(ModelFile, HeaderClaimingHugeNetworksIsRefusedBeforeBuildingThem)
{
  // A valid file (checksum and all) whose configuration claims 10^5-channel networks: building them would need
  // terabytes; the load must refuse from the header, naming the file, without trying.
  RewriteConfigurationField(m_Path, "\"unet_channels\":8", "\"unet_channels\":100000");
  ExpectRefused(m_Path, { m_Path, "far more than", "crafted header" });
}

TEST_F(ModelFile, MissingFileIsRefused)
{
  ExpectRefused(m_Directory + "/absent.cdm", { "absent.cdm", "cannot be opened" });
}

TEST(AtomicFile, WritesUnderATemporaryNameAndRefusesAWriterThatMadeNoFile)
{
  const std::string directory = cdm::testing::MakeTemporaryDirectory("atomic");
  const std::string path = directory + "/result.nii.gz";
  std::string       temporary;
  cdm::WriteAtomically(path, [&](const std::string & name) {
    temporary = name;
    WriteBytes(name, "new");
  });
  EXPECT_EQ(ReadBytes(path), "new");
  EXPECT_NE(temporary, path);
  EXPECT_EQ(temporary.substr(temporary.size() - 7), ".nii.gz"); // writers that choose a format by name still can
  EXPECT_FALSE(fs::exists(temporary));
  // A writer that reports its failure only on the console (ITK's NIfTI writer) made no file: an error naming the
  // target, and the old file kept.
  try
  {
    cdm::WriteAtomically(path, [](const std::string &) {});
    ADD_FAILURE() << "a writer that made no file was not refused";
  }
  catch (const cdm::Error & e)
  {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("no file was made"), std::string::npos) << e.what();
  }
  EXPECT_EQ(ReadBytes(path), "new");
  // A writer that throws leaves neither its temporary nor a changed file.
  EXPECT_THROW(cdm::WriteAtomically(path,
                                    [](const std::string & name) {
                                      WriteBytes(name, "partial");
                                      throw std::runtime_error("disk full");
                                    }),
               std::runtime_error);
  EXPECT_EQ(ReadBytes(path), "new");
  EXPECT_EQ(std::distance(fs::directory_iterator(directory), fs::directory_iterator{}), 1);
}

TEST(AtomicFile, OutputPathsAreCheckedBeforeTheWork)
{
  const std::string directory = cdm::testing::MakeTemporaryDirectory("output-check");
  EXPECT_NO_THROW(cdm::CheckOutputFile(directory + "/model.cdm", "--out"));
  const auto refusal = [](const std::string & path) {
    try
    {
      cdm::CheckOutputFile(path, "--out");
    }
    catch (const cdm::InputError & e)
    {
      return std::string(e.what());
    }
    return std::string();
  };
  const std::string missing = refusal(directory + "/absent/model.cdm");
  EXPECT_NE(missing.find("--out"), std::string::npos) << missing;
  EXPECT_NE(missing.find(directory + "/absent' does not exist"), std::string::npos) << missing;
  EXPECT_NE(refusal(directory).find("is a folder"), std::string::npos);
  EXPECT_NE(refusal(directory + "/").find("expected a file name"), std::string::npos);
  WriteBytes(directory + "/file", "a file where the folder should be");
  EXPECT_NE(refusal(directory + "/file/model.cdm").find("is not a folder"), std::string::npos);
}
} // namespace
