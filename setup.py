"""Builds the `itk-cdm` Python package: the SWIG extension itk_cdm._engine over the core engine (through CMake,
with Ninja and ccache when present), the pure-Python layer in python/itk_cdm and, where CMake finds ITK (Debian's
libinsighttoolkit5-dev, installed by scripts/install-deps.sh), the `cdm` command line as itk_cdm/bin/cdm.

    python -m pip install .                  # or: python -m pip wheel . -w dist
    CDM_PYTHON_BUILD_DIR=DIR                 # where CMake builds (default: build-python/ in the repository)
"""
import glob
import os
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    """Configures and builds the package's targets with the project's CMake (ITK only for the bundled `cdm`)."""

    def build_extension(self, ext):
        import torch  # a build requirement: the LibTorch this build links is the one of this interpreter's torch

        build_dir = os.environ.get("CDM_PYTHON_BUILD_DIR", os.path.join(ROOT, "build-python"))
        configure = [
            "cmake", "-S", ROOT, "-B", build_dir, "-DCMAKE_BUILD_TYPE=Release", "-DCDM_USE_ITK=AUTO",
            "-DBUILD_TESTING=OFF", "-DCDM_BUILD_PYTHON=ON", "-DCDM_CORE_LIBRARY_TYPE=STATIC",
            "-DCMAKE_POSITION_INDEPENDENT_CODE=ON", "-DPython3_EXECUTABLE=" + sys.executable,
            # Every time: a build folder configured by an isolated build would otherwise keep its deleted torch.
            "-DTorch_DIR=" + os.path.join(torch.utils.cmake_prefix_path, "Torch"),
        ]
        if shutil.which("ninja") and not os.path.exists(os.path.join(build_dir, "Makefile")):
            configure += ["-G", "Ninja"]
        if shutil.which("ccache"):
            configure.append("-DCMAKE_CXX_COMPILER_LAUNCHER=ccache")
        subprocess.run(configure, check=True)
        subprocess.run(["cmake", "--build", build_dir, "--target", "cdm_python_package"], check=True)
        staged = os.path.join(build_dir, "python", "itk_cdm")
        built = glob.glob(os.path.join(staged, "_engine*.so"))
        if len(built) != 1:
            raise RuntimeError("itk-cdm: expected one built _engine*.so under " + build_dir + ", found " + str(built))
        target = self.get_ext_fullpath(ext.name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(built[0], target)
        # SWIG's Python half of the extension.
        shutil.copyfile(os.path.join(staged, "engine.py"), os.path.join(os.path.dirname(target), "engine.py"))
        command_line = os.path.join(staged, "bin", "cdm")
        if os.path.exists(command_line):
            os.makedirs(os.path.join(os.path.dirname(target), "bin"), exist_ok=True)
            shutil.copy2(command_line, os.path.join(os.path.dirname(target), "bin", "cdm"))


setup(
    packages=["itk_cdm"],
    package_dir={"": "python"},
    ext_modules=[CMakeExtension("itk_cdm._engine")],
    cmdclass={"build_ext": CMakeBuild},
    zip_safe=False,
)
