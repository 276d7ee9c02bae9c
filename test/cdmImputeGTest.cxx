/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
// `cdm impute` on a folder of NIfTI cases: exactly the gaps are filled, nothing existing changes, reruns resume,
// broken cases are named, shards partition the cases; and the SHA-256 its manifest uses.
#include "cdmError.h"
#include "cdmImageIO.h"
#include "cdmModel.h"
#include "cdmSha256.h"
#include "cdmTestData.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>

namespace
{
namespace fs = std::filesystem;

TEST(Sha256, MatchesTheStandardsTestVectors)
{
  // FIPS 180-4 examples, and a message that needs a second padding block.
  EXPECT_EQ(cdm::Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(cdm::Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(cdm::Sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  const std::string million(1000000, 'a'); // spans many of the file reader's blocks' worth of 64-byte blocks
  EXPECT_EQ(cdm::Sha256Hex(million), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  const std::string path = cdm::testing::MakeTemporaryDirectory("sha256") + "/million.txt";
  std::ofstream(path, std::ios::binary) << million;
  EXPECT_EQ(cdm::FileSha256Hex(path), cdm::Sha256Hex(million));
  EXPECT_THROW(cdm::FileSha256Hex(path + ".absent"), cdm::InputError);
}

/** The report `cdm impute --json` prints on stdout, out of the output that also holds its progress (stderr). */
nlohmann::json
ReportOf(const std::string & output)
{
  const size_t start = output.find("\n{") + 1;
  const size_t end = output.find("\n}", start) + 2;
  return nlohmann::json::parse(output.substr(start, end - start));
}

class Impute : public ::testing::Test
{
protected:
  void
  SetUp() override
  {
    m_Root = cdm::testing::MakeTemporaryDirectory("impute");
    m_Data = m_Root + "/data";
    // Five cases, BraSyn-like: one modality missing in most of them.
    const std::vector<std::string> missing{ "t1c", "t2f", "", "t1c", "t2f" };
    for (int i = 0; i < 5; ++i)
    {
      const std::string name = "case" + std::to_string(i);
      fs::create_directories(m_Data + "/" + name);
      for (const auto & [modality, volume] : cdm::testing::MakeCase(300 + i, { 24, 24, 4 }))
      {
        if (modality != missing[static_cast<size_t>(i)])
        {
          cdm::WriteVolume(volume, File(name, modality));
        }
      }
    }
    // One model per target (untrained: the plumbing is under test, not the fidelity).
    for (const std::string target : { "t1c", "t2f" })
    {
      std::vector<std::string> sources;
      for (const std::string & m : cdm::BraTSModalities())
      {
        if (m != target)
        {
          sources.push_back(m);
        }
      }
      const cdm::Model model = cdm::Model::Create(cdm::ModelConfig::FromPreset("tiny", 2, sources, target), 5, "cpu");
      model.Save(m_Root + "/" + target + ".cdm");
    }
  }
  void
  TearDown() override
  {
    fs::remove_all(m_Root);
  }

  std::string
  File(const std::string & caseName, const std::string & modality) const
  {
    return m_Data + "/" + caseName + "/" + caseName + "-" + modality + ".nii.gz";
  }
  cdm::testing::CommandResult
  RunImpute(const std::string & arguments) const
  {
    return cdm::testing::RunCommand(std::string(CDM_EXECUTABLE) + " impute --data " + m_Data + " --model " + m_Root +
                                    "/t1c.cdm --model " + m_Root + "/t2f.cdm --device cpu --threads 1 " + arguments);
  }
  /** Every file under the data folder with its SHA-256. */
  std::map<std::string, std::string>
  Checksums() const
  {
    std::map<std::string, std::string> sums;
    for (const auto & entry : fs::recursive_directory_iterator(m_Data))
    {
      if (entry.is_regular_file())
      {
        sums[entry.path().string()] = cdm::FileSha256Hex(entry.path().string());
      }
    }
    return sums;
  }
  std::vector<nlohmann::json>
  ManifestRows(const std::string & name = "impute-manifest.jsonl") const
  {
    std::vector<nlohmann::json> rows;
    std::ifstream               stream(m_Data + "/" + name);
    std::string                 line;
    while (std::getline(stream, line))
    {
      rows.push_back(nlohmann::json::parse(line));
    }
    return rows;
  }

  std::string m_Root;
  std::string m_Data;
};

TEST_F(Impute, WritesExactlyTheMissingFilesAndAManifestAndARerunWritesNothing)
{
  const std::map<std::string, std::string> before = Checksums();
  const cdm::testing::CommandResult        first = RunImpute("--seed 4");
  ASSERT_EQ(first.ExitCode, 0) << first.Output;
  EXPECT_NE(first.Output.find("[3/5] case2: nothing missing"), std::string::npos) << first.Output;

  // The four gaps, and nothing else, now exist, on their sources' grid; the existing files are untouched.
  const std::map<std::string, std::string> after = Checksums();
  for (const auto & [path, sum] : before)
  {
    ASSERT_TRUE(after.count(path)) << path;
    EXPECT_EQ(after.at(path), sum) << path << " changed";
  }
  const std::vector<std::pair<std::string, std::string>> gaps{
    { "case0", "t1c" }, { "case1", "t2f" }, { "case3", "t1c" }, { "case4", "t2f" }
  };
  std::set<std::string> added;
  for (const auto & [path, sum] : after)
  {
    if (!before.count(path))
    {
      added.insert(path);
    }
  }
  added.erase(m_Data + "/impute-manifest.jsonl");
  ASSERT_EQ(added.size(), gaps.size());
  for (const auto & [caseName, modality] : gaps)
  {
    ASSERT_TRUE(added.count(File(caseName, modality))) << caseName << " " << modality;
    std::string why;
    EXPECT_TRUE(
      cdm::SameGeometry(cdm::ReadVolume(File(caseName, "t1n")), cdm::ReadVolume(File(caseName, modality)), &why, 1e-6))
      << why;
  }

  // The manifest lists every write: file, model and its checksum, the sources, the seed.
  const std::vector<nlohmann::json> rows = ManifestRows();
  ASSERT_EQ(rows.size(), gaps.size());
  for (size_t i = 0; i < rows.size(); ++i)
  {
    const auto & [caseName, modality] = gaps[i];
    EXPECT_EQ(rows[i]["case"], caseName);
    EXPECT_EQ(rows[i]["modality"], modality);
    EXPECT_EQ(rows[i]["file"], caseName + "/" + caseName + "-" + modality + ".nii.gz");
    EXPECT_EQ(rows[i]["model"], m_Root + "/" + modality + ".cdm");
    EXPECT_EQ(rows[i]["model_sha256"], cdm::FileSha256Hex(m_Root + "/" + modality + ".cdm"));
    EXPECT_EQ(rows[i]["seed"], 4);
    EXPECT_EQ(rows[i]["sources"].size(), 3u);
    EXPECT_EQ(std::count(rows[i]["sources"].begin(), rows[i]["sources"].end(), modality), 0);
  }

  // A rerun finds the outputs there and writes nothing: no file changes, no row is added.
  const cdm::testing::CommandResult again = RunImpute("--seed 4");
  ASSERT_EQ(again.ExitCode, 0) << again.Output;
  EXPECT_NE(again.Output.find("0 file(s) written, 4 already there"), std::string::npos) << again.Output;
  EXPECT_EQ(Checksums(), after);
}

TEST_F(Impute, SkipsACaseThatCannotBeImputedByNameAndExitsWithOne)
{
  // case1: a source cut short (an interrupted copy); case4: two modalities missing, so no model has its sources.
  const std::string truncated = File("case1", "t2w");
  const auto        size = fs::file_size(truncated);
  fs::resize_file(truncated, size / 2);
  fs::remove(File("case4", "t1c"));
  const cdm::testing::CommandResult run = RunImpute("--json");
  EXPECT_EQ(run.ExitCode, 1) << run.Output;
  const nlohmann::json  json = ReportOf(run.Output);
  std::set<std::string> failed;
  for (const auto & failure : json["failed"])
  {
    failed.insert(failure["case"].get<std::string>());
  }
  EXPECT_EQ(failed, (std::set<std::string>{ "case1", "case4" })) << run.Output;
  EXPECT_NE(run.Output.find("case1: skipped: "), std::string::npos) << run.Output;
  EXPECT_NE(run.Output.find(truncated), std::string::npos) << "the reason names the broken file:\n" << run.Output;
  EXPECT_NE(run.Output.find("case4: skipped: no model can synthesize t1c"), std::string::npos) << run.Output;
  EXPECT_EQ(json["written"].size(), 2u); // case0 and case3
  EXPECT_FALSE(fs::exists(File("case1", "t2f")));
  EXPECT_FALSE(fs::exists(File("case4", "t2f")));
  EXPECT_FALSE(fs::exists(File("case4", "t1c")));
}

TEST_F(Impute, ShardsPartitionTheCasesAndADryRunWritesNothing)
{
  const std::map<std::string, std::string> before = Checksums();
  std::multiset<std::string>               planned;
  for (const std::string shard : { "0/2", "1/2" })
  {
    const cdm::testing::CommandResult run = RunImpute("--dry-run --json --shard " + shard);
    ASSERT_EQ(run.ExitCode, 0) << run.Output;
    const nlohmann::json json = ReportOf(run.Output);
    EXPECT_EQ(json["cases"], shard == std::string("0/2") ? 3 : 2);
    for (const auto & row : json["planned"])
    {
      planned.insert(row["file"].get<std::string>());
    }
  }
  EXPECT_EQ(
    planned,
    (std::multiset<std::string>{
      "case0/case0-t1c.nii.gz", "case1/case1-t2f.nii.gz", "case3/case3-t1c.nii.gz", "case4/case4-t2f.nii.gz" }));
  EXPECT_EQ(Checksums(), before);

  // A real sharded run writes its own manifest.
  ASSERT_EQ(RunImpute("--shard 1/2").ExitCode, 0);
  EXPECT_EQ(ManifestRows("impute-manifest.shard-1-of-2.jsonl").size(), 2u); // case1, case3
  EXPECT_EQ(RunImpute("--shard 2/2").ExitCode, 1);
  EXPECT_NE(RunImpute("--shard 2/2").Output.find("expected i/N with 0 <= i < N"), std::string::npos);
}

TEST_F(Impute, WritesIntoAnotherFolderAndNeverTakesASynthesizedFileForARealScan)
{
  const std::string out = m_Root + "/out";
  ASSERT_EQ(RunImpute("--out " + out).ExitCode, 0);
  EXPECT_TRUE(fs::exists(out + "/case0/case0-t1c.nii.gz"));
  EXPECT_TRUE(fs::exists(out + "/impute-manifest.jsonl"));
  EXPECT_FALSE(fs::exists(File("case0", "t1c")));

  // In place: after case0's t1c is synthesized, removing its real t2f makes a gap that only the t2f model could
  // fill, from t1c among others; the synthesized t1c must not count as a scan, so the case cannot be imputed.
  ASSERT_EQ(RunImpute("").ExitCode, 0);
  fs::remove(File("case0", "t2f"));
  const cdm::testing::CommandResult run = RunImpute("");
  EXPECT_EQ(run.ExitCode, 1) << run.Output;
  EXPECT_NE(run.Output.find("case0: skipped: no model can synthesize t2f"), std::string::npos) << run.Output;
}
} // namespace

namespace
{
// The BraSyn workflow on generated data: a phantom folder with one modality dropped per case, filled by `impute`
// with one unified model (untrained: the workflow is under test).
TEST(ImputeBraSynFolder, PhantomDropsOneModalityPerCaseAndImputeFillsEveryGap)
{
  const std::string                 root = cdm::testing::MakeTemporaryDirectory("brasyn");
  const std::string                 data = root + "/cases";
  const cdm::testing::CommandResult phantom = cdm::testing::RunCommand(
    std::string(CDM_EXECUTABLE) + " phantom --out " + data + " --cases 6 --seed 2 " +
    "--anatomy procedural --size 48,48,24 --spacing 4 --drop random --held-out " + root + "/held-out");
  ASSERT_EQ(phantom.ExitCode, 0) << phantom.Output;
  const std::string models = " --model " + root + "/unified.cdm";
  cdm::Model::Create(
    cdm::ModelConfig::UnifiedFromPreset("tiny", 2, cdm::BraTSModalities(), cdm::BraTSModalities()), 1, "cpu")
    .Save(root + "/unified.cdm");
  std::map<std::string, std::string> dropped; // case -> modality
  for (const auto & entry : fs::directory_iterator(data))
  {
    const std::string caseName = entry.path().filename().string();
    int               present = 0;
    for (const std::string & m : cdm::BraTSModalities())
    {
      const bool here = fs::exists(data + "/" + caseName + "/" + caseName + "-" + m + ".nii.gz");
      const bool aside = fs::exists(root + "/held-out/" + caseName + "/" + caseName + "-" + m + ".nii.gz");
      EXPECT_NE(here, aside) << caseName << " " << m << ": exactly one of the folders holds each modality";
      present += here;
      if (aside)
      {
        dropped[caseName] = m;
      }
    }
    EXPECT_EQ(present, 3) << caseName;
  }
  ASSERT_EQ(dropped.size(), 6u);

  const cdm::testing::CommandResult impute = cdm::testing::RunCommand(
    std::string(CDM_EXECUTABLE) + " impute --data " + data + models + " --device cpu --threads 1 --json");
  ASSERT_EQ(impute.ExitCode, 0) << impute.Output;
  const nlohmann::json report = ReportOf(impute.Output);
  EXPECT_EQ(report["written"].size(), 6u);
  for (const auto & row : report["written"])
  {
    EXPECT_EQ(row["model"], root + "/unified.cdm");
    EXPECT_EQ(row["sources"].size(), 3u);
  }
  for (const auto & [caseName, modality] : dropped)
  {
    const std::string file = data + "/" + caseName + "/" + caseName + "-" + modality + ".nii.gz";
    ASSERT_TRUE(fs::exists(file)) << file;
    std::string why;
    EXPECT_TRUE(
      cdm::SameGeometry(cdm::ReadVolume(root + "/held-out/" + caseName + "/" + caseName + "-" + modality + ".nii.gz"),
                        cdm::ReadVolume(file),
                        &why,
                        1e-6))
      << why;
  }
  fs::remove_all(root);
}
} // namespace
