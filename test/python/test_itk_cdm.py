"""The itk_cdm package: itk.Image and NumPy faces, equality with `cdm synthesize`, refusals, training, the wheel."""
import glob
import json
import os
import re
import shutil
import subprocess
import sys

import itk
import numpy as np
import pytest

import itk_cdm
from conftest import ROOT, case_files


def read_sources(data_dir, model, index=0):
    files = case_files(data_dir, index)
    return {m: itk.imread(files[m], itk.F) for m in model.sources}


def test_model_header(model_path):
    model = itk_cdm.load_model(model_path, device="cpu")
    assert model.target == "t1c"
    assert model.sources == ("t1n", "t2w", "t2f")
    assert model.dimension == 2 and model.preset == "tiny" and model.kind == "cdm"
    assert model.device == "cpu" and model.parameters > 1000
    assert model.config["target"] == "t1c" and model.config["provenance"]["iterations_per_stage"] == 15


def test_itk_image_round_trip_keeps_metadata(data_dir, model_path):
    model = itk_cdm.load_model(model_path, device="cpu")
    sources = read_sources(data_dir, model)
    # A non-trivial geometry: anisotropic spacing, shifted origin, rotated direction, shared by all sources.
    rotation = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    for image in sources.values():
        image.SetSpacing([0.9, 1.1, 3.0])
        image.SetOrigin([10.0, -20.0, 5.5])
        image.SetDirection(itk.matrix_from_array(rotation))
    result = itk_cdm.synthesize(model, sources, seed=2)
    assert isinstance(result, type(sources["t1n"]))
    assert tuple(result.GetSpacing()) == pytest.approx((0.9, 1.1, 3.0))
    assert tuple(result.GetOrigin()) == pytest.approx((10.0, -20.0, 5.5))
    assert np.allclose(itk.array_from_matrix(result.GetDirection()), rotation)
    values = itk.array_view_from_image(result)
    assert values.shape == itk.array_view_from_image(sources["t1n"]).shape
    assert np.isfinite(values).all() and values.std() > 0


def test_numpy_in_numpy_out_equals_itk_path(data_dir, model_path):
    model = itk_cdm.load_model(model_path, device="cpu")
    sources = read_sources(data_dir, model)
    arrays = {m: itk.array_from_image(image) for m, image in sources.items()}
    from_numpy = itk_cdm.synthesize(model, arrays, seed=5)
    from_itk = itk_cdm.synthesize(model, sources, seed=5)
    assert isinstance(from_numpy, np.ndarray) and from_numpy.dtype == np.float32
    assert from_numpy.shape == arrays["t1n"].shape
    np.testing.assert_array_equal(from_numpy, itk.array_view_from_image(from_itk))
    # Another seed gives another sample; the same seed the same image.
    np.testing.assert_array_equal(from_numpy, itk_cdm.synthesize(model, arrays, seed=5))
    assert not np.array_equal(from_numpy, itk_cdm.synthesize(model, arrays, seed=6))
    # Other dtypes are accepted (converted once).
    as_double = {m: a.astype(np.float64) for m, a in arrays.items()}
    np.testing.assert_array_equal(from_numpy, itk_cdm.synthesize(model, as_double, seed=5))


def test_equals_the_command_line(data_dir, model_path, cdm, tmp_path):
    files = case_files(data_dir, 1)
    output = tmp_path / "cli.nii.gz"
    # One thread on both sides: another thread count sums in another order (differences of 1e-6 relative).
    command = [cdm, "synthesize", "--quiet", "--model", model_path, "--output", str(output), "--seed", "7",
               "--device", "cpu", "--threads", "1"]
    for m in ("t1n", "t2w", "t2f"):
        command += ["--source", "{}={}".format(m, files[m])]
    subprocess.run(command, check=True, capture_output=True)
    itk_cdm.set_number_of_threads(1)
    model = itk_cdm.load_model(model_path, device="cpu")
    python = itk_cdm.synthesize(model, {m: itk.imread(files[m], itk.F) for m in model.sources}, seed=7)
    np.testing.assert_array_equal(itk.array_from_image(itk.imread(str(output), itk.F)),
                                  itk.array_view_from_image(python))


def test_samples_and_uncertainty(data_dir, model_path):
    model = itk_cdm.load_model(model_path, device="cpu")
    arrays = {m: itk.array_from_image(i) for m, i in read_sources(data_dir, model).items()}
    image, spread = itk_cdm.synthesize(model, arrays, samples=3, seed=1, uncertainty=True)
    assert image.shape == spread.shape
    assert (spread >= 0).all() and spread.max() > 0
    with pytest.raises(ValueError, match="samples"):
        itk_cdm.synthesize(model, arrays, samples=1, uncertainty=True)


def test_voxels_per_call_bounds_memory_not_the_result(data_dir, model_path):
    model = itk_cdm.load_model(model_path, device="cpu")
    arrays = {m: itk.array_from_image(i) for m, i in read_sources(data_dir, model).items()}
    whole = itk_cdm.synthesize(model, arrays, seed=3)  # every slice of this small case in one call
    one_slice = arrays["t1n"].shape[1] * arrays["t1n"].shape[2]
    sliced = itk_cdm.synthesize(model, arrays, seed=3, voxels_per_call=one_slice)  # a call per slice
    assert np.abs(whole - sliced).max() <= 1e-5 * (whole.max() - whole.min())
    with pytest.raises(ValueError, match="voxels_per_call"):
        itk_cdm.synthesize(model, arrays, voxels_per_call=-1)


def test_reduced_precision_is_close_to_float32(data_dir, model_path):
    model = itk_cdm.load_model(model_path, device="cpu")
    arrays = {m: itk.array_from_image(i) for m, i in read_sources(data_dir, model).items()}
    full = itk_cdm.synthesize(model, arrays, seed=2)
    reduced = itk_cdm.synthesize(model, arrays, seed=2, precision="bf16")
    difference = np.abs(full - reduced).max() / (full.max() - full.min())
    assert 0 < difference <= 5e-2  # the tolerance stated in test/cdmNetworksGTest.cxx
    with pytest.raises(ValueError, match="fp8"):
        itk_cdm.synthesize(model, arrays, precision="fp8")


def test_encoder_and_sampler_faces(data_dir, model_path):
    model = itk_cdm.load_model(model_path, device="cpu")
    sources = read_sources(data_dir, model)
    z = itk_cdm.encode(model, itk.imread(case_files(data_dir)["t1c"], itk.F))
    assert z.samples == 1 and z.values.shape == (1, z.cells, z.dim) and np.isfinite(z.values).all()
    z_hat = itk_cdm.sample_representation(model, sources, samples=4, seed=3)
    assert z_hat.values.shape == (4, z.cells, z.dim)
    assert set(z_hat.source_scales) == {"t1n", "t2w", "t2f"}
    np.testing.assert_array_equal(z_hat.values, itk_cdm.sample_representation(model, sources, samples=4, seed=3).values)


def test_refusals_name_the_problem(data_dir, model_path, tmp_path):
    model = itk_cdm.load_model(model_path, device="cpu")
    arrays = {m: itk.array_from_image(i) for m, i in read_sources(data_dir, model).items()}
    with pytest.raises(ValueError, match="t2w"):
        itk_cdm.synthesize(model, {m: a for m, a in arrays.items() if m != "t2w"})
    with pytest.raises(ValueError, match="pd"):
        itk_cdm.synthesize(model, dict(arrays, pd=arrays["t1n"]))
    with pytest.raises(ValueError):
        itk_cdm.synthesize(model, dict(arrays, t2f=arrays["t2f"][:, :-1, :]))
    with pytest.raises(ValueError, match="finite|NaN|non-finite"):
        bad = arrays["t1n"].copy()
        bad[0, 0, 0] = np.nan
        itk_cdm.synthesize(model, dict(arrays, t1n=bad))
    with pytest.raises(ValueError, match="mapping"):
        itk_cdm.synthesize(model, [arrays["t1n"]])
    truncated = tmp_path / "truncated.cdm"
    truncated.write_bytes(open(model_path, "rb").read()[:1000])
    with pytest.raises(RuntimeError, match="truncated.cdm"):
        itk_cdm.load_model(str(truncated))
    with pytest.raises(RuntimeError, match="missing.cdm"):
        itk_cdm.load_model(str(tmp_path / "missing.cdm"))
    with pytest.raises(ValueError):
        itk_cdm.load_model(model_path, device="tpu")
    # A failed training run leaves no model file behind.
    out = tmp_path / "never.cdm"
    with pytest.raises(ValueError, match="no usable case"):
        itk_cdm.train(str(tmp_path), "t1c", str(out), preset="tiny", iterations=2, progress=False)
    assert not out.exists()


def test_train_reports_progress_and_resumes(data_dir, tmp_path):
    lines = []
    out = tmp_path / "m.cdm"
    report = itk_cdm.train(str(data_dir), "t2f", str(out), preset="tiny", iterations=4,
                           stage_iterations={"cunet": 6}, validation_interval=4, seed=2, device="cpu",
                           progress=False, callback=lines.append)
    assert out.exists() and os.path.exists(str(out) + ".ckpt")
    assert [s["stage"] for s in report["stages"]] == ["mrm", "cunet", "mdn", "finetune"]
    assert [s["last_iteration"] for s in report["stages"]] == [4, 6, 4, 4]
    assert len(lines) == 18 and lines[-1]["stage"] == "finetune" and lines[-1]["validation_psnr"] is not None
    assert itk_cdm.load_model(str(out)).target == "t2f"
    # Resuming a finished run trains nothing more.
    again = itk_cdm.train(str(data_dir), "t2f", str(out), preset="tiny", iterations=4, stage_iterations={"cunet": 6},
                          seed=2, device="cpu", resume=True, progress=False)
    assert again["stages"] == [] and not again["interrupted"]


def test_the_callers_torch_random_state_and_threads_are_left_alone(data_dir, model_path, tmp_path):
    # The engine draws from generators of its own (weights, noise, training iterations) and never touches torch's
    # default ones: a session that seeded torch draws the same numbers after using itk_cdm as without it.
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.manual_seed(1234)
    torch.rand(3)
    expected = torch.rand(5)
    torch.manual_seed(1234)
    torch.rand(3)
    model = itk_cdm.load_model(model_path, device="cpu")
    itk_cdm.synthesize(model, read_sources(data_dir, model), seed=1)
    itk_cdm.train(str(data_dir), "t1c", str(tmp_path / "m.cdm"), preset="tiny", iterations=2, seed=3, device="cpu",
                  progress=False)
    assert torch.equal(torch.rand(5), expected)
    assert torch.get_num_threads() == threads


def test_results_do_not_depend_on_the_callers_torch_random_state(data_dir, tmp_path):
    # The converse: what the engine draws is fixed by its own seed alone, whatever the caller's torch state.
    torch = pytest.importorskip("torch")
    images = []
    for caller_seed in (1, 2):
        torch.manual_seed(caller_seed)
        out = tmp_path / f"m{caller_seed}.cdm"
        itk_cdm.train(str(data_dir), "t1c", str(out), preset="tiny", iterations=2, seed=3, device="cpu",
                      progress=False)
        model = itk_cdm.load_model(str(out), device="cpu")
        images.append(itk.array_from_image(itk_cdm.synthesize(model, read_sources(data_dir, model), seed=1)))
    np.testing.assert_array_equal(images[0], images[1])


def test_train_skips_an_unreadable_case_naming_it(data_dir, tmp_path):
    copy = tmp_path / "cases"
    shutil.copytree(str(data_dir), str(copy))
    broken = copy / "PHANTOM-00001" / "PHANTOM-00001-t2w.nii.gz"
    broken.write_bytes(b"not a NIfTI file")
    out = tmp_path / "m.cdm"
    report = itk_cdm.train(str(copy), "t1c", str(out), preset="tiny", iterations=2, validation_interval=2, seed=2,
                           device="cpu", progress=False)
    assert len(report["skipped"]) == 1, report["skipped"]
    assert report["skipped"][0].startswith("PHANTOM-00001: ") and "PHANTOM-00001-t2w.nii.gz" in report["skipped"][0]
    assert out.exists()
    # Every case unreadable: nothing to train on, and the refusal says so.
    for case in copy.iterdir():
        (case / (case.name + "-t1n.nii.gz")).write_bytes(b"")
    with pytest.raises(ValueError, match="no usable case"):
        itk_cdm.train(str(copy), "t1c", str(tmp_path / "never.cdm"), preset="tiny", iterations=2, progress=False)


def test_impute_fills_the_gaps_of_a_folder_and_resumes(data_dir, model_path, tmp_path):
    copy = tmp_path / "cases"
    shutil.copytree(str(data_dir), str(copy))
    for index in (0, 2):
        os.remove(case_files(copy, index)["t1c"])
    os.remove(case_files(copy, 3)["t1c"])  # case 3 also lacks a source of the model: it cannot be imputed
    os.remove(case_files(copy, 3)["t2w"])
    with pytest.warns(UserWarning, match="PHANTOM-00003"):
        planned = itk_cdm.impute(copy, [model_path], dry_run=True, device="cpu")
    assert [row["case"] for row in planned] == ["PHANTOM-00000", "PHANTOM-00002"]
    assert not os.path.exists(case_files(copy, 0)["t1c"])
    with pytest.warns(UserWarning, match="PHANTOM-00003 was not imputed: no model"):
        rows = itk_cdm.impute(copy, model_path, seed=3, device="cpu", threads=1)
    assert [(row["case"], row["modality"], row["seed"]) for row in rows] == [("PHANTOM-00000", "t1c", 3),
                                                                           ("PHANTOM-00002", "t1c", 3)]
    assert os.path.exists(case_files(copy, 0)["t1c"]) and os.path.exists(case_files(copy, 2)["t1c"])
    with open(copy / "impute-manifest.jsonl") as manifest:
        assert [json.loads(line)["file"] for line in manifest] == [row["file"] for row in rows]
    with pytest.warns(UserWarning):
        assert itk_cdm.impute(copy, model_path, seed=3, device="cpu") == []  # a rerun writes nothing
    with pytest.raises(ValueError, match="--shard"):
        itk_cdm.impute(copy, model_path, shard=(2, 2))


def test_one_unified_model_synthesizes_any_target(data_dir, tmp_path):
    out = tmp_path / "unified.cdm"
    itk_cdm.train(str(data_dir), "any", str(out), preset="tiny", iterations=3, validation_interval=3, seed=4,
                  device="cpu", progress=False)
    model = itk_cdm.load_model(str(out), device="cpu")
    assert model.targets == ("t1n", "t1c", "t2w", "t2f") and model.config["format_version"] == 2
    files = case_files(data_dir, 1)
    sources = {m: itk.imread(files[m], itk.F) for m in ("t1n", "t2w")}
    t1c = itk.array_from_image(itk_cdm.synthesize(model, sources, seed=1, target="t1c"))
    t2f = itk.array_from_image(itk_cdm.synthesize(model, sources, seed=1, target="t2f"))
    assert t1c.shape == t2f.shape and not np.array_equal(t1c, t2f)
    with pytest.raises(ValueError, match="name the target"):
        itk_cdm.synthesize(model, sources)  # two gaps: which one?
    with pytest.raises(ValueError, match="also given as a source"):
        itk_cdm.synthesize(model, sources, target="t2w")
    three = dict(sources, t2f=itk.imread(files["t2f"], itk.F))
    assert itk_cdm.sample_representation(model, three).values.shape[0] == 1  # the one gap, t1c, by itself


def test_the_ixi_set_trains_a_pd_model_from_t1_and_t2(cdm, tmp_path):
    assert "pd" in itk_cdm.known_modalities()
    cases = itk_cdm.phantom(tmp_path / "ixi", 3, seed=2, anatomy="procedural", size=(32, 32, 8), spacing=5.0,
                            contrasts=["t1n", "t2w", "pd"])
    assert sorted(os.listdir(cases[0])) == sorted("PHANTOM-00000-{}.nii.gz".format(m)
                                                  for m in ("pd", "seg", "t1n", "t2w"))
    out = tmp_path / "pd.cdm"
    itk_cdm.train(str(tmp_path / "ixi"), "pd", str(out), preset="tiny", iterations=2, validation_interval=2,
                  device="cpu", progress=False)
    model = itk_cdm.load_model(str(out), device="cpu")
    assert model.target == "pd" and model.sources == ("t1n", "t2w")


def test_segmenter_trains_and_labels_like_the_command_line(data_dir, model_path, cdm, tmp_path):
    out = tmp_path / "seg.cdm"
    dice = []
    report = itk_cdm.train(str(data_dir), "seg", str(out), model_kind="segmenter", preset="tiny", iterations=4,
                           validation_interval=4, seed=5, device="cpu", progress=False,
                           callback=lambda line: dice.append(line["validation_dice"]))
    assert report["stages"][0]["stage"] == "segment" and "whole_tumour" in report["stages"][0]["validation_dice"]
    assert dice[-1] is not None and set(dice[-1]) == {"enhancing_tumour", "tumour_core", "whole_tumour"}
    model = itk_cdm.load_model(str(out), device="cpu")
    assert model.kind == "segmenter"
    files = case_files(data_dir, 2)
    sources = {m: itk.imread(files[m], itk.F) for m in ("t1n", "t1c", "t2w", "t2f")}
    labels = itk_cdm.segment(model, sources)
    assert isinstance(labels, itk.Image) and labels.GetSpacing() == sources["t1n"].GetSpacing()
    array = itk.array_from_image(labels)
    assert array.dtype == np.uint8 and set(np.unique(array)) <= {0, 1, 2, 3}
    written = tmp_path / "seg.nii.gz"
    subprocess.run([cdm, "segment", "--quiet", "--model", str(out), "--output", str(written)]
                   + ["--source={}={}".format(m, files[m]) for m in sources], check=True, capture_output=True)
    assert np.array_equal(itk.array_from_image(itk.imread(str(written))), array)
    with pytest.raises(ValueError, match="expected a segmenter"):
        itk_cdm.segment(itk_cdm.load_model(model_path, device="cpu"), sources)
    with pytest.raises(ValueError, match="'t1c' is missing"):
        itk_cdm.segment(model, {m: sources[m] for m in ("t1n", "t2w", "t2f")})
    assert itk_cdm.segment(model, {m: sources[m] for m in ("t1n", "t2w", "t2f")}, missing_as_zero=True).GetSpacing() \
        == sources["t1n"].GetSpacing()


def test_torchrun_launches_two_ranks_from_python_and_the_command_line(data_dir, cdm, tmp_path):
    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun (the torch wheel's launcher) is not on PATH")
    script = tmp_path / "train.py"
    # Each rank writes its report to a file of its own (the ranks share torchrun's stdout, where lines interleave).
    script.write_text("import itk_cdm, json, sys\n"
                      "report = itk_cdm.train(sys.argv[1], 't1c', sys.argv[2], model_kind='unet', preset='tiny', "
                      "iterations=2, validation_interval=2, batch_size=4, device='cpu', progress=False)\n"
                      "json.dump(report, open(sys.argv[2] + '.rank{}.json'.format(report['rank']), 'w'))\n")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    port = str(21000 + os.getpid() % 20000)
    done = subprocess.run([torchrun, "--nproc-per-node", "2", "--master-port", port, str(script), str(data_dir),
                           str(tmp_path / "python.cdm")], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    for rank in (0, 1):
        report = json.load(open(str(tmp_path / "python.cdm") + ".rank{}.json".format(rank)))
        assert report["rank"] == rank and report["world_size"] == 2
    model = itk_cdm.load_model(str(tmp_path / "python.cdm"), device="cpu")
    assert model.config["provenance"]["world_size"] == 2
    # The command line as is: torchrun --no-python runs the executable once per rank.
    done = subprocess.run([torchrun, "--no-python", "--nproc-per-node", "2", "--master-port", str(int(port) + 1), cdm,
                           "train", "--data", str(data_dir), "--target", "t1c", "--model-kind", "unet", "--preset",
                           "tiny", "--iterations", "2", "--batch-size", "4", "--threads", "1", "--device", "cpu",
                           "--out", str(tmp_path / "cli.cdm")], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "2 ranks" in done.stdout
    assert itk_cdm.load_model(str(tmp_path / "cli.cdm"), device="cpu").config["provenance"]["world_size"] == 2


def test_module_command_line(data_dir, model_path, tmp_path):
    files = case_files(data_dir, 2)
    output = tmp_path / "out.nii.gz"
    command = [sys.executable, "-m", "itk_cdm", "synthesize", "--model", model_path, "--output", str(output),
               "--device", "cpu", "--quiet"]
    for m in ("t1n", "t2w", "t2f"):
        command += ["--source", "{}={}".format(m, files[m])]
    subprocess.run(command, check=True)
    assert itk.imread(str(output)).GetLargestPossibleRegion().GetSize()[0] == 48
    info = subprocess.run([sys.executable, "-m", "itk_cdm", "info", model_path], capture_output=True, text=True,
                          check=True).stdout
    assert "t1n,t2w,t2f -> t1c" in info
    refused = subprocess.run(command[:-6] + ["--source", "t1n=" + files["t1n"]], capture_output=True, text=True)
    assert refused.returncode == 1 and "t2w" in refused.stderr
    absent = str(tmp_path / "no-such-folder" / "out.nii.gz")
    unwritable = subprocess.run([absent if part == str(output) else part for part in command], capture_output=True,
                                text=True)
    assert unwritable.returncode == 1 and "--output" in unwritable.stderr and "does not exist" in unwritable.stderr
    untrained = subprocess.run([sys.executable, "-m", "itk_cdm", "train", "--data", str(data_dir), "--target", "t1c",
                                "--out", absent], capture_output=True, text=True)
    assert untrained.returncode == 1 and "--out" in untrained.stderr and "does not exist" in untrained.stderr
    with pytest.raises(ValueError, match="does not exist"):  # the engine's check, before any iteration
        itk_cdm.train(str(data_dir), "t1c", absent, preset="tiny", iterations=1000, progress=False)
    phantom = subprocess.run([sys.executable, "-m", "itk_cdm", "phantom", "--out", str(tmp_path / "p"), "--cases", "1",
                              "--anatomy", "procedural", "--size", "32,32,8", "--spacing", "4"], capture_output=True)
    assert phantom.returncode == 0 and (tmp_path / "p" / "PHANTOM-00000" / "PHANTOM-00000-t1c.nii.gz").exists()


def test_readme_python_example_runs_as_written(data_dir, tmp_path, cdm):
    readme = open(os.path.join(ROOT, "README.md")).read()
    example = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    assert len(example.strip().splitlines()) <= 6
    # The files the example names, in a scratch folder: the bundled model and one phantom case.
    os.makedirs(tmp_path / "examples" / "models")
    os.symlink(os.path.join(ROOT, "examples", "models", "t1c-small.cdm"), tmp_path / "examples" / "models" / "t1c-small.cdm")
    subprocess.run([cdm, "phantom", "--out", str(tmp_path / "demo-output"), "--cases", "1", "--prefix", "DEMO",
                    "--anatomy", "procedural", "--size", "64,64,8", "--spacing", "3"], check=True, capture_output=True)
    subprocess.run([sys.executable, "-c", example], cwd=str(tmp_path), check=True)
    written = [p for p in glob.glob(str(tmp_path / "demo-output" / "*.nii.gz"))]
    assert any("python" in os.path.basename(p) for p in written), written


def test_wheel_installs_into_a_fresh_virtual_environment(tmp_path, data_dir, model_path):
    wheels = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q", ROOT, "-w",
                    str(wheels)], check=True)
    wheel = glob.glob(str(wheels / "itk_cdm-*.whl"))
    assert len(wheel) == 1
    venv = tmp_path / "venv"
    # The venv sees the machine's torch, numpy and itk (gigabytes; the wheel pins the same torch) but not itk_cdm.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--ignore-installed", wheel[0]],
                   check=True)
    script = ("import itk, itk_cdm, sys; m = itk_cdm.load_model(sys.argv[1], device='cpu'); "
              "s = {k: itk.imread(sys.argv[2].format(k), itk.F) for k in m.sources}; "
              "print(itk_cdm.__file__); print(itk.array_view_from_image(itk_cdm.synthesize(m, s, seed=0)).shape)")
    pattern = case_files(data_dir)["t1n"].replace("-t1n.", "-{}.")
    # No CDM_EXECUTABLE and no build folder on PATH: what the package needs, it carries.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LD_LIBRARY_PATH", "CDM_EXECUTABLE")}
    env["PATH"] = os.pathsep.join([str(venv / "bin"), "/usr/bin", "/bin"])
    done = subprocess.run([python, "-c", script, model_path, pattern], cwd=str(tmp_path), capture_output=True,
                          text=True, env=env, check=True)
    assert str(venv) in done.stdout.splitlines()[0]
    assert done.stdout.splitlines()[1] == "(8, 40, 48)"
    # Built here with ITK (scripts/install-deps.sh installs it), the wheel carries the `cdm` command line: the console
    # script runs it, and itk_cdm.phantom writes cases through it.
    version = subprocess.run([str(venv / "bin" / "cdm"), "--version"], capture_output=True, text=True, env=env)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == "itk-cdm " + itk_cdm.__version__
    script = ("import itk_cdm, sys; print(itk_cdm.phantom(sys.argv[1], 1, seed=5, anatomy='procedural', "
              "size=(24, 24, 8), spacing=4.0)[0])")
    done = subprocess.run([python, "-c", script, str(tmp_path / "phantom")], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    written = done.stdout.strip()
    assert sorted(os.listdir(written)) == sorted("PHANTOM-00000-{}.nii.gz".format(m)
                                                 for m in ("seg", "t1c", "t1n", "t2f", "t2w"))
    print("wheel size: {:.1f} MB".format(os.path.getsize(wheel[0]) / 1e6))
