"""Dynamic Scale Training (Stitcher) collages for object detection, as an NVIDIA DALI pipeline.

Importing the package registers the CollageStitch DALI operator (csrc/), once per process.
"""
from ._plugin import PluginError, has_gpu_backend, host_cpu_stats, load_plugin

load_plugin()

from .controller import FeedbackController  # noqa: E402
from .loader import DSTLoader  # noqa: E402
from .ops import collage_stitch  # noqa: E402  (needs the registered operator)

__all__ = ["DSTLoader", "FeedbackController", "PluginError", "collage_stitch",
           "has_gpu_backend", "host_cpu_stats", "load_plugin"]
__version__ = "0.1.0"
