"""The source distribution carries every C++ source and build file that git tracks (issue 14: `pip install` of the
sdist must build the extension and the bundled `cdm`). Building it takes seconds: no compiler runs. The full
sdist -> fresh venv -> manylinux wheel round trip is scripts/python-package.sh (minutes of compiling)."""
import os
import shutil
import subprocess
import sys
import tarfile

import pytest

from conftest import ROOT

BUILD_INPUTS = (".cxx", ".h", ".hxx", ".i", ".wrap", ".cmake", ".in", "CMakeLists.txt", ".py", ".toml", ".sh")


def tracked_build_inputs():
    if not shutil.which("git") or not os.path.isdir(os.path.join(ROOT, ".git")):
        pytest.skip("needs a git checkout to know the tracked files")
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, check=True, capture_output=True, text=True).stdout.split()
    return sorted(path for path in listed if path.endswith(BUILD_INPUTS))


def test_sdist_carries_every_tracked_cpp_source_and_build_file(tmp_path):
    expected = tracked_build_inputs()
    assert any(p.startswith("src/") and p.endswith(".cxx") for p in expected)
    # From a copy of the tracked files (what a clean clone holds): a checkout's own build leftovers, such as an
    # egg-info's file list, must not fill the gaps.
    checkout = tmp_path / "checkout"
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, check=True, capture_output=True, text=True).stdout.split()
    for path in tracked:
        (checkout / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.join(ROOT, path), checkout / path)
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "--dist-dir", str(dist)], cwd=checkout, check=True,
                   capture_output=True)
    archives = list(dist.glob("itk*cdm-*.tar.gz"))
    assert len(archives) == 1, archives
    with tarfile.open(archives[0]) as archive:
        names = archive.getnames()
    prefix = names[0].split("/")[0] + "/"
    inside = {name[len(prefix):] for name in names if name.startswith(prefix)}
    missing = [path for path in expected if path not in inside]
    assert not missing, f"the sdist lacks {len(missing)} tracked build input(s), e.g. {missing[:5]}"
    # Nothing built sneaks in: no build folders, objects or extension modules.
    assert not [n for n in inside if n.startswith(("build/", "build-python/")) or n.endswith((".so", ".o"))]
    assert "examples/models/t1c-small.cdm" in inside  # the bundled model the examples and tests use
