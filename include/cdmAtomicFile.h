/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#ifndef cdmAtomicFile_h
#define cdmAtomicFile_h

// Atomic file writes, used by every writer of the project (model files, checkpoints, images), and the check of an
// output path before the work that fills it.
#include <functional>
#include <string>

namespace cdm
{

/** Calls `write` with a temporary path beside `path` (same folder and extension), flushes it to the disk (fsync),
 *  renames it onto `path` and flushes the folder: readers never see a partial file, and after a power cut the name
 *  holds the old file or the whole new one. The temporary file is removed when `write` throws. */
void
WriteAtomically(const std::string & path, const std::function<void(const std::string & temporaryPath)> & write);

/** Checks, before any work, that WriteAtomically can write `path`: its folder exists and this user may write there,
 *  and `path` is not a folder. Throws InputError naming `option` (e.g. "--output"), the file and what was expected, so
 *  that a long run does not end in an error it could have given at its start. */
void
CheckOutputFile(const std::string & path, const std::string & option);

} // namespace cdm

#endif
