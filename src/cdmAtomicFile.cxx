/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#include "cdmAtomicFile.h"
#include "cdmError.h"

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <system_error>

namespace cdm
{
namespace
{
/** Flushes a file's (or a folder's) data to the disk; false when it cannot be opened or synced. */
bool
SyncToDisk(const std::string & path, bool directory)
{
  const int descriptor = ::open(path.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (descriptor < 0)
  {
    return false;
  }
  const bool synced = ::fsync(descriptor) == 0;
  ::close(descriptor);
  return synced;
}
} // namespace

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
    // Some writers report a file they could not create only on the console (ITK's NIfTI writer, through niftilib).
    if (!fs::exists(temporary))
    {
      throw Error("cannot write '" + path +
                  "': no file was made (does its folder exist, and may this user write there?)");
    }
    // The data reaches the disk before the name points at it, so that a power cut leaves the old file or the new
    // one, never a named file with missing data.
    if (!SyncToDisk(temporary.string(), false))
    {
      throw Error("cannot write '" + path + "': its data could not be flushed to the disk");
    }
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
  // And the rename itself (the folder's entry) is made durable. A folder that cannot be synced (some network file
  // systems) leaves the file written and renamed, as before.
  SyncToDisk(target.has_parent_path() ? target.parent_path().string() : std::string("."), true);
}

void
CheckOutputFile(const std::string & path, const std::string & option)
{
  namespace fs = std::filesystem;
  const fs::path  file(path);
  const fs::path  folder = file.has_parent_path() ? file.parent_path() : fs::path(".");
  std::error_code error;
  if (path.empty() || !file.has_filename())
  {
    throw InputError(option + " '" + path + "': expected a file name");
  }
  if (fs::is_directory(file, error))
  {
    throw InputError(option + " '" + path + "' is a folder; expected a file name");
  }
  if (!fs::exists(folder, error))
  {
    throw InputError(option + " '" + path + "': its folder '" + folder.string() + "' does not exist (create it first)");
  }
  if (!fs::is_directory(folder, error))
  {
    throw InputError(option + " '" + path + "': '" + folder.string() + "' is not a folder");
  }
  if (::access(folder.c_str(), W_OK) != 0) // the file is written under a temporary name in that folder, then renamed
  {
    throw InputError(option + " '" + path + "': its folder '" + folder.string() + "' is not writable by this user");
  }
}

} // namespace cdm
