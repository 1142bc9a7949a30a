"""DST inside detectron2: a DefaultTrainer whose train loader is DSTLoader, and a hook that feeds
each iteration's small-object loss share to the controller.

    batch (DSTLoader) -> model forward (probe splits the loss) -> DSTHook.after_step:
    this rank's r (DST.DECISION "per_rank", the paper's) or all ranks' summed losses ("global")
    -> controller.observe -> next batch's kind; one all-reduce a step for the logged figures
"""
import logging
import os
from typing import List
from unittest import mock

import torch
from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultTrainer, HookBase, create_ddp_model
from detectron2.engine import defaults as d2_defaults
from detectron2.evaluation import COCOEvaluator, PascalVOCDetectionEvaluator
from detectron2.utils import comm

from ...checkpoint import rng_states, set_rng_states
from ...feedback.controller import (
    COLLAGE,
    FeedbackController,
    ReplayController,
    StaticController,
)
from ...feedback.history import decisions_of, history_path, write_history
from ...feedback.record import COUNT_COLUMNS
from ...feedback.signal_table import INPUT_SIGNAL, REPLAY_SIGNAL, WATCH_SIGNALS
from ...feedback.sizes import GROUPS
from ...loader import DSTLoader
from ...stream.distributed import gather_over_ranks, shared_random_seed, sum_over_ranks
from .config import SIGNALS_OF

logger = logging.getLogger("dst_dali.trainer")  # the name users filter logs by


def build_controller(cfg):
    if not cfg.DST.ENABLED:
        return StaticController("never")  # the baseline: same loader, regular batches only
    if cfg.DST.SIGNAL in WATCH_SIGNALS:
        calibrate = cfg.DST.TAU_WARMUP > 0  # then TAU is the warm-up's quantile of r
        return FeedbackController(
            None if calibrate else cfg.DST.TAU, warmup=cfg.DST.TAU_WARMUP,
            quantile=cfg.DST.TAU_QUANTILE,
            # every rank's warm-up r, so all ranks calibrate the same tau
            pool=gather_over_ranks if cfg.DST.DECISION == "per_rank" else None,
            explore=cfg.DST.EXPLORE, seed=_seed(cfg) + comm.get_rank())
    if cfg.DST.SIGNAL == REPLAY_SIGNAL:  # a yoked control: another run's kinds, in its order
        rank = comm.get_rank()
        return ReplayController(decisions_of(cfg.DST.REPLAY_FROM, rank, cfg.SOLVER.MAX_ITER),
                                history_path(cfg.DST.REPLAY_FROM, rank))
    return StaticController(cfg.DST.SIGNAL, prob=cfg.DST.RANDOM_PROB, seed=_seed(cfg))


def _seed(cfg) -> int:
    """cfg.SEED, or with SEED -1 one drawn and shared by the ranks."""
    return cfg.SEED if cfg.SEED >= 0 else shared_random_seed(comm.get_world_size())


def build_dst_loader(cfg, controller) -> DSTLoader:
    """DSTLoader for cfg.DATASETS.TRAIN, datasets registered in detectron2's DatasetCatalog
    (concatenated); this rank's shard of the data. Its pad value is the model's pixel mean."""
    world = comm.get_world_size()
    if cfg.SOLVER.IMS_PER_BATCH % world:
        raise ValueError(f"SOLVER.IMS_PER_BATCH={cfg.SOLVER.IMS_PER_BATCH} does not split over "
                         f"{world} processes")
    return DSTLoader.from_detectron2(
        cfg.DATASETS.TRAIN, batch_size=cfg.SOLVER.IMS_PER_BATCH // world,
        k=cfg.DST.K, min_size=tuple(cfg.INPUT.MIN_SIZE_TRAIN), max_size=cfg.INPUT.MAX_SIZE_TRAIN,
        flip_prob=0.5 if cfg.INPUT.RANDOM_FLIP == "horizontal" else 0.0, device=cfg.DST.DEVICE,
        seed=cfg.SEED if cfg.SEED >= 0 else None,  # SEED -1: one drawn, shared by the ranks
        shard_id=comm.get_rank(), num_shards=world, output="detectron2",
        image_format=cfg.INPUT.FORMAT, controller=controller,
        aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING, masks=cfg.MODEL.MASK_ON,
        pad_value=cfg.MODEL.PIXEL_MEAN, bad_images=cfg.DST.BAD_IMAGES,
        max_pixels=cfg.DST.MAX_PIXELS or None,
        num_threads=cfg.DST.NUM_THREADS, pipelines=cfg.DST.PIPELINES or None)


class DSTHook(HookBase):
    """After each step: has the loader feed the controller the step's r (DSTLoader.watch, the
    one feedback path), logs dst/* scalars, keeps the loader's state beside each checkpoint (per
    rank: shards differ) and plots the run at the end.

    Args:
        loader: the DSTLoader the trainer draws from, watching the model.
        controller: the policy deciding the loader's next batch kind.
        checkpoint_period, output_dir: where and how often the state is saved.
        plot: draw output_dir/dst_feedback.png at the end (main process).
    """

    def __init__(self, loader: DSTLoader, controller, checkpoint_period: int, output_dir: str,
                 plot: bool = True):
        self.loader, self.controller = loader, controller
        loader.log_scalars = False  # the hook logs them, summed over ranks
        self.checkpoint_period = checkpoint_period
        self.output_dir = output_dir
        self.plot = plot
        self.history: List[dict] = []
        self._collage_steps = 0.0  # iterations trained on collages, averaged over ranks

    def after_step(self):
        kind = self.loader.last_kind
        fed = self.loader.observe_last() or {"local": [0.0] * 4, "share": None}
        local, share = fed["local"], fed["share"]
        local_r = local[0] / local[3] if local[3] > 0 else None
        # one all-reduce for the logs: every rank's losses, r and kind
        summed = sum_over_ranks(local + [local_r or 0.0, float(local_r is not None),
                                         float(kind == COLLAGE)])
        world = comm.get_world_size()
        record = {"iteration": self.trainer.iter, "kind": kind, "share": share,
                  "next": self.controller.decisions[-1] if self.controller.decisions else None,
                  "image_ids": self.loader.last_image_ids}
        rows = self.loader.record.rows  # the loader's row of this step: its decision and boxes
        if rows and rows[-1]["iteration"] == self.loader.iteration - 1:
            record.update({k: rows[-1][k] for k in ("decided_by",) + COUNT_COLUMNS})
        self._collage_steps += summed[6] / world
        scalars = {"dst/collage": summed[6] / world,
                   "dst/collage_rate": self._collage_steps / (len(self.history) + 1),
                   "dst/images_set_aside": len(self.loader.set_aside)}
        if getattr(self.controller, "tau", None) is not None:
            scalars["dst/tau"] = self.controller.tau
        if local[3] > 0:
            for name, v in zip(GROUPS, local[:3]):
                record[name] = v / local[3]
        # the step's losses as detectron2 logs them (averaged over ranks, on the main process)
        record.update({k: v for k, (v, it) in self.trainer.storage.latest().items()
                       if it == self.trainer.iter and ("loss_" in k or k == "total_loss")})
        if summed[3] > 0:
            for name, v in zip(GROUPS, summed[:3]):
                scalars[f"dst/share_{name}"] = v / summed[3]
        if summed[5] > 0:
            scalars["dst/small_share"] = summed[4] / summed[5]  # the mean of the ranks' r
        self.history.append(record)
        self.trainer.storage.put_scalars(**scalars, smoothing_hint=False)
        nxt = self.trainer.iter + 1
        if nxt % self.checkpoint_period == 0 or nxt == self.trainer.max_iter:
            self._save_state(nxt)

    # -- state beside detectron2's checkpoints -------------------------------------------------
    def _state_path(self, start_iter: int) -> str:
        return os.path.join(self.output_dir, "dst_state",
                            f"rank{comm.get_rank()}_iter{start_iter:07d}.pth")

    def _save_state(self, start_iter: int):
        path = self._state_path(start_iter)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        # The random generators too: the RPN and ROI heads sample proposals with torch's global
        # RNG, which detectron2's checkpoints leave out; without it a resumed run would sample
        # other positives, measure another r and possibly choose other batches.
        torch.save({"loader": self.loader.state_dict(), "history": self.history,
                    "rng": rng_states()}, path)
        self._save_history()

    def _save_history(self):
        write_history(self.output_dir, comm.get_rank(), {
            "decision": self.loader.decision, "signal": self.loader.signal,
            "tau": getattr(self.controller, "tau", None), "history": self.history})

    def before_train(self):
        start = self.trainer.start_iter
        if start == 0:
            return
        path = self._state_path(start)
        if not os.path.exists(path):
            self.loader.start_after(start)
            logger.warning("DST: %s is missing: the data streams continue past the %d batches "
                           "the run can have read (none of them repeats); the controller starts "
                           "afresh", path, start)
            return
        try:
            state = torch.load(path, weights_only=True)
        except Exception as e:
            raise RuntimeError(f"DST: cannot read the loader state {path} ({e}); delete it to "
                               "resume without it") from e
        self.loader.load_state_dict(state["loader"])
        self.history = state["history"]
        self._collage_steps = float(sum(h["kind"] == COLLAGE for h in self.history))
        set_rng_states(state["rng"])
        logger.info("DST: loader and controller resumed from %s", path)

    def after_train(self):
        self._save_history()
        self.loader.close()  # its pipelines' threads go now, not at garbage collection
        if self.plot and comm.is_main_process() and self.history:
            from ...feedback.plots import plot_feedback
            path = plot_feedback(self.history, self.controller, self.output_dir)
            logger.info("DST: feedback plot written to %s", path)


def create_ddp_model_on_any_device(model, **kwargs):
    """detectron2's create_ddp_model, but a CPU model gets no device_ids (which DDP refuses
    for CPU modules): multi-process training on CPUs, over gloo."""
    if comm.get_world_size() > 1 and next(model.parameters()).device.type == "cpu":
        kwargs.setdefault("device_ids", None)
    return create_ddp_model(model, **kwargs)


class DSTTrainer(DefaultTrainer):
    """detectron2's DefaultTrainer (SimpleTrainer or AMPTrainer inside, as SOLVER.AMP says)
    with DSTLoader as its train loader and DSTHook feeding the controller."""

    def __init__(self, cfg):
        # fails before the model
        self._dst_loader = build_dst_loader(cfg, self.build_controller(cfg))
        if cfg.MODEL.DEVICE != "cpu" or comm.get_world_size() == 1:
            super().__init__(cfg)
            return
        # Multi-process training on CPUs: DefaultTrainer wraps the model with its module's
        # create_ddp_model, which gives DDP device_ids, refused for CPU modules. detectron2 has
        # no extension point for that wrapper, so it is swapped for the call in this case only.
        with mock.patch.object(d2_defaults, "create_ddp_model", create_ddp_model_on_any_device):
            super().__init__(cfg)

    @classmethod
    def build_controller(cls, cfg):
        """The policy choosing each batch's kind, from cfg.DST (a subclass may give its own,
        e.g. a ReplayController for a yoked control)."""
        return build_controller(cfg)

    def build_train_loader(self, cfg):  # DefaultTrainer calls it on the instance
        return self._dst_loader.endless()

    def build_hooks(self):
        cfg = self.cfg
        signal = cfg.DST.SIGNAL if cfg.DST.ENABLED else "never"
        if signal not in WATCH_SIGNALS:
            # the controls and the baseline still log r where the model's loss gives it
            measurable = SIGNALS_OF.get(cfg.MODEL.META_ARCHITECTURE, ())
            signal = "reg" if "reg" in measurable else INPUT_SIGNAL
        loader, controller = self._dst_loader, self._dst_loader.controller
        loader.watch(self.model if signal != INPUT_SIGNAL else None, signal=signal,
                     decision=cfg.DST.DECISION, controller=controller)
        hook = DSTHook(loader, controller, cfg.SOLVER.CHECKPOINT_PERIOD, cfg.OUTPUT_DIR,
                       plot=cfg.DST.PLOT)
        # first, so the controller has seen the step before the checkpointer saves it
        return [hook] + super().build_hooks()

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        """PASCAL VOC sets by detectron2's VOC evaluator (the VOC07 11-point metric for 2007,
        as the paper's Table 10), the others by COCO's."""
        if MetadataCatalog.get(dataset_name).get("evaluator_type") == "pascal_voc":
            return PascalVOCDetectionEvaluator(dataset_name)
        return COCOEvaluator(dataset_name, output_dir=output_folder or os.path.join(
            cfg.OUTPUT_DIR, "inference", dataset_name))
