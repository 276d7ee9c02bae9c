/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#include "cdmSafetensors.h"
#include "cdmAtomicFile.h"
#include "cdmError.h"

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <sstream>

namespace cdm
{
namespace safetensors
{

namespace
{
constexpr uint64_t MaximumHeaderBytes = 100u << 20;

uint64_t
Fnv1a(const char * data, size_t bytes, uint64_t hash = 1469598103934665603ull)
{
  for (size_t i = 0; i < bytes; ++i)
  {
    hash ^= static_cast<unsigned char>(data[i]);
    hash *= 1099511628211ull;
  }
  return hash;
}

std::string
ToHex(uint64_t value)
{
  std::ostringstream out;
  out << std::hex << value;
  return out.str();
}

bool
HostIsLittleEndian()
{
  const uint16_t probe = 1;
  unsigned char  first = 0;
  std::memcpy(&first, &probe, 1);
  return first == 1;
}

[[noreturn]] void
Fail(const std::string & path, const std::string & problem)
{
  throw ModelFileError("model file '" + path + "': " + problem);
}
} // namespace

void
Write(const std::string & path, const std::map<std::string, std::string> & metadata, const NamedTensors & tensors)
{
  if (!HostIsLittleEndian())
  {
    throw Error("writing '" + path + "': only little-endian hosts are supported");
  }
  std::vector<at::Tensor> contiguous;
  nlohmann::json          header = nlohmann::json::object();
  uint64_t                offset = 0;
  uint64_t                checksum = 1469598103934665603ull;
  for (const auto & [name, tensor] : tensors)
  {
    at::Tensor cpu = tensor.detach().to(torch::kCPU, torch::kFloat32).contiguous();
    const auto bytes = static_cast<uint64_t>(cpu.numel()) * sizeof(float);
    header[name] = { { "dtype", "F32" },
                     { "shape", cpu.sizes().vec() },
                     { "data_offsets", { offset, offset + bytes } } };
    checksum = Fnv1a(static_cast<const char *>(cpu.data_ptr()), bytes, checksum);
    offset += bytes;
    contiguous.push_back(cpu);
  }
  nlohmann::json meta = metadata;
  meta["checksum"] = ToHex(checksum);
  header["__metadata__"] = meta;
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  WriteAtomically(path, [&](const std::string & temporary) {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    if (!out)
    {
      throw Error("cannot open '" + temporary + "' for writing");
    }
    const uint64_t length = text.size();
    out.write(reinterpret_cast<const char *>(&length), sizeof(length));
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const auto & tensor : contiguous)
    {
      out.write(static_cast<const char *>(tensor.data_ptr()),
                static_cast<std::streamsize>(tensor.numel() * sizeof(float)));
    }
    out.flush();
    if (!out)
    {
      throw Error("cannot write '" + temporary + "' (disk full?)");
    }
  });
}

Header
ReadHeader(const std::string & path)
{
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in)
  {
    Fail(path, "cannot be opened (missing or unreadable)");
  }
  Header header;
  header.FileBytes = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  if (header.FileBytes < 8)
  {
    Fail(path, "truncated: " + std::to_string(header.FileBytes) + " bytes, shorter than the 8-byte header length");
  }
  uint64_t length = 0;
  in.read(reinterpret_cast<char *>(&length), sizeof(length));
  if (length > header.FileBytes - 8 || length > MaximumHeaderBytes)
  {
    Fail(path,
         "truncated or not a .cdm file: the header claims " + std::to_string(length) + " bytes but " +
           std::to_string(header.FileBytes - 8) + " follow");
  }
  std::string text(length, '\0');
  in.read(text.data(), static_cast<std::streamsize>(length));
  const nlohmann::json json = nlohmann::json::parse(text, nullptr, false);
  if (json.is_discarded() || !json.is_object())
  {
    Fail(path, "corrupt header: not a JSON object");
  }
  header.DataOffset = 8 + length;
  const uint64_t dataBytes = header.FileBytes - header.DataOffset;
  try
  {
    for (const auto & [key, value] : json.items())
    {
      if (key == "__metadata__")
      {
        for (const auto & [metaKey, metaValue] : value.items())
        {
          header.Metadata[metaKey] = metaValue.get<std::string>();
        }
        continue;
      }
      Entry entry;
      entry.Name = key;
      if (value.at("dtype").get<std::string>() != "F32")
      {
        Fail(path, "tensor '" + key + "' has dtype " + value.at("dtype").dump() + "; expected F32");
      }
      entry.Shape = value.at("shape").get<std::vector<int64_t>>();
      const auto offsets = value.at("data_offsets").get<std::vector<uint64_t>>();
      if (offsets.size() != 2)
      {
        Fail(path, "tensor '" + key + "': data_offsets must hold two numbers");
      }
      entry.Begin = offsets[0];
      entry.End = offsets[1];
      uint64_t elements = 1;
      for (const int64_t extent : entry.Shape)
      {
        if (extent < 0 || (extent > 0 && elements > (uint64_t{ 1 } << 40) / static_cast<uint64_t>(extent)))
        {
          Fail(path, "tensor '" + key + "' has an invalid shape");
        }
        elements *= static_cast<uint64_t>(extent);
      }
      if (entry.Begin > entry.End || entry.End - entry.Begin != elements * sizeof(float))
      {
        Fail(path, "tensor '" + key + "': its byte range does not match its shape");
      }
      if (entry.End > dataBytes)
      {
        Fail(path,
             "truncated: tensor '" + key + "' ends at byte " + std::to_string(entry.End) + " of the data but only " +
               std::to_string(dataBytes) + " bytes are present");
      }
      header.Entries.push_back(std::move(entry));
    }
  }
  catch (const nlohmann::json::exception & e)
  {
    Fail(path, std::string("corrupt header: ") + e.what());
  }
  std::sort(
    header.Entries.begin(), header.Entries.end(), [](const Entry & a, const Entry & b) { return a.Begin < b.Begin; });
  uint64_t expected = 0;
  for (const auto & entry : header.Entries)
  {
    if (entry.Begin != expected)
    {
      Fail(path, "corrupt header: tensor '" + entry.Name + "' overlaps another or leaves a gap");
    }
    expected = entry.End;
  }
  if (expected != dataBytes)
  {
    Fail(path,
         "the data holds " + std::to_string(dataBytes) + " bytes but the tensors cover " + std::to_string(expected) +
           " (truncated or extended file)");
  }
  if (header.Metadata.count("checksum") == 0)
  {
    Fail(path, "the header has no checksum; not written by itk-cdm");
  }
  return header;
}

NamedTensors
Read(const std::string & path, Header * headerOut)
{
  Header        header = ReadHeader(path);
  std::ifstream in(path, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(header.DataOffset));
  std::vector<char> data(header.FileBytes - header.DataOffset);
  in.read(data.data(), static_cast<std::streamsize>(data.size()));
  if (!in)
  {
    Fail(path, "truncated: the tensor data could not be read");
  }
  if (ToHex(Fnv1a(data.data(), data.size())) != header.Metadata.at("checksum"))
  {
    Fail(path, "corrupt: the checksum of the tensor data does not match the header");
  }
  NamedTensors tensors;
  for (const auto & entry : header.Entries)
  {
    at::Tensor tensor = torch::empty(entry.Shape, torch::kFloat32);
    std::memcpy(tensor.data_ptr(), data.data() + entry.Begin, entry.End - entry.Begin);
    tensors.emplace_back(entry.Name, tensor);
  }
  if (headerOut)
  {
    *headerOut = std::move(header);
  }
  return tensors;
}

} // namespace safetensors
} // namespace cdm
