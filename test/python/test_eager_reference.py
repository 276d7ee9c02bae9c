"""bench/cdm_eager.py, a PyTorch-eager reimplementation of the networks and the inference, against the engine: the
same model file, sources and seed must give the same synthesis. An independent check of the engine's arithmetic
(layout, padding, normalisation, seeded MDN noise, DDIM steps, C-UNet), and of the reference bench/eager.sh times."""
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, case_files

torch = pytest.importorskip("torch")
sys.path.insert(0, os.path.join(ROOT, "bench"))
import cdm_eager  # noqa: E402

MODEL = os.path.join(ROOT, "examples", "models", "t1c-small.cdm")
# float32 sums in other orders (in-place vs out-of-place steps, rsqrt vs 1 / sqrt): measured 3e-7 of the range.
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def eager_model():
    torch.set_num_threads(1)  # as the engine below: another thread count sums in another order
    return cdm_eager.EagerModel.load(MODEL)


def engine_synthesis(cdm, files, output, *options):
    command = [cdm, "synthesize", "--quiet", "--model", MODEL, "--output", str(output), "--device", "cpu",
               "--threads", "1", *options]
    for m in ("t1n", "t2w", "t2f"):
        command += ["--source", "{}={}".format(m, files[m])]
    subprocess.run(command, check=True, capture_output=True)
    return cdm_eager.read_nifti(str(output))


@pytest.fixture(scope="module")
def odd_case(tmp_path_factory, cdm):
    """One small phantom case whose in-plane sizes are multiples of neither the C-UNet's alignment (4) nor the
    encoders' (8), so that both sides pad and crop."""
    folder = tmp_path_factory.mktemp("odd-phantom")
    subprocess.run([cdm, "phantom", "--out", str(folder), "--cases", "1", "--seed", "5", "--anatomy", "procedural",
                    "--size", "45,38,9", "--spacing", "4"], check=True, capture_output=True)
    return case_files(folder, 0)


def test_eager_synthesis_equals_the_command_line(odd_case, cdm, tmp_path, eager_model):
    sources = {m: cdm_eager.read_nifti(odd_case[m]) for m in eager_model.config["sources"]}
    engine = {r: engine_synthesis(cdm, odd_case, tmp_path / (r + ".nii.gz"), "--seed", "7", "--representation", r)
              for r in ("sampled", "zero")}
    for representation, image in engine.items():
        eager, _ = eager_model.synthesize(sources, seed=7, representation=representation)
        assert eager.shape == image.shape == sources["t1n"].shape
        assert image.std() > 0
        assert cdm_eager.relative_difference(image, eager) <= TOLERANCE, representation
    # The comparison resolves what z does (measured: another seed's draw moves the image by 2.6e-3 of its range, no z
    # by 8e-2), so the sampled case checks the source encoder, the seeded noise and the DDIM steps too.
    another_draw, _ = eager_model.synthesize(sources, seed=8)
    assert cdm_eager.relative_difference(engine["sampled"], another_draw) > 10 * TOLERANCE
    assert cdm_eager.relative_difference(engine["sampled"], engine["zero"]) > 10 * TOLERANCE


def run_component_timing(cdm, model, case, seed, outputs, sources):
    """bench/cdmComponentTiming's outputs (nothing timed) as {component: tensor}; skips where it is not built."""
    program = os.environ.get("CDM_COMPONENT_TIMING") or os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(cdm))), "bench", "cdmComponentTiming")
    if not os.path.exists(program):
        pytest.skip("bench/cdmComponentTiming is not built beside `cdm` (set CDM_COMPONENT_TIMING)")
    command = [program, "--model", model, "--threads", "1", "--seed", str(seed), "--components", "", "--outputs",
               str(outputs)]
    for m in sources:
        command += ["--source", "{}={}".format(m, case[m])]
    subprocess.run(command, check=True, capture_output=True)
    return cdm_eager.read_safetensors(str(outputs))[1]


def test_eager_components_equal_the_engine(odd_case, cdm, tmp_path, eager_model):
    """Component by component (C-UNet pass, z from the source encoder + MDN, whole synthesis), as bench/eager.sh
    compares them."""
    names = eager_model.config["sources"]
    engine = run_component_timing(cdm, MODEL, odd_case, 4, tmp_path / "engine.safetensors", names)
    sources = {m: cdm_eager.read_nifti(odd_case[m]) for m in names}
    _, eager = cdm_eager.time_components(eager_model, sources, seed=4, components=[])
    assert eager["unet_forward"].shape == (9, 1, 40, 48)  # all 9 slices in one call, padded to the alignment 4
    assert eager["encoder_mdn"].shape == (1, 9, 128)
    for component in ("unet_forward", "encoder_mdn", "synthesis"):
        assert cdm_eager.relative_difference(engine[component].numpy(), eager[component]) <= TOLERANCE, component
    assert not np.allclose(eager["encoder_mdn"][0, 0], eager["encoder_mdn"][0, 1])  # a z per slice


def test_eager_3d_components_equal_the_engine(tmp_path, cdm):
    """The 3D path (Conv3d, the volume's one z, padding on three axes) with a tiny 3D model trained for one step."""
    data = tmp_path / "data"
    subprocess.run([cdm, "phantom", "--out", str(data), "--cases", "2", "--seed", "6", "--anatomy", "procedural",
                    "--size", "26,21,19", "--spacing", "6"], check=True, capture_output=True)
    model_path = str(tmp_path / "tiny-3d.cdm")
    subprocess.run([cdm, "train", "--model-kind", "cdm", "--dim", "3", "--preset", "tiny", "--data", str(data),
                    "--target", "t1c", "--sources", "t1n,t2w,t2f", "--iterations", "1", "--validation-interval", "1",
                    "--seed", "1", "--threads", "1", "--out", model_path], check=True, capture_output=True)
    case = case_files(data, 0)
    model = cdm_eager.EagerModel.load(model_path)
    engine = run_component_timing(cdm, model_path, case, 2, tmp_path / "engine.safetensors", model.config["sources"])
    sources = {m: cdm_eager.read_nifti(case[m]) for m in model.config["sources"]}
    _, eager = cdm_eager.time_components(model, sources, seed=2, components=[])
    assert eager["unet_forward"].shape == (1, 1, 20, 22, 26)  # z and y padded to the alignment 2
    assert eager["encoder_mdn"].shape == (1, 1, 32)
    for component in ("unet_forward", "encoder_mdn", "synthesis"):
        assert cdm_eager.relative_difference(engine[component].numpy(), eager[component]) <= TOLERANCE, component
