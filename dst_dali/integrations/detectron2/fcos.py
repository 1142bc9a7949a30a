"""detectron2's FCOS (a LazyConfig-only model there) for yaml configs: `MODEL.FCOS` settings,
a ResNet-FPN backbone with P6/P7 from P5, and the meta-architecture registered as "FCOS".

    MODEL:
      META_ARCHITECTURE: "FCOS"
      BACKBONE:
        NAME: "build_fcos_resnet_fpn_backbone"
"""
from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, META_ARCH_REGISTRY, build_backbone
from detectron2.modeling.backbone.fpn import FPN, LastLevelP6P7
from detectron2.modeling.backbone.resnet import build_resnet_backbone
from detectron2.modeling.meta_arch.fcos import FCOS as _FCOS
from detectron2.modeling.meta_arch.fcos import FCOSHead


def add_fcos_config(cfg: CfgNode) -> None:
    """The defaults of detectron2's configs/common/models/fcos.py."""
    cfg.MODEL.FCOS = CfgNode({
        "NUM_CLASSES": 80, "IN_FEATURES": ["p3", "p4", "p5", "p6", "p7"], "NUM_CONVS": 4,
        "NORM": "GN", "PRIOR_PROB": 0.01, "FOCAL_LOSS_ALPHA": 0.25, "FOCAL_LOSS_GAMMA": 2.0,
        "CENTER_SAMPLING_RADIUS": 1.5, "SCORE_THRESH_TEST": 0.2, "TOPK_CANDIDATES_TEST": 1000,
        "NMS_THRESH_TEST": 0.6})


@BACKBONE_REGISTRY.register()
def build_fcos_resnet_fpn_backbone(cfg, input_shape: ShapeSpec):
    """ResNet-FPN with P6 and P7 computed from P5 (FCOS's choice; RetinaNet's come from C5)."""
    bottom_up = build_resnet_backbone(cfg, input_shape)
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    return FPN(bottom_up=bottom_up, in_features=cfg.MODEL.FPN.IN_FEATURES,
               out_channels=out_channels, norm=cfg.MODEL.FPN.NORM,
               top_block=LastLevelP6P7(out_channels, out_channels, in_feature="p5"),
               fuse_type=cfg.MODEL.FPN.FUSE_TYPE)


class FCOS(_FCOS):
    """detectron2's FCOS, built from a yaml config."""

    def __init__(self, cfg):
        backbone = build_backbone(cfg)
        c = cfg.MODEL.FCOS
        shapes = [backbone.output_shape()[f] for f in c.IN_FEATURES]
        head = FCOSHead(input_shape=shapes, conv_dims=[shapes[0].channels] * c.NUM_CONVS,
                        num_classes=c.NUM_CLASSES, norm=c.NORM, prior_prob=c.PRIOR_PROB)
        super().__init__(backbone=backbone, head=head, head_in_features=c.IN_FEATURES,
                         num_classes=c.NUM_CLASSES, center_sampling_radius=c.CENTER_SAMPLING_RADIUS,
                         focal_loss_alpha=c.FOCAL_LOSS_ALPHA, focal_loss_gamma=c.FOCAL_LOSS_GAMMA,
                         test_score_thresh=c.SCORE_THRESH_TEST,
                         test_topk_candidates=c.TOPK_CANDIDATES_TEST,
                         test_nms_thresh=c.NMS_THRESH_TEST,
                         max_detections_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
                         pixel_mean=cfg.MODEL.PIXEL_MEAN, pixel_std=cfg.MODEL.PIXEL_STD)


if "FCOS" not in META_ARCH_REGISTRY:  # a detectron2 that registers its own keeps it
    META_ARCH_REGISTRY.register(FCOS)
