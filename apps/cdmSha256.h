/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#ifndef cdmSha256_h
#define cdmSha256_h

#include <string>

namespace cdm
{

/** The SHA-256 digest (FIPS 180-4) of `bytes`, as 64 lower-case hex digits (what `sha256sum` prints). */
std::string
Sha256Hex(const std::string & bytes);

/** The SHA-256 digest of a file's content, read in blocks. Throws InputError naming the file when it cannot be read. */
std::string
FileSha256Hex(const std::string & path);

} // namespace cdm

#endif
