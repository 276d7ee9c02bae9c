"""Shared fixtures: phantom cases written by `cdm phantom` and a tiny model trained through itk_cdm.train."""
import os
import shutil
import subprocess

import pytest

# One torch thread per process: the tests start subprocesses, and on 2 cores two spinning OpenMP teams slow each
# other down many times over (the C++ tests do the same through ctest's ENVIRONMENT).
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cdm_executable():
    found = os.environ.get("CDM_EXECUTABLE") or shutil.which("cdm")
    if not found:
        for build in ("build", os.environ.get("CDM_BUILD_DIR", "build")):
            candidate = os.path.join(ROOT, build, "apps", "cdm")
            if os.path.exists(candidate):
                return candidate
        pytest.skip("the `cdm` executable is needed to write phantom cases (set CDM_EXECUTABLE)")
    return found


@pytest.fixture(scope="session")
def cdm():
    os.environ["CDM_EXECUTABLE"] = cdm_executable()
    return os.environ["CDM_EXECUTABLE"]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory, cdm):
    folder = tmp_path_factory.mktemp("phantom")
    subprocess.run([cdm, "phantom", "--out", str(folder), "--cases", "4", "--seed", "3", "--anatomy", "procedural",
                    "--size", "48,40,8", "--spacing", "4"], check=True, capture_output=True)
    return folder


@pytest.fixture(scope="session")
def model_path(tmp_path_factory, data_dir):
    import itk_cdm

    out = tmp_path_factory.mktemp("model") / "t1c-tiny.cdm"
    itk_cdm.train(str(data_dir), "t1c", str(out), preset="tiny", iterations=15, validation_interval=15, seed=1,
                  device="cpu", progress=False)
    return str(out)


def case_files(data_dir, index=0):
    name = "PHANTOM-{:05d}".format(index)
    return {m: str(data_dir / name / "{}-{}.nii.gz".format(name, m)) for m in ("t1n", "t1c", "t2w", "t2f")}
