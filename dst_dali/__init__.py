"""Dynamic Scale Training (Stitcher) collages for object detection, as an NVIDIA DALI pipeline.

Importing the package registers the CollageStitch DALI operator (csrc/), once per process; the
operator (`fn.collage_stitch`, `dst_dali.collage_stitch`) needs DALI alone. What a training loop
needs is imported on first use, with torch (and detectron2 for the trainer parts):

    DSTLoader                      the loader (dst_dali.loader): .watch(model), .endless(),
                                   .state_dict() / .load_state_dict() for resume
    FeedbackController, StaticController, ReplayController, calibrate_tau
                                   the policy (dst_dali.feedback.controller)
    LossShareProbe, TorchvisionLossShareProbe, TorchvisionDenseProbe, probe_for
                                   the loss split (dst_dali.feedback.signals)
    DSTTrainer, DSTHook            detectron2's trainer and hook (dst_dali.integrations.detectron2)
    add_dst_config, load_config    the DST config section (dst_dali.integrations.detectron2)

The rooms, in the data's order (docs/design.md): dst_dali.op (the operator), dst_dali.data (the
dataset index), dst_dali.stream (batches of one kind), dst_dali.loader with dst_dali.feedback
beside it, dst_dali.integrations. Names not listed here are internal and may change.
"""
import importlib

from .op.plugin import PluginError, has_gpu_backend, host_cpu_stats, load_plugin

load_plugin()

from .op.collage import collage_stitch  # noqa: E402  (needs the registered operator)

_CONTROLLER, _SIGNALS = "feedback.controller", "feedback.signals"
_DETECTRON2 = "integrations.detectron2"
_ON_FIRST_USE = {
    "DSTLoader": "loader", "FeedbackController": _CONTROLLER, "StaticController": _CONTROLLER,
    "ReplayController": _CONTROLLER, "calibrate_tau": _CONTROLLER, "LossShareProbe": _SIGNALS,
    "TorchvisionLossShareProbe": _SIGNALS, "TorchvisionDenseProbe": _SIGNALS,
    "probe_for": _SIGNALS, "DSTTrainer": _DETECTRON2, "DSTHook": _DETECTRON2,
    "add_dst_config": _DETECTRON2, "load_config": _DETECTRON2,
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
