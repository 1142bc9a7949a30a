"""Where the pipelines run: the GPU when DALI sees one and the plugin has its CUDA backend."""
from nvidia.dali import backend as _dali_backend

from .plugin import has_gpu_backend

DEVICES = ("auto", "cpu", "gpu")


def resolve_device(device: str = "auto") -> str:
    """'cpu' or 'gpu' for device in DEVICES; a ValueError naming the argument otherwise."""
    if device not in DEVICES:
        raise ValueError(f"device={device!r}: must be one of {DEVICES}")
    gpu_ready = has_gpu_backend() and _dali_backend.GetCUDADeviceCount() > 0
    if device == "gpu" and not gpu_ready:
        raise ValueError("device='gpu': " + ("no CUDA device is visible to DALI"
                                             if has_gpu_backend() else
                                             "the plugin was built without its CUDA backend"))
    if device == "auto":
        return "gpu" if gpu_ready else "cpu"
    return device


def dali_device_id(device: str, local_rank: int = 0):
    """DALI's device_id: None runs a CPU-only pipeline (no CUDA needed at all)."""
    return local_rank if device == "gpu" else None
