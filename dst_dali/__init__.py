"""Dynamic Scale Training (Stitcher) collages for object detection, as an NVIDIA DALI pipeline.

Importing the package registers the CollageStitch DALI operator (csrc/), once per process; the
operator (`fn.collage_stitch`, `dst_dali.collage_stitch`) needs DALI alone. What a training loop
needs is imported on first use, with torch (and detectron2 for the trainer parts):

    DSTLoader                      the loader (dst_dali.loader): .watch(model), .endless(),
                                   .state_dict() / .load_state_dict() for resume
    FeedbackController, StaticController, ReplayController, calibrate_tau
                                   the policy (dst_dali.controller)
    LossShareProbe, TorchvisionLossShareProbe, TorchvisionDenseProbe, probe_for
                                   the loss split (dst_dali.signals)
    DSTTrainer, DSTHook            detectron2's trainer and hook (dst_dali.trainer)
    add_dst_config, load_config    the DST config section (dst_dali.config)
"""
import importlib

from ._plugin import PluginError, has_gpu_backend, host_cpu_stats, load_plugin

load_plugin()

from .ops import collage_stitch  # noqa: E402  (needs the registered operator)

_ON_FIRST_USE = {
    "DSTLoader": "loader", "FeedbackController": "controller", "StaticController": "controller",
    "ReplayController": "controller", "calibrate_tau": "controller", "LossShareProbe": "signals",
    "TorchvisionLossShareProbe": "signals", "TorchvisionDenseProbe": "signals",
    "probe_for": "signals", "DSTTrainer": "trainer",
    "DSTHook": "trainer", "add_dst_config": "config", "load_config": "config",
}
_NEEDS = {"torch": "torch and torchvision: pip install 'dst_dali[loader]'",
          "torchvision": "torch and torchvision: pip install 'dst_dali[loader]'",
          "detectron2": "detectron2: bash tools/install_detectron2.sh (see the README)",
          "pycocotools": "pycocotools: pip install 'dst_dali[loader]'"}


def __getattr__(name):
    if name not in _ON_FIRST_USE:
        raise AttributeError(f"module 'dst_dali' has no attribute {name!r}")
    try:
        module = importlib.import_module(f".{_ON_FIRST_USE[name]}", __name__)
    except ModuleNotFoundError as e:
        top = (e.name or "").split(".")[0]
        if top not in _NEEDS:
            raise
        raise ImportError(f"dst_dali.{name} needs {_NEEDS[top]}") from e
    return getattr(module, name)


__all__ = ["PluginError", "collage_stitch", "has_gpu_backend", "host_cpu_stats",
           "load_plugin", *_ON_FIRST_USE]
__version__ = "0.1.0"
