// SWIG interface of the `itk_cdm` Python package's extension (module itk_cdm._engine): the core engine's face in
// cdmPython.h. Built with -threads: the GIL is released while the engine computes. Engine errors become
// ValueError (bad input) and RuntimeError (model file, engine), with the C++ message.
%module(package="itk_cdm", directors="1") engine

%{
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#define SWIG_FILE_WITH_INIT
#include <numpy/arrayobject.h>
#include "cdmAtomicFile.h"
#include "cdmError.h"
#include "cdmPython.h"
#include "cdmTrainer.h"

static void
cdmFreeFloatVector(PyObject * capsule)
{
  delete static_cast<std::vector<float> *>(PyCapsule_GetPointer(capsule, "cdm.FloatArray"));
}
%}

%init %{
  import_array();
%}

%include <std_string.i>
%include <std_vector.i>
%include <std_map.i>
%include <stdint.i>

%template(StringVector) std::vector<std::string>;
%template(DoubleVector) std::vector<double>;
%template(Int64Vector) std::vector<int64_t>;
%template(StringDoubleMap) std::map<std::string, double>;
%template(StringIntMap) std::map<std::string, int>;

%feature("director") cdm::python::TrainingObserver;
%feature("director:except") {
  if ($error != nullptr)
  {
    throw Swig::DirectorMethodException();
  }
}

// A reader's Python exception becomes the skip reason of its case (Dataset::Load catches InputError); the
// Python error is fetched (and so cleared) so that reading goes on with the next case.
%feature("director") cdm::python::VolumeFileReader;
%feature("director:except") cdm::python::VolumeFileReader::Read {
  if ($error != nullptr)
  {
    PyObject * type = nullptr;
    PyObject * value = nullptr;
    PyObject * traceback = nullptr;
    PyErr_Fetch(&type, &value, &traceback);
    std::string message = "unreadable";
    if (PyObject * text = value ? PyObject_Str(value) : nullptr)
    {
      if (const char * utf8 = PyUnicode_AsUTF8(text))
      {
        message = utf8;
      }
      Py_DECREF(text);
    }
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(traceback);
    throw cdm::InputError(message);
  }
}

%exception {
  try
  {
    $action
  }
  catch (const Swig::DirectorException &)
  {
    SWIG_fail;
  }
  catch (const cdm::InputError & e)
  {
    PyErr_SetString(PyExc_ValueError, e.what());
    SWIG_fail;
  }
  catch (const std::exception & e)
  {
    PyErr_SetString(PyExc_RuntimeError, e.what());
    SWIG_fail;
  }
}

// A Python buffer (a C-contiguous float32 NumPy array, an array.array('f'), ...) read in place.
%typemap(in) (const float * voxels, int64_t count) (Py_buffer view)
{
  view.obj = nullptr;
  if (PyObject_GetBuffer($input, &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) != 0)
  {
    SWIG_fail;
  }
  if (view.itemsize != 4 || view.format == nullptr || std::string(view.format) != "f")
  {
    PyErr_SetString(PyExc_TypeError, "voxels: expected a C-contiguous float32 buffer");
    SWIG_fail;
  }
  $1 = ($1_ltype)view.buf;
  $2 = static_cast<int64_t>(view.len / 4);
}
%typemap(freearg) (const float * voxels, int64_t count)
{
  if (view$argnum.obj != nullptr)
  {
    PyBuffer_Release(&view$argnum);
  }
}

// FloatArray -> a NumPy array that owns the engine's buffer (no copy).
%typemap(out) cdm::python::FloatArray
{
  cdm::python::FloatArray & value = $1;
  if (value.Values.empty())
  {
    Py_INCREF(Py_None);
    $result = Py_None;
  }
  else
  {
    auto *                owned = new std::vector<float>(std::move(value.Values));
    std::vector<npy_intp> dims(value.Shape.begin(), value.Shape.end());
    PyObject * array = PyArray_SimpleNewFromData(static_cast<int>(dims.size()), dims.data(), NPY_FLOAT32, owned->data());
    if (array == nullptr)
    {
      delete owned;
      SWIG_fail;
    }
    PyObject * capsule = PyCapsule_New(owned, "cdm.FloatArray", cdmFreeFloatVector);
    if (capsule == nullptr || PyArray_SetBaseObject(reinterpret_cast<PyArrayObject *>(array), capsule) != 0)
    {
      Py_DECREF(array);
      SWIG_fail;
    }
    $result = array;
  }
}

%ignore cdm::python::ImageSet::Volumes;
%ignore cdm::python::RepresentationData::Get;
%ignore cdm::python::RepresentationData::RepresentationData;
%ignore cdm::python::SynthesisData::SynthesisData;
%ignore cdm::python::TrainingData::Get;
%ignore cdm::python::FloatArray;
%ignore cdm::Train;
%ignore cdm::CheckpointPath;
%ignore cdm::StageReport;
%ignore cdm::TrainingReport;

// Only the Dice figures of cdmMetrics.h travel to Python (in TrainingProgress); this declaration mirrors its struct.
namespace cdm
{
struct SegmentationDice
{
  double EnhancingTumour;
  double TumourCore;
  double WholeTumour;
};
}

%ignore cdm::WriteAtomically;
%include "cdmAtomicFile.h"
%include "cdmTrainer.h"
%include "cdmPython.h"
