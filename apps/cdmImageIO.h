/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#ifndef cdmImageIO_h
#define cdmImageIO_h

#include "cdmVolume.h"

#include "itkImage.h"
#include "itkImageIOBase.h"

#include <string>

namespace cdm
{

/** Registers ITK's NIfTI, NRRD, MetaImage and PNG readers and writers unless some image IO is registered already
 *  (what ITK's CMake use-file arranges in a standalone build; inside ITK's source tree nothing does). Called by
 *  ReadVolume and WriteVolume; once per process. */
void
RegisterImageIOFactories();

/** Checks an image file before any voxel is read: the header ITK reads (at most three dimensions, one scalar per
 *  voxel, positive spacing, a size that fits in memory and in the file) and, for NIfTI, that the file is complete.
 *  Throws InputError naming the file. Returns the ImageIO that read the header, or null when no ITK reader
 *  recognises the file (its reader then says why). What ReadVolume checks first. */
itk::ImageIOBase::Pointer
CheckImageFile(const std::string & path);

/** CheckOutputFile (cdmAtomicFile.h), and that ITK writes an image format of that name (.nii.gz, .nii, .mha, .nrrd;
 * .png for one slice). */
void
CheckOutputImageFile(const std::string & path, const std::string & option);

/** Whether ITK's reader reads the file of `io` (after CheckImageFile) piece by piece, holding only the region asked
 *  of it: uncompressed MetaImage, and NIfTI of scalar voxels (.nii and .nii.gz; a .nii.gz piece is decompressed from
 *  the file's start up to it). Compressed MetaImage and NRRD are read whole. */
bool
ReadsInPieces(itk::ImageIOBase * io);

/** Reads any scalar image ITK can read (NIfTI, NRRD, MetaImage...) as float. Throws InputError naming the file, also
 *  for a NIfTI file shorter than its header declares or a damaged .gz stream (CheckNiftiFileIsComplete), for more
 *  than three dimensions (a 4D series), and for non-scalar pixels (complex, RGB, vectors). */
Volume
ReadVolume(const std::string & path);

/** Throws InputError naming the file when a `.nii` / `.nii.gz` file holds fewer bytes than its header declares (an
 *  interrupted copy), or its gzip stream ends early or fails its CRC: ITK's NIfTI reader fills the missing voxels
 *  with zeros instead of failing. Other formats are left to their readers. */
void
CheckNiftiFileIsComplete(const std::string & path);

/** Copies an ITK image (voxels and geometry) into a Volume. */
Volume
ToVolume(const itk::Image<float, 3> * image, const std::string & description, unsigned int dimension = 3);

/** Copies a Volume into a new ITK image with the same geometry. */
itk::Image<float, 3>::Pointer
ToImage(const Volume & volume);

/** Writes a volume (2D when its Dimension is 2) atomically: a temporary name beside `path`, then a rename. */
void
WriteVolume(const Volume & volume, const std::string & path);

/** Writes a label map (whole numbers 0 to 255, e.g. a segmentation) as 8-bit unsigned voxels, atomically as
 *  WriteVolume. Throws InputError for any other value. */
void
WriteLabelVolume(const Volume & labels, const std::string & path);

} // namespace cdm

#endif
