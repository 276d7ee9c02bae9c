/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#ifndef cdmImageIO_h
#define cdmImageIO_h

#include "cdmVolume.h"

#include <string>

namespace cdm
{

/** Reads any scalar image ITK can read (NIfTI, NRRD, MetaImage...) as float. Throws InputError naming the file. */
Volume
ReadVolume(const std::string & path);

/** Writes a volume (2D when its Dimension is 2) atomically: a temporary name beside `path`, then a rename. */
void
WriteVolume(const Volume & volume, const std::string & path);

} // namespace cdm

#endif
