"""The paper's main setting as a detectron2 LazyConfig: detectron2's lazy Faster R-CNN R50-FPN
1x, its data from DSTLoader (single-scale 800/1333, collages fed back from the ROI box loss).

    python train/lazy_train_net.py --config-file train/configs/lazy/faster_rcnn_R_50_FPN_1x_dst.py \\
        --num-gpus 8 [KEY=VALUE ...]        # e.g. dataloader.train.controller.tau=0.2

or detectron2's own tools/lazyconfig_train_net.py with the same arguments (its --resume
continues past what was read; lazy_train_net.py resumes the very same batches).
dataloader.train is the train loader either script instantiates; signal and decision say how
it watches the model (DSTLoader.watch). batch_size is per process: 16 images on 8 GPUs.
"""
from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config

from dst_dali import DSTLoader, FeedbackController

model = get_config("common/models/mask_rcnn_fpn.py").model
for key in ("mask_in_features", "mask_pooler", "mask_head"):  # Faster R-CNN: no mask head
    del model.roi_heads[key]
# maskrcnn-benchmark's losses and pooler, as the paper's baseline (see Base-DST-RCNN-FPN.yaml)
model.proposal_generator.smooth_l1_beta = 0.1111
model.roi_heads.box_predictor.smooth_l1_beta = 1.0
model.roi_heads.box_pooler.sampling_ratio = 2
model.roi_heads.box_pooler.pooler_type = "ROIAlign"

dataloader = get_config("common/data/coco.py").dataloader
dataloader.train = L(DSTLoader.from_detectron2)(
    datasets="coco_2017_train", batch_size=2, k=4, min_size=(800,), max_size=1333,
    flip_prob=0.5, output="detectron2", image_format="BGR",
    controller=L(FeedbackController)(tau=0.1), signal="reg", decision="per_rank", seed=0,
    endless=True)
dataloader.test.mapper.image_format = "BGR"  # detectron2's refers to the train mapper's

optimizer = get_config("common/optim.py").SGD
lr_multiplier = get_config("common/coco_schedule.py").lr_multiplier_1x
train = get_config("common/train.py").train
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
train.output_dir = "output/lazy_faster_rcnn_R_50_FPN_1x_dst"
