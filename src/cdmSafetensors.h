/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#ifndef cdmSafetensors_h
#define cdmSafetensors_h

// Internal header of the core engine (src/ only): the `.cdm` container, in the safetensors layout
// (8-byte little-endian header length, a JSON header, raw little-endian float32 tensor bytes).
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace cdm
{
namespace safetensors
{

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

/** One tensor's entry in the header. */
struct Entry
{
  std::string          Name;
  std::vector<int64_t> Shape;
  uint64_t             Begin{ 0 };
  uint64_t             End{ 0 };
};

/** The validated header: string metadata and tensor entries (offsets checked against the file size). */
struct Header
{
  std::map<std::string, std::string> Metadata;
  std::vector<Entry>                 Entries;
  uint64_t                           DataOffset{ 0 };
  uint64_t                           FileBytes{ 0 };
};

/** Writes tensors (as float32, CPU, contiguous) and metadata atomically; adds a "checksum" metadata entry
 *  (FNV-1a 64 of the data bytes) so that corrupted data is refused on reading. */
void
Write(const std::string & path, const std::map<std::string, std::string> & metadata, const NamedTensors & tensors);

/** Reads and validates the header only. Throws ModelFileError naming the file and the problem. */
Header
ReadHeader(const std::string & path);

/** Reads and validates the whole file, checksum included. */
NamedTensors
Read(const std::string & path, Header * header = nullptr);

} // namespace safetensors
} // namespace cdm

#endif
