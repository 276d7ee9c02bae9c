/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
// SHA-256 for the imputation manifest's model checksums: a digest users can check with `sha256sum`, without a
// cryptography library for one function.
#include "cdmSha256.h"

#include "cdmError.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <vector>

namespace cdm
{
namespace
{
constexpr std::array<uint32_t, 64> RoundConstants{
  { 0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2 }
};

uint32_t
RotateRight(uint32_t x, int n)
{
  return (x >> n) | (x << (32 - n));
}

/** The running state of one digest: whole 64-byte blocks go through Compress(), the tail waits in Pending. */
class Sha256
{
public:
  void
  Update(const unsigned char * data, size_t size)
  {
    m_Length += size;
    while (size > 0)
    {
      const size_t take = std::min(size, size_t{ 64 } - m_Pending.size());
      m_Pending.insert(m_Pending.end(), data, data + take);
      data += take;
      size -= take;
      if (m_Pending.size() == 64)
      {
        Compress(m_Pending.data());
        m_Pending.clear();
      }
    }
  }

  std::string
  FinishHex()
  {
    const uint64_t      bits = static_cast<uint64_t>(m_Length) * 8;
    const unsigned char one = 0x80;
    Update(&one, 1);
    const unsigned char zero = 0;
    while (m_Pending.size() != 56)
    {
      Update(&zero, 1);
    }
    std::array<unsigned char, 8> length{};
    for (int i = 0; i < 8; ++i)
    {
      length[static_cast<size_t>(i)] = static_cast<unsigned char>(bits >> (56 - 8 * i));
    }
    Update(length.data(), length.size());
    std::string hex;
    char        digits[9];
    for (const uint32_t word : m_State)
    {
      std::snprintf(digits, sizeof(digits), "%08x", word);
      hex += digits;
    }
    return hex;
  }

private:
  void
  Compress(const unsigned char * block)
  {
    std::array<uint32_t, 64> w{};
    for (size_t i = 0; i < 16; ++i)
    {
      w[i] = (uint32_t{ block[4 * i] } << 24) | (uint32_t{ block[4 * i + 1] } << 16) |
             (uint32_t{ block[4 * i + 2] } << 8) | uint32_t{ block[4 * i + 3] };
    }
    for (size_t i = 16; i < 64; ++i)
    {
      const uint32_t s0 = RotateRight(w[i - 15], 7) ^ RotateRight(w[i - 15], 18) ^ (w[i - 15] >> 3);
      const uint32_t s1 = RotateRight(w[i - 2], 17) ^ RotateRight(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    std::array<uint32_t, 8> v = m_State;
    for (size_t i = 0; i < 64; ++i)
    {
      const uint32_t s1 = RotateRight(v[4], 6) ^ RotateRight(v[4], 11) ^ RotateRight(v[4], 25);
      const uint32_t choose = (v[4] & v[5]) ^ (~v[4] & v[6]);
      const uint32_t t1 = v[7] + s1 + choose + RoundConstants[i] + w[i];
      const uint32_t s0 = RotateRight(v[0], 2) ^ RotateRight(v[0], 13) ^ RotateRight(v[0], 22);
      const uint32_t majority = (v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]);
      const uint32_t t2 = s0 + majority;
      v = { t1 + t2, v[0], v[1], v[2], v[3] + t1, v[4], v[5], v[6] };
    }
    for (size_t i = 0; i < 8; ++i)
    {
      m_State[i] += v[i];
    }
  }

  std::array<uint32_t, 8> m_State{
    { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 }
  };
  std::vector<unsigned char> m_Pending;
  size_t                     m_Length{ 0 };
};
} // namespace

std::string
Sha256Hex(const std::string & bytes)
{
  Sha256 digest;
  digest.Update(reinterpret_cast<const unsigned char *>(bytes.data()), bytes.size());
  return digest.FinishHex();
}

std::string
FileSha256Hex(const std::string & path)
{
  std::ifstream file(path, std::ios::binary);
  if (!file)
  {
    throw InputError("cannot read '" + path + "' to compute its SHA-256");
  }
  Sha256                     digest;
  std::vector<unsigned char> block(size_t{ 1 } << 20);
  while (file)
  {
    file.read(reinterpret_cast<char *>(block.data()), static_cast<std::streamsize>(block.size()));
    digest.Update(block.data(), static_cast<size_t>(file.gcount()));
  }
  if (file.bad())
  {
    throw InputError("reading '" + path + "' failed while computing its SHA-256");
  }
  return digest.FinishHex();
}

} // namespace cdm
