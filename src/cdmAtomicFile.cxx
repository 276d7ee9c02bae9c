/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#include "cdmAtomicFile.h"
#include "cdmError.h"

#include <filesystem>
#include <system_error>
#include <unistd.h>

namespace cdm
{

void
WriteAtomically(const std::string & path, const std::function<void(const std::string & temporaryPath)> & write)
{
  namespace fs = std::filesystem;
  const fs::path target(path);
  // Keep the full extension (".nii.gz") at the end so that writers that pick a format by name still work.
  const std::string name = target.filename().string();
  const size_t      dot = name.find('.', 1);
  const std::string stem = dot == std::string::npos ? name : name.substr(0, dot);
  const std::string extension = dot == std::string::npos ? "" : name.substr(dot);
  const fs::path    temporary = target.parent_path() / ("." + stem + ".tmp" + std::to_string(::getpid()) + extension);
  try
  {
    write(temporary.string());
  }
  catch (...)
  {
    std::error_code ignored;
    fs::remove(temporary, ignored);
    throw;
  }
  std::error_code error;
  fs::rename(temporary, target, error);
  if (error)
  {
    std::error_code ignored;
    fs::remove(temporary, ignored);
    throw Error("cannot write '" + path + "': " + error.message());
  }
}

} // namespace cdm
