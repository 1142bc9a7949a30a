"""DST in Ultralytics YOLO training, by the path users import it from (it lives in
dst_dali.integrations.ultralytics). Ultralytics is AGPL-3.0 and never a requirement of
dst_dali: using this brings its licence terms to your project."""
try:
    import ultralytics  # noqa: F401
except ModuleNotFoundError as e:
    raise ModuleNotFoundError("dst_dali.ultralytics needs Ultralytics: pip install "
                              "'ultralytics==8.4.*' (AGPL-3.0: its terms apply to what uses it)",
                              name=e.name) from e

from .integrations.ultralytics import (  # noqa: E402,F401
    DST_DEFAULTS,
    DSTDetectionTrainer,
    DSTTrainLoader,
    UltralyticsBoxLossProbe,
    is_ultralytics_model,
)
