"""Loads the CollageStitch operator plugin into DALI, once per process.

DALI aborts the whole process when one plugin library is loaded twice, and a plugin only works
with the DALI it was compiled against; both are checked here, before DALI sees the library.
"""
import ctypes
import glob
import os
import re
from typing import Optional

import nvidia.dali as dali
from nvidia.dali import backend as _dali_backend
from nvidia.dali import plugin_manager

OP_NAME = "CollageStitch"
# the library lies in the package's top folder, where setup.py builds it
_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


def _library() -> ctypes.CDLL:
    """The loaded plugin's own functions (dlopen of the path DALI loaded returns the same
    handle: nothing is registered twice)."""
    load_plugin()
    return ctypes.CDLL(plugin_path())


def cuda_runtime() -> int:
    """The CUDA runtime the GPU backend was built with (1000 * major + 10 * minor); 0 without
    a GPU backend."""
    lib = _library()
    return lib.dst_dali_cuda_runtime() if hasattr(lib, "dst_dali_cuda_runtime") else 0


def cuda_driver() -> int:
    """The CUDA version this node's driver supports, as the GPU backend's runtime reads it
    (0: no driver, or no GPU backend to ask)."""
    lib = _library()
    return lib.dst_dali_cuda_driver() if hasattr(lib, "dst_dali_cuda_driver") else 0


def driver_floor_error(driver: int, runtime: int) -> str:
    """Why a driver for CUDA `driver` cannot run the GPU backend built with `runtime` ('' when
    it can): the operator's own rule, which it raises when a GPU pipeline is built."""
    message = ctypes.create_string_buffer(512)
    _library().dst_dali_driver_floor(int(driver), int(runtime), message, len(message))
    return message.value.decode()


def host_cpu_stats(since: Optional[dict] = None) -> dict:
    """Where CollageStitch's CPU went since the plugin was loaded, or since the snapshot
    `since` (an earlier result), per k (1: the regular pipeline's resize, 4: collages):
    {k: {"cpu_s", "batches", "samples"}}, only the k that ran. The CPU is thread CPU time of
    its planning and of every pixel task (CPU backend), summed over threads; on the GPU backend
    only its host part. For benchmarks: bench/throughput.py reads it."""
    lib = _library()
    n = lib.dst_dali_host_cpu_slots()  # one a k, 0..kMaxComponents
    arrays = [(ctypes.c_uint64 * n)() for _ in range(3)]
    lib.dst_dali_host_cpu(*arrays)
    ns, batches, samples = ([int(v) for v in a] for a in arrays)
    now = {k: {"cpu_s": ns[k] / 1e9, "batches": batches[k], "samples": samples[k]}
           for k in range(n) if ns[k] or batches[k]}
    if since is None:
        return now
    zero = {"cpu_s": 0.0, "batches": 0, "samples": 0}
    return {k: {f: v[f] - since.get(k, zero)[f] for f in zero}
            for k, v in now.items() if v != since.get(k)}
