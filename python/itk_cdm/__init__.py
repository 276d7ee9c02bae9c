"""itk-cdm: synthesize a missing MRI contrast with the Cross-conditioned Diffusion Model (CDM, MICCAI 2024).

The functions take and return ``itk.Image`` objects (spacing, origin and direction kept) or NumPy arrays (NumPy in,
NumPy out), in ITK's snake_case style::

    import itk, itk_cdm
    model = itk_cdm.load_model("examples/models/t1c-small.cdm")
    sources = {m: itk.imread(f"case-{m}.nii.gz", itk.F) for m in model.sources}
    t1c = itk_cdm.synthesize(model, sources, seed=0)
    itk.imwrite(t1c, "case-t1c-synthetic.nii.gz")

The engine is the same C++ core as the ``cdm`` command line and the ITK filters (``itk_cdm._engine``, SWIG); the
GIL is released while it computes. Bad input raises ``ValueError``; a model file that cannot be used raises
``RuntimeError``; both carry the engine's message.
"""
import json as _json
import os as _os
import random as _random
import subprocess as _subprocess
import sys as _sys

import numpy as _np
import torch as _torch  # loads the LibTorch that the extension links (the pinned `torch` wheel)

from . import engine as _engine

__version__ = _engine.Version()
__all__ = ["Model", "Representation", "load_model", "synthesize", "encode", "sample_representation", "train",
           "phantom", "impute", "known_modalities", "set_number_of_threads", "__version__"]

del _torch


def known_modalities():
    """The modality names the engine knows (BraTS 2023's t1n, t1c, t2w, t2f, and pd: with t1n and t2w the IXI set)."""
    return list(_engine.KnownModalityNames())


def set_number_of_threads(threads):
    """Sets the engine's (torch's) intra-op thread count."""
    _engine.SetThreads(int(threads))


class Model:
    """A loaded ``.cdm`` model. Attributes: ``path``, ``device``, ``target``, ``targets`` (what it synthesizes: a
    unified model's several, or ``(target,)``), ``sources`` (the modalities it reads),
    ``dimension`` (2 or 3: the networks' dimension; a 2D model runs slice by slice on volumes), ``preset``,
    ``kind`` (``cdm``, a baseline ``unet`` / ``ddim``, or ``segmenter``), ``sources_optional``, ``parameters``,
    ``config`` (the whole configuration with its training provenance, a dict)."""

    def __init__(self, handle):
        self._handle = handle
        self.path = handle.Path()
        self.device = handle.Device()
        self.target = handle.Target()
        self.targets = tuple(handle.Targets())
        self.sources = tuple(handle.Sources())
        self.dimension = int(handle.Dimension())
        self.preset = handle.Preset()
        self.kind = handle.Kind()
        self.sources_optional = bool(handle.SourcesOptional())
        self.parameters = int(handle.NumberOfParameters())
        self.config = _json.loads(handle.ConfigJson())

    def __repr__(self):
        return "<itk_cdm.Model {} {}D {} ({}): {} -> {} on {}>".format(
            self.kind, self.dimension, self.preset, _os.path.basename(self.path), ",".join(self.sources),
            ",".join(self.targets), self.device)


class Representation:
    """A representation z: ``values`` (NumPy, [samples, cells, dim]) and the sources' normalisation scales."""

    def __init__(self, data):
        self.values = data.Values()
        self.samples = int(data.Samples())
        self.cells = int(data.Cells())
        self.dim = int(data.Dim())
        self.source_scales = dict(data.SourceScales())

    def mean(self):
        """The mean over samples, [cells, dim]."""
        return self.values.mean(axis=0)

    def __repr__(self):
        return "<itk_cdm.Representation {} sample(s) x {} cell(s) x {}>".format(self.samples, self.cells, self.dim)


def load_model(path, device="auto"):
    """Reads and validates a ``.cdm`` model file. ``device``: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or
    ``cuda:N``. Raises ``RuntimeError`` naming the file when it is missing, truncated, corrupt or of another
    format version, ``ValueError`` for an unknown device."""
    return Model(_engine.ModelHandle(_os.fspath(path), str(device)))


def _is_itk_image(image):
    return hasattr(image, "GetSpacing") and hasattr(image, "GetLargestPossibleRegion")


def _add_image(image_set, name, image):
    """Adds one itk.Image or NumPy array to an engine ImageSet (no copy for C-contiguous float32 data)."""
    if _is_itk_image(image):
        import itk

        array = itk.array_view_from_image(image)
        if array.dtype != _np.float32 or not array.flags["C_CONTIGUOUS"]:
            array = _np.ascontiguousarray(array, dtype=_np.float32)
        dimension = image.GetImageDimension()
        spacing = [float(v) for v in image.GetSpacing()]
        origin = [float(v) for v in image.GetOrigin()]
        direction = [float(v) for v in itk.array_from_matrix(image.GetDirection()).ravel()]
    else:
        array = _np.asarray(image)
        if array.dtype.kind not in "fiub":
            raise ValueError("source '{}': expected an itk.Image or a numeric NumPy array, got {}".format(
                name, type(image).__name__))
        array = _np.ascontiguousarray(array, dtype=_np.float32)
        dimension = array.ndim
        if dimension not in (2, 3):
            raise ValueError("source '{}': expected a 2D or 3D array, got shape {}".format(name, array.shape))
        spacing = [1.0] * dimension
        origin = [0.0] * dimension
        direction = list(_np.eye(dimension).ravel())
    size = [int(s) for s in reversed(array.shape)]  # NumPy [z, y, x] -> engine x, y, z
    if len(size) != dimension:
        raise ValueError("source '{}': a {}D image holds an array of shape {}".format(name, dimension, array.shape))
    image_set.Add(str(name), array.reshape(-1), _engine.Int64Vector(size), _engine.DoubleVector(spacing),
                  _engine.DoubleVector(origin), _engine.DoubleVector(direction))
    return _is_itk_image(image)


def _image_set(images):
    if not hasattr(images, "items"):
        raise ValueError("sources: expected a mapping of modality names to images, e.g. {'t1n': image, ...}; got "
                         + type(images).__name__)
    image_set = _engine.ImageSet()
    reference = None
    as_itk = []
    for name, image in images.items():
        as_itk.append(_add_image(image_set, name, image))
        if reference is None:
            reference = image
    if len(set(as_itk)) > 1:
        raise ValueError("sources: give all itk.Image objects or all NumPy arrays, not a mix")
    return image_set, reference, bool(as_itk and as_itk[0])


def _seed(seed):
    return _random.getrandbits(63) if seed is None else int(seed)


def _to_output(array, reference, as_itk):
    if not as_itk:
        return array
    import itk

    image = itk.image_from_array(array)
    image.SetSpacing(reference.GetSpacing())
    image.SetOrigin(reference.GetOrigin())
    image.SetDirection(reference.GetDirection())
    return image


def synthesize(model, sources, samples=1, seed=None, uncertainty=False, eta=None, precision="fp32", target=None,
               voxels_per_call=0):
    """Synthesizes ``target`` (one of ``model.targets``; ``None``: the model's target, or for a unified model the
    one of its targets the sources lack) from ``sources``, a mapping of modality names (``model.sources``) to
    ``itk.Image`` objects or NumPy arrays ([z, y, x] or [y, x]) of one shared grid.

    ``samples`` > 1 draws that many representations and returns their mean synthesis; ``seed`` fixes the starting
    noise (the same seed gives the same image; ``None`` draws one); ``eta`` is DDIM's eta (``None``: the model's);
    ``precision`` is the networks' arithmetic: ``"fp32"``, or ``"bf16"`` / ``"fp16"`` (faster where the hardware has
    it, at a fidelity cost: bench/PRECISION.md).
    ``voxels_per_call`` bounds memory as ``cdm synthesize --voxels-per-call``: the voxels one network call reads (a 2D
    model's slices per call; a 3D model's slabs along z); 0 is automatic. Any value gives the same image to float
    rounding.
    Returns an image like the sources (an ``itk.Image`` with their spacing, origin and direction, or a NumPy array),
    and with ``uncertainty=True`` a pair (image, standard deviation over samples; needs ``samples`` >= 2).
    Raises ``ValueError`` for a missing, unknown or mismatched source."""
    if uncertainty and samples < 2:
        raise ValueError("uncertainty=True needs samples >= 2 (the standard deviation over samples), got samples="
                         + str(samples))
    image_set, reference, as_itk = _image_set(sources)
    result = model._handle.Synthesize(image_set, int(samples), _seed(seed), -1.0 if eta is None else float(eta),
                                      str(precision), "" if target is None else str(target), int(voxels_per_call))
    image = _to_output(result.TakeImage(), reference, as_itk)
    if not uncertainty:
        return image
    return image, _to_output(result.TakeUncertainty(), reference, as_itk)


def encode(model, target_image, modality=None):
    """The MRM feature encoder on an image of the model's target modality (or ``modality``, one of
    ``model.targets``): z = FE(target) (an ``itk.Image`` or a NumPy array). Returns a :class:`Representation` with
    one sample."""
    image_set, _, _ = _image_set({model.target if modality is None else str(modality): target_image})
    return Representation(model._handle.Encode(image_set))


def sample_representation(model, sources, samples=1, seed=None, eta=None, target=None):
    """The source encoder and the MDN sampler: ``samples`` draws of z_hat from the sources (see
    :func:`synthesize` for the arguments). Returns a :class:`Representation`."""
    image_set, _, _ = _image_set(sources)
    return Representation(
        model._handle.SampleRepresentation(image_set, int(samples), _seed(seed), -1.0 if eta is None else float(eta),
                                           "" if target is None else str(target)))


def segment(model, sources, precision="fp32", missing_as_zero=False):
    """A segmenter's tumour labels (``cdm train --model-kind segmenter``; as ``cdm segment``) from ``sources``, a
    mapping of modality names (``model.sources``) to ``itk.Image`` objects or NumPy arrays of one shared grid.
    ``missing_as_zero``: let modalities be absent even for a model not trained for it (they enter as zeros).
    Returns the labels (0 background, 1 necrotic core, 2 oedema, 3 enhancing tumour) as 8-bit values, an
    ``itk.Image`` like the sources or a NumPy array. Raises ``ValueError`` for a model that is not a segmenter and
    for a missing, unknown or mismatched source."""
    image_set, reference, as_itk = _image_set(sources)
    result = model._handle.Segment(image_set, str(precision), bool(missing_as_zero))
    return _to_output(result.TakeImage().astype(_np.uint8), reference, as_itk)


from ._training import impute, phantom, train  # noqa: E402  (they use the helpers above)
