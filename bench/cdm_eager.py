#!/usr/bin/env python3
"""A PyTorch-eager reference of itk-cdm: the same networks and the same inference, written as a plain PyTorch user
would write them (nn.Conv2d / nn.Conv3d, nn.Linear, torch.inference_mode; no torch.compile, no TorchScript, no
in-place tricks), with the weights read from a `.cdm` model file. It is the "obvious alternative" the C++ engine is
timed against (bench/eager.sh, bench/EAGER.md) and an independent check of the engine's arithmetic
(test/python/test_eager_reference.py). Needs torch and numpy only.

    python3 bench/cdm_eager.py synthesize --model M.cdm --source t1n=a.nii.gz ... [--seed S] [--output out.npy]
                                          [--representation sampled|zero] [--compare engine.nii.gz]
    python3 bench/cdm_eager.py time --model M.cdm --source t1n=a.nii.gz ... --threads 2 --repeats 3 --json out.json
                                    [--engine-outputs engine.safetensors]

What it mirrors (the engine file in brackets): the `.cdm` container (src/cdmSafetensors.cxx) and its configuration
(src/cdmModelConfig.cxx); the networks (src/cdmNetworks.cxx), loaded strictly by the engine's parameter names; the
intensity normalisation (src/cdmNormalization.cxx); the network layout, padding and slices per call
(src/cdmModelImpl.cxx); the seeded MDN noise and the DDIM sampler (src/cdmModel.cxx, src/cdmDiffusion.cxx); the
C-UNet synthesis and denormalisation (src/cdmSynthesis.cxx). Whole images only: no tiles, no streaming.
Models of kind cdm and unet; the image-space ddim baseline is not mirrored.
"""
import argparse
import gzip
import json
import math
import statistics
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# ----------------------------------------------------------------------------------------------------------------
# Files: the `.cdm` model (safetensors layout) and NIfTI-1 images (what `cdm phantom` writes).


def read_safetensors(path):
    """(metadata, {name: float32 tensor}) of a safetensors file as itk-cdm writes it (F32 tensors only).
    The FNV-1a checksum is not verified (a byte loop in Python); the engine verifies it on every load."""
    with open(path, "rb") as f:
        data = f.read()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    metadata = header.pop("__metadata__", {})
    body = memoryview(data)[8 + length:]
    tensors = {}
    for name, entry in header.items():
        if entry["dtype"] != "F32":
            raise ValueError("{}: tensor '{}' has dtype {}; expected F32".format(path, name, entry["dtype"]))
        begin, end = entry["data_offsets"]
        values = np.frombuffer(body[begin:end], dtype="<f4").reshape(entry["shape"])
        tensors[name] = torch.from_numpy(values.astype(np.float32))
    return metadata, tensors


_NIFTI_TYPES = {2: np.uint8, 4: np.int16, 8: np.int32, 16: np.float32, 64: np.float64, 256: np.int8, 512: np.uint16,
                768: np.uint32}


def read_nifti(path):
    """The voxels of a NIfTI-1 image (.nii or .nii.gz) as float32 [Z, Y, X] (x fastest, as ITK and the engine store
    them); the scaling slope and intercept applied as ITK applies them. 2D images come back as [1, Y, X]."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    endian = "<" if struct.unpack("<i", data[:4])[0] == 348 else ">"
    if struct.unpack(endian + "i", data[:4])[0] != 348:
        raise ValueError("{}: not a NIfTI-1 file".format(path))
    dims = struct.unpack(endian + "8h", data[40:56])
    datatype = struct.unpack(endian + "h", data[70:72])[0]
    offset = int(struct.unpack(endian + "f", data[108:112])[0])
    slope, intercept = struct.unpack(endian + "2f", data[112:120])
    if datatype not in _NIFTI_TYPES:
        raise ValueError("{}: NIfTI datatype {} is not supported".format(path, datatype))
    shape = [max(1, d) for d in dims[1:4]] if dims[0] >= 3 else [dims[1], dims[2], 1]
    count = shape[0] * shape[1] * shape[2]
    voxels = np.frombuffer(data, dtype=np.dtype(_NIFTI_TYPES[datatype]).newbyteorder(endian), count=count,
                           offset=offset)
    voxels = voxels.reshape(shape[2], shape[1], shape[0]).astype(np.float32)
    if slope not in (0.0, 1.0) or intercept != 0.0:
        voxels = (voxels * np.float32(slope or 1.0) + np.float32(intercept)).astype(np.float32)
    return voxels


# ----------------------------------------------------------------------------------------------------------------
# The networks (src/cdmNetworks.cxx). Attribute names are the engine's parameter names, so that load_state_dict
# with strict=True checks that every tensor of the file has its place and shape.


def conv(dimension, in_channels, out_channels, kernel, stride=1):
    """The engine's Conv: zero padding of kernel // 2 for stride 1, none for the 2x2 stride-2 downsamplings."""
    layer = nn.Conv2d if dimension == 2 else nn.Conv3d
    return layer(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2 if stride == 1 else 0)


def upsample2(x):
    """Nearest-neighbour upsampling by 2 along every spatial axis."""
    return F.interpolate(x, scale_factor=2, mode="nearest")


def spatial_view(values, x):
    """A [B, C] tensor shaped to broadcast over the spatial axes of x."""
    return values.view(values.shape[0], values.shape[1], *([1] * (x.dim() - 2)))


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of each voxel (ConvNeXt's channels-first LayerNorm), eps 1e-6."""

    def __init__(self, channels):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        mean = x.mean(1, keepdim=True)
        variance = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(variance + 1e-6)
        return spatial_view(self.weight[None], x) * x + spatial_view(self.bias[None], x)


class ResidualBlock(nn.Module):
    """norm, SiLU, 3x3 conv, norm, FiLM from the condition (when condition_dim > 0), SiLU, 3x3 conv, + skip."""

    def __init__(self, dimension, in_channels, out_channels, condition_dim):
        super().__init__()
        self.norm1 = ChannelNorm(in_channels)
        self.conv1 = conv(dimension, in_channels, out_channels, 3)
        self.norm2 = ChannelNorm(out_channels)
        self.conv2 = conv(dimension, out_channels, out_channels, 3)
        self.skip = conv(dimension, in_channels, out_channels, 1) if in_channels != out_channels else None
        self.film = nn.Linear(condition_dim, 2 * out_channels) if condition_dim > 0 else None

    def forward(self, x, condition=None):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.norm2(h)
        if self.film is not None:
            gamma, beta = self.film(condition).chunk(2, dim=1)
            h = h * (1 + spatial_view(gamma, h)) + spatial_view(beta, h)
        h = self.conv2(F.silu(h))
        return (self.skip(x) if self.skip is not None else x) + h


def encoder_channels(network):
    """Channels after the encoder's stem and after each downsampling."""
    channels = [network["encoder_channels"]]
    for _ in range(network["encoder_levels"]):
        channels.append(min(channels[-1] * 2, network["encoder_channels"] * 4))
    return channels


class ImageEncoder(nn.Module):
    """The MRM feature encoder FE and the source encoder E_src: stem, residual blocks and stride-2 downsamplings ->
    feature map; its average -> MLP -> z."""

    def __init__(self, dimension, in_channels, network):
        super().__init__()
        channels = encoder_channels(network)
        self.levels, self.blocks_per_level = network["encoder_levels"], network["encoder_blocks"]
        self.stem = conv(dimension, in_channels, channels[0], 3)
        for level in range(self.levels):
            for b in range(self.blocks_per_level):
                self.add_module("block_{}_{}".format(level, b),
                                ResidualBlock(dimension, channels[level], channels[level], 0))
            self.add_module("down_{}".format(level), conv(dimension, channels[level], channels[level + 1], 2, 2))
        self.project = nn.Linear(channels[-1], network["representation_dim"])
        self.mix = nn.Linear(network["representation_dim"], network["representation_dim"])

    def features(self, x):
        h = F.leaky_relu(self.stem(x), 0.1)
        for level in range(self.levels):
            for b in range(self.blocks_per_level):
                h = getattr(self, "block_{}_{}".format(level, b))(h)
            h = getattr(self, "down_{}".format(level))(h)
        return h

    def represent(self, pooled):
        return self.mix(F.leaky_relu(self.project(pooled), 0.1))

    def forward(self, x):
        h = self.features(x)
        return h, self.represent(h.mean(dim=tuple(range(2, h.dim()))))


class FeatureDecoder(nn.Module):
    """The MRM feature decoder FD (training only; built so that the whole file loads strictly)."""

    def __init__(self, dimension, feature_channels, network):
        super().__init__()
        channels = encoder_channels(network)
        d = network["representation_dim"]
        self.levels = network["encoder_levels"]
        self.block_in = ResidualBlock(dimension, feature_channels, channels[-1], d)
        for level in reversed(range(self.levels)):
            self.add_module("up_{}".format(level), conv(dimension, channels[level + 1], channels[level], 3))
            self.add_module("block_{}".format(level), ResidualBlock(dimension, channels[level], channels[level], d))
        self.out = conv(dimension, channels[0], 1, 3)

    def forward(self, features, z):
        h = self.block_in(features, z)
        for level in reversed(range(self.levels)):
            h = getattr(self, "up_{}".format(level))(upsample2(h))
            h = getattr(self, "block_{}".format(level))(h, z)
        return self.out(F.silu(h))


def sinusoidal_embedding(t, dim):
    """DDPM's sinusoidal embedding of 1000 * t: [B] -> [B, dim]."""
    half = dim // 2
    frequencies = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=t.dtype) / float(half))
    angles = (1000.0 * t).view(-1, 1) * frequencies.view(1, -1)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class TimeEmbedding(nn.Module):
    """The ddim baseline's timestep conditioning (built so that its files load; its sampler is not mirrored)."""

    def __init__(self, dim):
        super().__init__()
        self.first = nn.Linear(32, dim)
        self.second = nn.Linear(dim, dim)

    def forward(self, t):
        return self.second(F.silu(self.first(sinusoidal_embedding(t, 32))))


class Denoiser(nn.Module):
    """The MDN: a residual MLP over [z_t, c, embedding(t)] predicting z_0."""

    embedding_dim = 32

    def __init__(self, network):
        super().__init__()
        d, width = network["representation_dim"], network["denoiser_width"]
        self.blocks = network["denoiser_blocks"]
        self.add_module("in", nn.Linear(2 * d + self.embedding_dim, width))
        for b in range(self.blocks):
            self.add_module("block_{}_a".format(b), nn.Linear(width, width))
            self.add_module("block_{}_b".format(b), nn.Linear(width, width))
        self.out = nn.Linear(width, d)

    def forward(self, zt, condition, t):
        embedding = sinusoidal_embedding(t, self.embedding_dim)
        h = F.leaky_relu(getattr(self, "in")(torch.cat([zt, condition, embedding], dim=1)), 0.1)
        for b in range(self.blocks):
            h = h + getattr(self, "block_{}_b".format(b))(F.leaky_relu(getattr(self, "block_{}_a".format(b))(h), 0.1))
        return self.out(h)


class CrossConditionedUNet(nn.Module):
    """The C-UNet: a residual UNet whose every block is modulated by z (FiLM)."""

    def __init__(self, dimension, in_channels, condition_dim, network):
        super().__init__()
        channels = [network["unet_channels"] * m for m in network["unet_multipliers"]]
        self.levels, self.blocks = len(channels), network["unet_blocks"]
        self.stem = conv(dimension, in_channels, channels[0], 3)
        for level in range(self.levels):
            for b in range(self.blocks):
                self.add_module("down_{}_{}".format(level, b),
                                ResidualBlock(dimension, channels[level], channels[level], condition_dim))
            if level + 1 < self.levels:
                self.add_module("downsample_{}".format(level),
                                conv(dimension, channels[level], channels[level + 1], 2, 2))
        self.middle = ResidualBlock(dimension, channels[-1], channels[-1], condition_dim)
        for level in range(self.levels - 1):
            self.add_module("upsample_{}".format(level), conv(dimension, channels[level + 1], channels[level], 3))
            for b in range(self.blocks):
                in_channels_of_block = 2 * channels[level] if b == 0 else channels[level]
                self.add_module("up_{}_{}".format(level, b),
                                ResidualBlock(dimension, in_channels_of_block, channels[level], condition_dim))
        self.out_norm = ChannelNorm(channels[0])
        self.out = conv(dimension, channels[0], 1, 3)

    def forward(self, x, z=None):
        skips = []
        h = self.stem(x)
        for level in range(self.levels):
            for b in range(self.blocks):
                h = getattr(self, "down_{}_{}".format(level, b))(h, z)
            skips.append(h)
            if level + 1 < self.levels:
                h = getattr(self, "downsample_{}".format(level))(h)
        h = self.middle(h, z)
        for level in reversed(range(self.levels - 1)):
            h = getattr(self, "upsample_{}".format(level))(upsample2(h))
            h = torch.cat([h, skips[level]], dim=1)
            for b in range(self.blocks):
                h = getattr(self, "up_{}_{}".format(level, b))(h, z)
        return self.out(F.silu(self.out_norm(h)))


# ----------------------------------------------------------------------------------------------------------------
# Normalisation (src/cdmNormalization.cxx), noise and schedule (src/cdmModelImpl.cxx, src/cdmDiffusion.cxx).


def percentile(values, percent):
    """The engine's Percentile: linear interpolation between the two order statistics around p / 100 * (n - 1)."""
    if values.size == 0:
        raise ValueError("percentile of an empty set of values")
    position = min(max(percent, 0.0), 100.0) / 100.0 * float(values.size - 1)
    lower = int(math.floor(position))
    upper = min(lower + 1, values.size - 1)
    ordered = np.partition(values, sorted({lower, upper}))
    low = float(ordered[lower])
    if upper == lower:
        return low
    return low + (position - lower) * (float(ordered[upper]) - low)


def normalisation_scale(voxels, rule):
    """The intensity that maps to 1: the rule's percentile of the foreground (voxels above a fraction of the 99th
    percentile of the positive voxels)."""
    if rule["method"] != "foreground-percentile-scale":
        raise ValueError("normalisation method '{}' is unknown".format(rule["method"]))
    flat = voxels.ravel()
    positive = flat[flat > 0.0]
    if positive.size == 0:
        raise ValueError("no positive voxel; expected an image with foreground")
    threshold = rule["foreground_fraction"] * percentile(positive, 99.0)
    # Compared in double, as the engine compares a float voxel with a double threshold.
    return percentile(flat[flat.astype(np.float64) > threshold], rule["upper_percentile"])


def normalise(voxels, scale, rule):
    """clamp(v / scale, 0, clip) in float32, with the engine's float reciprocal."""
    scaled = voxels.astype(np.float32) * np.float32(1.0 / scale)
    return np.clip(scaled, np.float32(0.0), np.float32(rule["clip"]))


def seeded_noise(shape, seed):
    """Standard-normal float32 noise from a CPU generator seeded with `seed` (an unsigned 64-bit value)."""
    generator = torch.Generator().manual_seed(seed % (1 << 64))
    return torch.randn(shape, generator=generator, dtype=torch.float32)


class DiffusionSchedule:
    """The MDN's schedule (in double precision, as the engine keeps it) and its DDIM reverse steps."""

    def __init__(self, diffusion):
        steps = diffusion["train_steps"]
        self.betas = []
        for i in range(steps):
            fraction = 0.0 if steps == 1 else i / (steps - 1)
            if diffusion["schedule"] == "diffir":
                start, end = math.sqrt(diffusion["beta_start"]), math.sqrt(diffusion["beta_end"])
                root = start + fraction * (end - start)
                self.betas.append(root * root)
            elif diffusion["schedule"] == "linear":
                start, end = diffusion["beta_start"], diffusion["beta_end"]
                self.betas.append(start + fraction * (end - start))
            else:
                raise ValueError("diffusion schedule '{}' is unknown".format(diffusion["schedule"]))
        self.alpha_bars = []
        product = 1.0
        for beta in self.betas:
            product *= 1.0 - beta
            self.alpha_bars.append(product)

    def alpha_bar(self, t):
        return 1.0 if t < 0 else self.alpha_bars[t]

    def sampling_timesteps(self, steps):
        total = len(self.betas)
        steps = max(1, min(steps, total))
        stride = total // steps
        return [i * stride + (total - 1 - (steps - 1) * stride) for i in reversed(range(steps))]

    def step(self, zt, z0, t, t_previous, eta, noise):
        if t_previous < 0:
            return z0
        abar, abar_previous = self.alpha_bar(t), self.alpha_bar(t_previous)
        epsilon = (zt - math.sqrt(abar) * z0) / math.sqrt(1.0 - abar)
        sigma = (eta * math.sqrt((1.0 - abar_previous) / (1.0 - abar)) *
                 math.sqrt(max(0.0, 1.0 - abar / abar_previous)))
        previous = math.sqrt(abar_previous) * z0 + math.sqrt(max(0.0, 1.0 - abar_previous - sigma * sigma)) * epsilon
        if sigma > 0.0:
            previous = previous + sigma * noise
        return previous

    def sample(self, denoise, z_start, steps, eta, noise):
        timesteps = self.sampling_timesteps(steps)
        z = z_start
        for i, t in enumerate(timesteps):
            t_previous = timesteps[i + 1] if i + 1 < len(timesteps) else -1
            fraction = torch.full((z.shape[0],), t / len(self.betas), dtype=z.dtype)
            z = self.step(z, denoise(z, fraction), t, t_previous, eta,
                          noise() if eta > 0.0 and t_previous >= 0 else None)
        return z


# ----------------------------------------------------------------------------------------------------------------
# The model and its inference (src/cdmModel.cxx, src/cdmModelImpl.cxx, src/cdmSynthesis.cxx).


def pad_to_multiple(x, multiple):
    """Zero-pads the high end of every spatial axis of [B, C, ...] to a multiple."""
    pads = []
    for size in reversed(x.shape[2:]):
        pads += [0, (multiple - size % multiple) % multiple]
    return F.pad(x, pads) if any(pads) else x


class EagerModel(nn.Module):
    """A `.cdm` model's networks as torch.nn modules, named as in the file, and the engine's inference."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        network, dimension = config["network"], config["dimension"]
        kind = config["model_kind"]
        source_channels = 2 * len(config["sources"])
        if kind == "cdm":
            self.mrm_encoder = ImageEncoder(dimension, 1, network)
            self.mrm_decoder = FeatureDecoder(dimension, encoder_channels(network)[-1], network)
            self.source_encoder = ImageEncoder(dimension, source_channels, network)
            self.denoiser = Denoiser(network)
            self.unet = CrossConditionedUNet(dimension, source_channels, network["representation_dim"], network)
        elif kind == "unet":
            self.unet = CrossConditionedUNet(dimension, source_channels, 0, network)
        else:
            self.unet = CrossConditionedUNet(dimension, 1 + source_channels, network["representation_dim"], network)
            self.time_embedding = TimeEmbedding(network["representation_dim"])
        self.schedule = DiffusionSchedule(config["diffusion"])
        self.eval()

    @classmethod
    def load(cls, path):
        metadata, tensors = read_safetensors(path)
        if "cdm" not in metadata:
            raise ValueError("model file '{}': the header has no 'cdm' configuration".format(path))
        model = cls(json.loads(metadata["cdm"]))
        model.load_state_dict(tensors, strict=True)
        return model

    # --- layout -------------------------------------------------------------------------------------------------
    @property
    def unet_alignment(self):
        return 1 << (len(self.config["network"]["unet_multipliers"]) - 1)

    @property
    def encoder_alignment(self):
        return 1 << self.config["network"]["encoder_levels"]

    def to_network_layout(self, czyx):
        """[C, Z, Y, X] -> [N, C, H, W] (the slice axis first) for a 2D model, [1, C, Z, Y, X] for a 3D one."""
        if self.config["dimension"] == 3:
            return czyx.unsqueeze(0)
        return czyx.permute({2: (1, 0, 2, 3), 1: (2, 0, 1, 3), 0: (3, 0, 1, 2)}[self.config["slice_axis"]])

    def from_network_layout(self, batch):
        """The inverse: [B, C, ...] -> [C, Z, Y, X]."""
        if self.config["dimension"] == 3:
            return batch.squeeze(0)
        return batch.permute({2: (1, 0, 2, 3), 1: (1, 2, 0, 3), 0: (1, 2, 3, 0)}[self.config["slice_axis"]])

    def slice_count(self, shape_zyx):
        return shape_zyx[2 - self.config["slice_axis"]] if self.config["dimension"] == 2 else 1

    def slices_per_call(self, shape_zyx, voxels_per_call=0):
        """A 2D model's slices per call: as many as fit in 2^16 voxels (the engine's default), at least one."""
        slice_voxels = 1
        for axis, size in enumerate(reversed(shape_zyx)):  # volume axes x, y, z
            slice_voxels *= 1 if axis == self.config["slice_axis"] else max(1, size)
        return max(1, (voxels_per_call if voxels_per_call > 0 else 1 << 16) // slice_voxels)

    def source_scales(self, sources):
        rule = self.config["normalization"]
        return {name: normalisation_scale(voxels, rule) for name, voxels in sources.items()}

    def source_tensor(self, sources, scales):
        """[2S, Z, Y, X]: each source normalised, then an availability channel (zeros for a missing source)."""
        shape = next(iter(sources.values())).shape
        channels = []
        for name in self.config["sources"]:
            if name in sources:
                normalised = normalise(sources[name], scales[name], self.config["normalization"])
                channels += [torch.from_numpy(normalised), torch.ones(shape)]
            else:
                channels += [torch.zeros(shape), torch.zeros(shape)]
        return torch.stack(channels, 0)

    def check_sources(self, sources):
        unknown = set(sources) - set(self.config["sources"])
        if unknown:
            raise ValueError("sources {} are not inputs of this model; expected {}".format(
                sorted(unknown), self.config["sources"]))
        if not self.config["sources_optional"] and set(sources) != set(self.config["sources"]):
            raise ValueError("this model needs every source: {}".format(self.config["sources"]))
        if len({v.shape for v in sources.values()}) != 1:
            raise ValueError("sources differ in size")

    # --- source encoder + MDN -----------------------------------------------------------------------------------
    def encode_sources(self, inputs, voxels_per_call=0):
        """c = E_src(sources) per cell: a 2D model's slices a few at a time, a 3D model's volume in one call."""
        batch = self.to_network_layout(inputs)
        per_call = self.slices_per_call(inputs.shape[1:], voxels_per_call) if self.config["dimension"] == 2 else 1
        return torch.cat([self.source_encoder(pad_to_multiple(part, self.encoder_alignment))[1]
                          for part in batch.split(per_call)], dim=0)

    def sample_representation(self, sources, seed=0, samples=1, eta=None, scales=None, voxels_per_call=0):
        """Source encoder + MDN: (z [samples, cells, D], the sources' normalisation scales)."""
        self.check_sources(sources)
        with torch.inference_mode():
            scales = scales or self.source_scales(sources)
            shape = next(iter(sources.values())).shape
            cells = self.slice_count(shape)
            if self.config["model_kind"] != "cdm":
                return torch.zeros(samples, cells, 0), scales
            condition = self.encode_sources(self.source_tensor(sources, scales), voxels_per_call)
            eta = self.config["diffusion"]["eta"] if eta is None or eta < 0 else eta
            d = self.config["network"]["representation_dim"]
            steps = self.config["diffusion"]["sampling_steps"]
            z = []
            for k in range(samples):
                sample_seed = (seed * 1000003 + k) % (1 << 64)
                counter = [0]

                def step_noise():
                    counter[0] += 1
                    return seeded_noise((condition.shape[0], d), sample_seed * 7919 + counter[0])

                z.append(self.schedule.sample(lambda zt, t: self.denoiser(zt, condition, t),
                                              seeded_noise((condition.shape[0], d), sample_seed), steps, eta,
                                              step_noise))
            return torch.stack(z, 0), scales

    def encode(self, target, voxels_per_call=0):
        """z = FE(target) [cells, D] of an image of the target modality (for the oracle representation)."""
        with torch.inference_mode():
            rule = self.config["normalization"]
            image = torch.from_numpy(normalise(target, normalisation_scale(target, rule), rule))[None]
            batch = self.to_network_layout(image)
            return torch.cat([self.mrm_encoder(pad_to_multiple(part, self.encoder_alignment))[1]
                              for part in batch.split(16)], dim=0)

    # --- C-UNet synthesis ---------------------------------------------------------------------------------------
    def unet_input(self, sources, scales, rows=None):
        """The C-UNet's input in network layout (batch rows `rows` of a 2D model), zero-padded to its alignment."""
        batch = self.to_network_layout(self.source_tensor(sources, scales))
        if rows is not None:
            batch = batch[rows]
        return pad_to_multiple(batch, self.unet_alignment)

    def synthesize_with(self, sources, z, scales, voxels_per_call=0):
        """The C-UNet guided by z [samples, cells, D], denormalised: (image [Z, Y, X], std over samples or None)."""
        self.check_sources(sources)
        with torch.inference_mode():
            shape = next(iter(sources.values())).shape
            samples, cells = z.shape[0], z.shape[1]
            layout = self.to_network_layout(self.source_tensor(sources, scales))
            per_call = self.slices_per_call(shape, voxels_per_call) if self.config["dimension"] == 2 else 1
            means, deviations = [], []
            for start in range(0, cells, per_call):
                rows = layout[start:start + per_call]
                count = rows.shape[0]
                x = pad_to_multiple(rows, self.unet_alignment)
                x = x.repeat(samples, *([1] * (x.dim() - 1))) if samples > 1 else x
                guidance = z[:, start:start + count].reshape(samples * count, -1) if z.shape[2] else None
                prediction = self.unet(x, guidance)
                prediction = prediction[(slice(None), slice(None)) + tuple(slice(0, s) for s in rows.shape[2:])]
                prediction = prediction.reshape(samples, count, *prediction.shape[1:])
                means.append(prediction.mean(0))
                if samples > 1:
                    deviations.append(prediction.std(0, unbiased=False))
            scale = self.config["target_scale"]
            image = (self.from_network_layout(torch.cat(means, 0))[0] * scale).clamp(min=0.0)
            spread = self.from_network_layout(torch.cat(deviations, 0))[0] * scale if samples > 1 else None
            return image.numpy(), (spread.numpy() if spread is not None else None)

    def synthesize(self, sources, seed=0, samples=1, eta=None, representation="sampled", reference=None,
                   voxels_per_call=0):
        """The whole chain: normalise, sample z, synthesise, denormalise. `sources` maps modality -> [Z, Y, X]."""
        if self.config["model_kind"] == "ddim":
            raise NotImplementedError("the ddim baseline's image-space sampler is not mirrored")
        z, scales = self.sample_representation(sources, seed, samples, eta, voxels_per_call=voxels_per_call)
        if representation == "zero":
            z = torch.zeros(1, z.shape[1], z.shape[2])
        elif representation == "oracle":
            z = self.encode(reference, voxels_per_call)[None]
        elif representation != "sampled":
            raise ValueError("representation '{}' is unknown; expected sampled, oracle or zero".format(representation))
        return self.synthesize_with(sources, z, scales, voxels_per_call)


# ----------------------------------------------------------------------------------------------------------------
# Comparison and timing (bench/eager.sh runs this beside bench/cdmComponentTiming).


def relative_difference(reference, other):
    """max |reference - other| / (max - min of reference)."""
    reference = np.asarray(reference, dtype=np.float64)
    other = np.asarray(other, dtype=np.float64)
    if reference.shape != other.shape:
        raise ValueError("shapes differ: {} vs {}".format(reference.shape, other.shape))
    if reference.size == 0:
        return 0.0
    spread = float(reference.max() - reference.min()) or 1.0
    return float(np.abs(reference - other).max()) / spread


def median_seconds(run, repeats, warmup):
    for _ in range(warmup):
        run()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), seconds


def time_components(model, sources, repeats=3, warmup=1, seed=0, batch=0, components=None):
    """The three timings of bench/cdmComponentTiming on the same inputs: (a) one C-UNet pass over the network input
    (2D: the first `batch` slices, default the engine's slices per call; 3D: the whole volume), (b) source
    encoder + MDN sampling of the whole image, (c) the whole synthesis. Returns (report, outputs)."""
    components = ["unet_forward", "encoder_mdn", "synthesis"] if components is None else components
    shape = next(iter(sources.values())).shape
    z, scales = model.sample_representation(sources, seed)
    if model.config["dimension"] == 2:
        batch = batch if batch > 0 else model.slices_per_call(shape)
        batch = min(batch, model.slice_count(shape))
        rows = slice(0, batch)
    else:
        batch, rows = 1, None
    with torch.inference_mode():
        x = model.unet_input(sources, scales, rows).contiguous()
        guidance = z[0, :batch] if z.shape[2] else None
    runs = {
        "unet_forward": lambda: model.unet(x, guidance),
        "encoder_mdn": lambda: model.sample_representation(sources, seed),
        "synthesis": lambda: model.synthesize(sources, seed),
    }
    report = {"side": "eager", "torch": torch.__version__, "threads": torch.get_num_threads(),
              "size": list(reversed(shape)), "batch": batch, "unet_input_shape": list(x.shape), "repeats": repeats,
              "warmup": warmup, "parallel_info": torch.__config__.parallel_info(), "seconds": {}, "all_seconds": {}}
    outputs = {}
    with torch.inference_mode():
        for name in components:
            report["seconds"][name], report["all_seconds"][name] = median_seconds(runs[name], repeats, warmup)
        outputs["unet_forward"] = model.unet(x, guidance).numpy()
    outputs["encoder_mdn"] = z.numpy()
    outputs["synthesis"] = model.synthesize(sources, seed)[0]
    return report, outputs


# ----------------------------------------------------------------------------------------------------------------
# Command line.


def parse_sources(items):
    sources = {}
    for item in items:
        name, _, path = item.partition("=")
        if not name or not path:
            raise SystemExit("--source '{}': expected NAME=FILE".format(item))
        sources[name] = read_nifti(path)
    return sources


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("synthesize", "time"):
        command = commands.add_parser(name)
        command.add_argument("--model", required=True)
        command.add_argument("--source", action="append", required=True, help="NAME=FILE (NIfTI), once per source")
        command.add_argument("--seed", type=int, default=0)
        command.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    synthesize = commands.choices["synthesize"]
    synthesize.add_argument("--samples", type=int, default=1)
    synthesize.add_argument("--representation", default="sampled", choices=["sampled", "zero"])
    synthesize.add_argument("--output", help="write the synthesis as .npy [Z, Y, X]")
    synthesize.add_argument("--compare", help="an engine output (NIfTI) to compare with: prints max |diff| / range")
    timing = commands.choices["time"]
    timing.add_argument("--repeats", type=int, default=3)
    timing.add_argument("--warmup", type=int, default=1)
    timing.add_argument("--batch", type=int, default=0, help="2D: slices of the C-UNet pass (0: slices per call)")
    timing.add_argument("--components", default="unet_forward,encoder_mdn,synthesis", help="what to time (none: '')")
    timing.add_argument("--engine-outputs", help="bench/cdmComponentTiming's --outputs file: adds max rel diffs")
    timing.add_argument("--json", help="write the report here")
    a = parser.parse_args(argv)

    if a.threads > 0:
        torch.set_num_threads(a.threads)
    model = EagerModel.load(a.model)
    sources = parse_sources(a.source)
    if a.command == "synthesize":
        image, _ = model.synthesize(sources, a.seed, a.samples, representation=a.representation)
        if a.output:
            np.save(a.output, image)
        if a.compare:
            engine = read_nifti(a.compare)
            print(json.dumps({"max_abs_difference": float(np.abs(engine - image).max()),
                              "max_difference_over_range": relative_difference(engine, image)}))
        return 0
    components = [c for c in a.components.split(",") if c]
    report, outputs = time_components(model, sources, a.repeats, a.warmup, a.seed, a.batch, components)
    if a.engine_outputs:
        _, engine = read_safetensors(a.engine_outputs)
        report["max_difference_over_range"] = {
            name: relative_difference(engine[name].numpy(), outputs[name]) for name in outputs if name in engine}
    text = json.dumps(report, indent=1)
    if a.json:
        with open(a.json, "w") as f:
            f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
