"""Train a detectron2 LazyConfig with Dynamic Scale Training: detectron2's
tools/lazyconfig_train_net.py loop, with the config's dataloader.train a DSTLoader that watches
the model and DSTHook first in the hooks list, which keeps the loader's state beside each
checkpoint: --resume continues with the very same batches. (detectron2's own script runs the
same configs; its --resume continues past what the run had read.)

    python train/lazy_train_net.py --config-file train/configs/lazy/faster_rcnn_R_50_FPN_1x_dst.py \\
        --num-gpus 8 [--resume] [--eval-only] [KEY=VALUE ...]
"""
import logging
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
logger = logging.getLogger("lazy_train_net")


def do_test(cfg, model):
    from detectron2.config import instantiate
    from detectron2.evaluation import inference_on_dataset, print_csv_format
    if "evaluator" not in cfg.dataloader:
        return {}
    ret = inference_on_dataset(model, instantiate(cfg.dataloader.test),
                               instantiate(cfg.dataloader.evaluator))
    print_csv_format(ret)
    return ret


def do_train(args, cfg):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import instantiate
    from detectron2.engine import AMPTrainer, SimpleTrainer, default_writers, hooks
    from detectron2.utils import comm

    from dst_dali.trainer import DSTHook, create_ddp_model_on_any_device
    model = instantiate(cfg.model)
    model.to(cfg.train.device)
    cfg.optimizer.params.model = model
    optim = instantiate(cfg.optimizer)
    loader = instantiate(cfg.dataloader.train)  # shards by torch.distributed's rank
    model = create_ddp_model_on_any_device(model, **cfg.train.ddp)
    loader.watch(model)
    trainer = (AMPTrainer if cfg.train.amp.enabled else SimpleTrainer)(
        model, loader.endless(), optim)
    checkpointer = DetectionCheckpointer(model, cfg.train.output_dir, trainer=trainer)
    trainer.register_hooks([
        # first, so the controller has seen the step before the checkpointer saves it
        DSTHook(loader, loader.controller, cfg.train.checkpointer.period, cfg.train.output_dir),
        hooks.IterationTimer(),
        hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
        hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer)
        if comm.is_main_process() else None,
        hooks.EvalHook(cfg.train.eval_period, lambda: do_test(cfg, model)),
        hooks.PeriodicWriter(default_writers(cfg.train.output_dir, cfg.train.max_iter),
                             period=cfg.train.log_period) if comm.is_main_process() else None,
    ])
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    start_iter = trainer.iter + 1 if args.resume and checkpointer.has_checkpoint() else 0
    trainer.train(start_iter, cfg.train.max_iter)


def main(args):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import LazyConfig, instantiate
    from detectron2.engine import default_setup
    from detectron2.utils import comm
    from detectron2.utils.logger import setup_logger
    from train_dali import register_bundled_datasets
    register_bundled_datasets()
    cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config_file), args.opts)
    default_setup(cfg, args)
    setup_logger(cfg.train.output_dir, distributed_rank=comm.get_rank(), name="dst_dali")
    if args.eval_only:
        model = instantiate(cfg.model)
        model.to(cfg.train.device)
        DetectionCheckpointer(model).load(cfg.train.init_checkpoint)
        return do_test(cfg, model)
    do_train(args, cfg)


if __name__ == "__main__":
    from detectron2.engine import default_argument_parser, launch
    args = default_argument_parser(__doc__).parse_args()
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
