"""DST inside Ultralytics YOLO training. Ultralytics is AGPL-3.0: it is never a requirement of
this package, and importing this module needs it installed. The box loss split by
object size, a loss-share probe that loader.watch(model) finds for a YOLO detection model, and
DSTDetectionTrainer, Ultralytics' detection trainer on DST batches."""
from ...feedback.signals import register_probe
from .loss import UltralyticsBoxLossProbe, is_ultralytics_model

register_probe(is_ultralytics_model, UltralyticsBoxLossProbe)

from .trainer import DST_DEFAULTS, DSTDetectionTrainer, DSTTrainLoader  # noqa: E402

__all__ = ["DSTDetectionTrainer", "DSTTrainLoader", "DST_DEFAULTS", "UltralyticsBoxLossProbe",
           "is_ultralytics_model"]
