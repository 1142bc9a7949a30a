"""The README demo as a LazyConfig, for detectron2's own tools/lazyconfig_train_net.py as it is:
Faster R-CNN (ResNet-18 FPN with GroupNorm, from scratch, as demo_coco128_cpu.yaml) trained with
DST on the bundled coco128 sample, on the CPU.

    python tools/lazyconfig_train_net.py --config-file train/configs/lazy/demo_coco128_cpu.py \\
        [dataloader.train.batch_size=4] [train.device=cuda] [--num-gpus N] [--resume]

(detectron2's file; the sal-detectron2 package also installs it as the module
`tools.lazyconfig_train_net`.) Loading this file registers coco128 for training and testing.
The loader finds the model by itself (DSTLoader's notes), shards by torch.distributed's rank,
never runs dry (endless=True) and logs dst/* to metrics.json; `--resume` continues past what
the run had read, and train/lazy_train_net.py resumes the very same batches.
"""
import os

from detectron2.config import LazyCall as L
from detectron2.data import (DatasetCatalog, DatasetMapper, build_detection_test_loader,
                             get_detection_dataset_dicts)
from detectron2.data import transforms as T
from detectron2.data.datasets import register_coco_instances
from detectron2.evaluation import COCOEvaluator
from detectron2.layers import ShapeSpec
from detectron2.model_zoo import get_config
from detectron2.modeling.backbone import BasicStem, ResNet
from detectron2.modeling.roi_heads import FastRCNNConvFCHead
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler

from dst_dali import DSTLoader, FeedbackController

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
if "coco128" not in DatasetCatalog.list():
    register_coco_instances("coco128", {}, os.path.join(ROOT, "data/coco128/instances.json"),
                            os.path.join(ROOT, "data/coco128/images"))

# From scratch (no weights can be downloaded): GroupNorm everywhere and no frozen stage.
model = get_config("common/models/mask_rcnn_fpn.py").model
for key in ("mask_in_features", "mask_pooler", "mask_head"):  # Faster R-CNN: no mask head
    del model.roi_heads[key]
model.backbone.bottom_up.stem = L(BasicStem)(in_channels=3, out_channels=64, norm="GN")
model.backbone.bottom_up.stages = L(ResNet.make_default_stages)(depth=18, norm="GN")
model.backbone.bottom_up.freeze_at = 0
model.backbone.norm = "GN"
model.backbone.out_channels = 128
model.proposal_generator.head.in_channels = 128
model.proposal_generator.pre_nms_topk = (1000, 500)
model.proposal_generator.post_nms_topk = (500, 300)
model.roi_heads.num_classes = 80
model.roi_heads.batch_size_per_image = 128
model.roi_heads.box_head = L(FastRCNNConvFCHead)(
    input_shape=ShapeSpec(channels=128, height=7, width=7), conv_dims=[128, 128],
    fc_dims=[256], conv_norm="GN")
model.roi_heads.box_predictor.input_shape = ShapeSpec(channels=256)
model.roi_heads.box_predictor.test_score_thresh = 0.0  # minutes from scratch: keep everything
# maskrcnn-benchmark's losses and pooler, as the paper's baseline (Base-DST-RCNN-FPN.yaml)
model.proposal_generator.smooth_l1_beta = 0.1111
model.roi_heads.box_predictor.smooth_l1_beta = 1.0
model.roi_heads.box_pooler.sampling_ratio = 2
model.roi_heads.box_pooler.pooler_type = "ROIAlign"

dataloader = dict(
    train=L(DSTLoader.from_detectron2)(
        datasets="coco128", batch_size=2, k=4, min_size=(320, 352, 384), max_size=640,
        flip_prob=0.5, output="detectron2", image_format="BGR", device="auto",
        controller=L(FeedbackController)(tau=0.1), signal="reg", decision="per_rank",
        seed=0, endless=True),
    test=L(build_detection_test_loader)(
        dataset=L(get_detection_dataset_dicts)(names="coco128", filter_empty=False),
        mapper=L(DatasetMapper)(is_train=False, image_format="BGR", augmentations=[
            L(T.ResizeShortestEdge)(short_edge_length=384, max_size=640)]),
        num_workers=1),
    evaluator=L(COCOEvaluator)(dataset_name="coco128"),
)

optimizer = get_config("common/optim.py").SGD
optimizer.lr = 0.01
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(values=[1.0, 0.1], milestones=[45, 60]),
    warmup_length=10 / 60, warmup_factor=0.001)

train = get_config("common/train.py").train
train.max_iter = 60
train.device = "cpu"
train.init_checkpoint = ""
train.output_dir = "output/lazy_demo_coco128"
train.checkpointer.period = 30
train.eval_period = 0
train.log_period = 10
