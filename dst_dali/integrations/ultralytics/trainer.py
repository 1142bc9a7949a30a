"""DSTDetectionTrainer: Ultralytics' DetectionTrainer with DSTLoader as its train loader, the
feedback read from its own loss. A user's script changes by one argument:

    from ultralytics import YOLO
    from dst_dali.ultralytics import DSTDetectionTrainer
    YOLO("yolo11n.yaml").train(data="my_data.yaml", trainer=DSTDetectionTrainer, imgsz=640)

Ultralytics' train() refuses keywords it does not know, so DST's settings come in through
`DSTDetectionTrainer.configure(tau=0.2, ...)`, a subclass with them (DST_DEFAULTS lists them).
Validation keeps Ultralytics' own loader and metrics. The train loader is rebuilt, as
Ultralytics asks, at its out-of-memory retry; the controller and the record go on across it.
Under DDP each rank reads its own shard of the images (from torch.distributed).

What the run leaves beside Ultralytics' files: `dst_history/rank{R}.csv` (the feedback
record), `weights/dst_loader_rank{R}.pt` (the loader's state at each save: `resume=True`
continues with the same batches) and `dst/*` columns in results.csv.
"""
import os
from typing import Optional

import numpy as np
import torch
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils import DEFAULT_CFG, RANK
from ultralytics.utils.torch_utils import unwrap_model

from ...data.yolo_labels import load_yolo_images
from ...feedback.controller import FeedbackController, StaticController
from ...loader import DSTLoader
from ...stream.kinds import COLLAGE

# DST's settings, with the paper's defaults: tau, k, the signal (only "reg", the box loss, is
# split for YOLO) and the decision; explore (a share of decisions drawn at random, for the
# diagnostics); enabled False trains regular batches only (the baseline, same loader); device
# and num_threads are DALI's.
DST_DEFAULTS = {"tau": 0.1, "k": 4, "signal": "reg", "decision": "per_rank", "explore": 0.0,
                "enabled": True, "device": "auto", "num_threads": 2}


class _Sampler:
    """What Ultralytics' trainer reads of a loader's sampler: this rank's images an epoch."""

    def __init__(self, images: int):
        self.images = images

    def __len__(self) -> int:
        return self.images

    def set_epoch(self, epoch: int) -> None:
        """The DST streams carry on across epochs by themselves."""


class _Dataset:
    """What the trainer reads of a loader's dataset: its length and, for its plots, each
    image's labels as YOLODataset keeps them (cls (n, 1), bboxes (n, 4) normalised xywh)."""

    def __init__(self, index):
        self.index = index

    def __len__(self) -> int:
        return len(self.index)

    @property
    def labels(self) -> list:
        out = []
        for p in range(len(self.index)):
            h, w = (float(v) for v in self.index.sizes[p])
            b = self.index.boxes[p].astype(np.float32)
            xywh = np.stack([(b[:, 0] + b[:, 2]) / 2 / w, (b[:, 1] + b[:, 3]) / 2 / h,
                             (b[:, 2] - b[:, 0]) / w, (b[:, 3] - b[:, 1]) / h], 1)
            out.append({"cls": self.index.labels[p].astype(np.float32)[:, None],
                        "bboxes": xywh.reshape(-1, 4)})
        return out


class DSTTrainLoader:
    """DSTLoader(output="ultralytics") with what Ultralytics' trainer reads of a train loader:
    len() batches an epoch, sampler, batch_size, num_workers, drop_last, dataset, reset() (at
    close_mosaic: DST has no mosaic to close) and close()."""

    def __init__(self, loader: DSTLoader):
        self.loader = loader
        self.batch_size = loader.batch_size
        self.num_workers = loader.settings.num_threads
        self.drop_last = False
        self.sampler = _Sampler(loader.shard_size)
        self.dataset = _Dataset(loader.index)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for _ in range(len(self)):
            yield self.loader.next_batch()

    def reset(self) -> None:
        """Nothing to reset: the streams go on, and YOLO's mosaic is never used with DST."""

    def close(self) -> None:
        self.loader.close()


def _on_train_start(trainer) -> None:
    trainer._watch()


def _on_train_batch_start(trainer) -> None:
    trainer._attach()


def _on_model_save(trainer) -> None:
    trainer._save_loader_state()


# module functions, so that a DDP rank unpickles the very same ones (cloudpickle sends them by
# reference) and can tell them among the callbacks it is given
DST_CALLBACKS = {"on_train_start": _on_train_start, "on_train_batch_start": _on_train_batch_start,
                 "on_model_save": _on_model_save}


class DSTDetectionTrainer(DetectionTrainer):
    """Ultralytics' DetectionTrainer training on DST batches (see the module)."""
    dst = dict(DST_DEFAULTS)

    @classmethod
    def configure(cls, **settings) -> type:
        """A subclass with these DST settings (DST_DEFAULTS names them): pass it as trainer=."""
        unknown = sorted(set(settings) - set(DST_DEFAULTS))
        if unknown:
            raise TypeError(f"DSTDetectionTrainer.configure(): unknown settings {unknown}; "
                            f"they are {sorted(DST_DEFAULTS)}")
        merged = {**cls.dst, **settings}
        FeedbackController(merged["tau"], explore=merged["explore"])  # refused here, by name
        return type(cls.__name__, (cls,), {"dst": merged, "__module__": cls.__module__})

    def __init__(self, cfg=DEFAULT_CFG, overrides=None, _callbacks=None):
        super().__init__(cfg, overrides, _callbacks)
        self.dst_loader: Optional[DSTTrainLoader] = None
        self.dst_controller = self._controller()
        self._epoch_rows = 0
        for event, callback in DST_CALLBACKS.items():
            # a DDP rank is built with the launcher's callbacks, these among them
            if callback not in self.callbacks[event]:
                self.add_callback(event, callback)

    def _controller(self):
        s = self.dst
        if not s["enabled"]:
            return StaticController("never")
        return FeedbackController(s["tau"], explore=s["explore"],
                                  seed=int(self.args.seed) + max(RANK, 0))

    def _state_path(self) -> str:
        return os.path.join(str(self.wdir), f"dst_loader_rank{max(RANK, 0)}.pt")

    def get_dataloader(self, dataset_path, batch_size: int = 16, rank: int = 0,
                       mode: str = "train"):
        """The train loader is DST's; the validation loader Ultralytics' own."""
        if mode != "train":
            return super().get_dataloader(dataset_path, batch_size, rank, mode)
        previous = self.dst_loader  # set when Ultralytics rebuilds it (its out-of-memory retry)
        if previous is not None:
            previous.close()  # one loader alive
        s = self.dst
        index = load_yolo_images(dataset_path, self.data["names"])
        loader = DSTLoader(index=index, batch_size=batch_size, k=s["k"], output="ultralytics",
                           imgsz=int(self.args.imgsz), flip_prob=float(self.args.fliplr),
                           device=s["device"], num_threads=s["num_threads"],
                           seed=int(self.args.seed), controller=self.dst_controller,
                           signal=s["signal"], decision=s["decision"],
                           record_dir=str(self.save_dir))
        if self.args.resume and os.path.exists(self._state_path()):
            loader.load_state_dict(torch.load(self._state_path(), weights_only=False))
        elif previous is not None:  # the steps trained before the retry stay in the record
            loader.record.load_state_dict(previous.loader.record.state_dict())
        self.dst_loader = DSTTrainLoader(loader)
        if getattr(self, "_watching", False):
            self._watch()
        return self.dst_loader

    def _watch(self) -> None:
        """The loader reads r from the live model's criterion (built now if it is not, after
        the EMA copy was made, so the copy Ultralytics validates and saves has none)."""
        self._watching = True
        self.dst_loader.loader.watch(unwrap_model(self.model), signal=self.dst["signal"],
                                     decision=self.dst["decision"])

    def _attach(self) -> None:
        """Again on the criterion, should Ultralytics have rebuilt it (an end-to-end head's
        on resume)."""
        probe = self.dst_loader.loader.feed.probe
        if probe is not None:
            probe.attach()

    def _save_loader_state(self) -> None:
        torch.save(self.dst_loader.loader.state_dict(), self._state_path())

    def save_metrics(self, metrics: dict) -> None:
        """Ultralytics' results.csv, with the epoch's dst/* figures (the same columns every
        epoch: its header is written once)."""
        rows = self.dst_loader.loader.record.rows[self._epoch_rows:]
        self._epoch_rows += len(rows)
        shares = [row["r"] for row in rows if row["r"] is not None]
        tau = getattr(self.dst_controller, "tau", None)
        super().save_metrics({
            **metrics,
            "dst/collage_rate": float(np.mean([r["kind"] == COLLAGE for r in rows]))
            if rows else 0.0,
            "dst/small_share": float(np.mean(shares)) if shares else float("nan"),
            "dst/tau": float(tau) if tau is not None else float("nan")})
