"""DST in detectron2: DSTTrainer (DefaultTrainer with DSTLoader) and DSTHook (trainer), the DST:
config section and its check (config), FCOS for yaml configs (fcos)."""
from .config import add_dst_config, load_config
from .trainer import DSTHook, DSTTrainer

__all__ = ["DSTHook", "DSTTrainer", "add_dst_config", "load_config"]
