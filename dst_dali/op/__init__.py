"""The operator: the CollageStitch plugin loaded into DALI (plugin), its Python face with named
inputs (collage), and where the pipelines run (device). Needs DALI alone."""
from .collage import CollageOutputs, check_k, collage_stitch
from .device import DEVICES, dali_device_id, resolve_device
from .plugin import PluginError, has_gpu_backend, host_cpu_stats, load_plugin

__all__ = ["CollageOutputs", "DEVICES", "PluginError", "check_k", "collage_stitch",
           "dali_device_id", "has_gpu_backend", "host_cpu_stats", "load_plugin",
           "resolve_device"]
