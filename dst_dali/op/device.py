"""Where the pipelines run: the GPU when everything the GPU path needs is there, else the CPU.

The GPU path needs the plugin's CUDA backend, a device DALI sees, a driver that runs the CUDA
runtime the backend was built with (the operator's own floor, csrc/collage_kernel.h), and a
torch that can use the GPU (the loader hands its batches to torch). "auto" checks each before
anything touches CUDA and falls back to the CPU with one log line saying why; "gpu" fails with
that reason.
"""
import logging
from dataclasses import dataclass
from typing import Optional

from nvidia.dali import backend as _dali_backend

from .plugin import cuda_driver, cuda_runtime, driver_floor_error, has_gpu_backend

logger = logging.getLogger("dst_dali.device")  # the name users filter logs by
DEVICES = ("auto", "cpu", "gpu")


@dataclass(frozen=True)
class GpuFacts:
    """What the choice reads off the node (gpu_facts()); tests give their own."""
    backend: bool                 # the plugin has its CUDA backend
    devices: int                  # CUDA devices DALI counts
    driver: int                   # the driver's CUDA version (1000 * major + 10 * minor; 0: none)
    runtime: int                  # the CUDA runtime the backend was built with
    torch_cuda: Optional[str]     # torch.version.cuda: None for a CPU-only torch
    torch_usable: bool            # torch.cuda.is_available()


def gpu_facts() -> GpuFacts:
    backend = has_gpu_backend()
    devices = _dali_backend.GetCUDADeviceCount() if backend else 0
    torch_cuda, torch_usable = None, False
    if devices:  # only then is torch asked (it is what the loader hands batches to)
        try:
            import torch
        except ImportError:
            torch = None
        if torch is not None:
            torch_cuda = torch.version.cuda
            torch_usable = torch_cuda is not None and torch.cuda.is_available()
    return GpuFacts(backend, devices, cuda_driver() if backend else 0,
                    cuda_runtime() if backend else 0, torch_cuda, torch_usable)


def why_not_gpu(facts: GpuFacts) -> Optional[str]:
    """Why the GPU path cannot run on a node with these facts; None when it can."""
    if not facts.backend:
        return "the plugin was built without its CUDA backend"
    if facts.devices == 0:
        return "no CUDA device is visible to DALI"
    floor = driver_floor_error(facts.driver, facts.runtime)
    if floor:
        return floor
    if facts.torch_cuda is None:
        return ("torch here is a CPU-only build (torch.version.cuda is None): install a CUDA "
                "build of torch to take the batches on the GPU")
    if not facts.torch_usable:
        return (f"torch (CUDA {facts.torch_cuda}) cannot use the GPU "
                "(torch.cuda.is_available() is False): its CUDA may need a newer driver")
    return None


def resolve_device(device: str = "auto", facts: Optional[GpuFacts] = None) -> str:
    """'cpu' or 'gpu' for device in DEVICES; a ValueError naming the argument otherwise."""
    if device not in DEVICES:
        raise ValueError(f"device={device!r}: must be one of {DEVICES}")
    if device == "cpu":
        return device
    facts = facts or gpu_facts()
    why = why_not_gpu(facts)
    if device == "gpu" and why:
        raise ValueError(f"device='gpu': {why}")
    if why:
        # a GPU that is there but unusable is worth a warning; no GPU at all is the CPU's case
        level = logging.WARNING if facts.backend and facts.devices else logging.INFO
        logger.log(level, "device='auto': the pipelines run on the CPU, since %s", why)
        return "cpu"
    return "gpu"


def dali_device_id(device: str, local_rank: int = 0):
    """DALI's device_id: None runs a CPU-only pipeline (no CUDA needed at all)."""
    return local_rank if device == "gpu" else None
