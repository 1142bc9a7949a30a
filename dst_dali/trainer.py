"""detectron2's DSTTrainer and DSTHook, by the path train/ and users' scripts import them from
(they live in dst_dali.integrations.detectron2.trainer)."""
from .integrations.detectron2.trainer import (  # noqa: F401
                                              DSTHook,
                                              DSTTrainer,
                                              build_controller,
                                              build_dst_loader,
                                              create_ddp_model_on_any_device,
)
