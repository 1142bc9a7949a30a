"""Loads the CollageStitch operator plugin into DALI, once per process.

DALI aborts the whole process when one plugin library is loaded twice, and a plugin only works
with the DALI it was compiled against; both are checked here, before DALI sees the library.
"""
import glob
import os
import re

import nvidia.dali as dali
from nvidia.dali import backend as _dali_backend
from nvidia.dali import plugin_manager

OP_NAME = "CollageStitch"
_HERE = os.path.dirname(os.path.abspath(__file__))
_REBUILD = "rebuild it with `pip install --no-build-isolation -e .` (or `make install`)"


class PluginError(RuntimeError):
    """The CollageStitch plugin is missing or was built for another DALI."""


def plugin_path() -> str:
    libs = sorted(glob.glob(os.path.join(_HERE, "_collage_stitch*.so")))
    if not libs:
        raise PluginError(f"the CollageStitch plugin is not built in {_HERE}; {_REBUILD}")
    return libs[0]


def build_info(path: str) -> dict:
    """What the library was built for, read from its bytes (see csrc/collage_stitch.cc)."""
    with open(path, "rb") as f:
        found = re.search(rb"dst_dali-build-info: dali=([^ ;]+) cuda=([01]);", f.read())
    if not found:
        raise PluginError(f"{path} carries no build information; {_REBUILD}")
    return {"dali_version": found.group(1).decode(), "cuda": found.group(2) == b"1"}


def load_plugin() -> None:
    """Registers CollageStitch with DALI; a no-op when it is registered already."""
    # Asking DALI's registry (not a module global) also covers a reloaded or second copy of
    # this module in the same process.
    if OP_NAME in _dali_backend.RegisteredCPUOps():
        return
    path = plugin_path()
    built_for = build_info(path)["dali_version"]
    if built_for != dali.__version__:
        raise PluginError(f"{path} was built for DALI {built_for}, but DALI {dali.__version__} "
                          f"is installed; {_REBUILD}")
    plugin_manager.load_library(path)


def has_gpu_backend() -> bool:
    """True when the plugin was built with its CUDA backend (nvcc was found at build time)."""
    return OP_NAME in _dali_backend.RegisteredGPUOps()
