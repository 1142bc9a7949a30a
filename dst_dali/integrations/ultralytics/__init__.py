"""DST inside Ultralytics YOLO training. Ultralytics is AGPL-3.0: it is never a requirement of
this package, and importing this module needs it installed. So far: the box loss split by
object size, a loss-share probe that loader.watch(model) finds for a YOLO detection model."""
from ...feedback.signals import register_probe
from .loss import UltralyticsBoxLossProbe, is_ultralytics_model

register_probe(is_ultralytics_model, UltralyticsBoxLossProbe)

__all__ = ["UltralyticsBoxLossProbe", "is_ultralytics_model"]
