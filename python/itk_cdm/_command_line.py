"""The `cdm` console script: runs the C++ command line bundled in this package (itk_cdm/bin/cdm)."""
import importlib.util
import os
import shutil
import sys


def bundled_executable():
    """The path of the bundled `cdm` executable, or None where the package was built without ITK."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bin", "cdm")
    return path if os.access(path, os.X_OK) else None


def find_executable():
    """The `cdm` command line: CDM_EXECUTABLE, else the one bundled in this package, else the first on PATH."""
    found = os.environ.get("CDM_EXECUTABLE") or bundled_executable() or shutil.which("cdm")
    if not found:
        raise RuntimeError("itk_cdm.phantom runs the `cdm` command line (its generator uses ITK's C++ filters), "
                           "which was not found: this itk_cdm was built without ITK; put `cdm` on PATH or set "
                           "CDM_EXECUTABLE (build: see the README)")
    return found


def environment():
    """os.environ for running `cdm`, with the torch package's libraries on the loader's path: the executable's
    RUNPATH ($ORIGIN/../../torch/lib) finds them where torch sits beside itk_cdm, but not from a virtual environment
    that takes torch from the system's site-packages."""
    env = dict(os.environ)
    torch = importlib.util.find_spec("torch")
    if torch is not None and torch.submodule_search_locations:
        library_dir = os.path.join(list(torch.submodule_search_locations)[0], "lib")
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (library_dir, env.get("LD_LIBRARY_PATH")) if p)
    return env


def main():
    executable = bundled_executable()
    if executable is None:
        print("cdm: this itk-cdm package was built without ITK, so it carries no `cdm` command line; use "
              "`python -m itk_cdm` (synthesize, train, info) or build the project with ITK (see the README)",
              file=sys.stderr)
        return 1
    # Replaces this Python process: signals (Ctrl-C -> checkpoint) and the exit status go straight to `cdm`.
    os.execve(executable, [executable] + sys.argv[1:], environment())


if __name__ == "__main__":
    sys.exit(main())
