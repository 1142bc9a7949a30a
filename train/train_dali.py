"""Train a detector with Dynamic Scale Training, data from DSTLoader (DALI), detectron2-style.

    python train/train_dali.py --config train/configs/demo_coco128_cpu.yaml
    python train/train_dali.py --config train/configs/faster_rcnn_R_50_FPN_1x_dst.yaml \\
        --num-gpus 8 [--num-machines M --machine-rank R --dist-url URL] [--resume] \\
        [--eval-only] [KEY VALUE ...]

Multi-process runs go through detectron2's launch(): NCCL on GPUs, gloo on the CPU. Each
process reads its own share of the data through DALI and decides its next batch kind from its
own loss share (DST.DECISION per_rank) or from the losses summed over processes (global).
"""
import logging
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Datasets that ship with the repository; others are registered the detectron2 way (builtin
# COCO under $DETECTRON2_DATASETS, or register_coco_instances in your own launcher).
BUNDLED = {"coco128": ("data/coco128/instances.json", "data/coco128/images")}
# The first images of a bundled set, for quick evaluation (tests, smoke runs).
SUBSETS = {"coco128_first16": ("coco128", 16), "coco128_first4": ("coco128", 4)}
logger = logging.getLogger("train_dali")


def register_bundled_datasets():
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets import load_coco_json, register_coco_instances
    for name, (json_file, images) in BUNDLED.items():
        if name not in DatasetCatalog.list():
            register_coco_instances(name, {}, os.path.join(ROOT, json_file),
                                    os.path.join(ROOT, images))
    for name, (parent, n) in SUBSETS.items():
        if name not in DatasetCatalog.list():
            json_file, images = (os.path.join(ROOT, p) for p in BUNDLED[parent])
            DatasetCatalog.register(
                name, lambda j=json_file, i=images, n=n, p=parent: load_coco_json(j, i, p)[:n])
            MetadataCatalog.get(name).set(json_file=json_file, image_root=images,
                                          evaluator_type="coco")


def setup(args):
    from detectron2.engine import default_setup
    from detectron2.utils import comm
    from detectron2.utils.logger import setup_logger

    from dst_dali.config import load_config
    cfg = load_config(args.config_file, args.opts)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"  # the same config runs on a GPU node and on a laptop
    cfg.freeze()
    default_setup(cfg, args)
    # dst_dali's own messages (skipped annotations, resume) into the run's stdout and log.txt
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="dst_dali")
    return cfg


def main(args):
    from detectron2.checkpoint import DetectionCheckpointer

    from dst_dali.trainer import DSTTrainer
    register_bundled_datasets()
    cfg = setup(args)
    if args.eval_only:
        model = DSTTrainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume)
        return DSTTrainer.test(cfg, model)
    trainer = DSTTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def parse_args(argv=None):
    from detectron2.engine import default_argument_parser
    parser = default_argument_parser(__doc__)
    # "--config FILE" is what users type; detectron2 spells it --config-file
    argv = ["--config-file" if a == "--config" else a for a in (argv or sys.argv[1:])]
    return parser.parse_args(argv)


if __name__ == "__main__":
    from detectron2.engine import launch
    args = parse_args()
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
