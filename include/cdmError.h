/*=========================================================================
 *  itk-cdm: Cross-conditioned Diffusion Model for ITK.
 *  Licensed under the Apache License, Version 2.0.
 *=========================================================================*/
#ifndef cdmError_h
#define cdmError_h

#include <stdexcept>
#include <string>

namespace cdm
{

/** \brief Base of every error the core engine raises. */
class Error : public std::runtime_error
{
public:
  using std::runtime_error::runtime_error;
};

/** \brief The caller's data or parameters are not what was expected (a user error: exit code 1). */
class InputError : public Error
{
public:
  using Error::Error;
};

/** \brief A model file is missing, truncated, corrupt, of another version, or does not fit its network. */
class ModelFileError : public Error
{
public:
  using Error::Error;
};

/** A distributed training run lost its process group: the rendezvous or a collective timed out or failed (another
 *  rank stopped or died). The message names this rank and the world size. */
class DistributedError : public Error
{
public:
  using Error::Error;
};

} // namespace cdm

#endif
