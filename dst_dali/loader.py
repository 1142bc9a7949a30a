"""DSTLoader: regular and collage batches from two prefetching DALI pipelines, the kind of each
iteration chosen by the feedback controller, in detectron2's or torchvision's format."""
import itertools
import logging
import math
import warnings
from typing import Optional

import numpy as np

try:
    import torch
except ModuleNotFoundError as e:  # the operator needs DALI alone; the loader needs torch too
    raise ModuleNotFoundError("dst_dali.loader needs torch and torchvision: pip install "
                              "'dst_dali[loader]' (in a checkout: pip install '.[loader]')",
                              name=e.name) from e

from .data.catalog import detectron2_dataset_index
from .data.coco_index import load_coco_index
from .data.index import DatasetError, DatasetIndex
from .feedback.controller import FeedbackController
from .feedback.feed import UNFED_WARNING_AFTER, ControllerFeed, check_watch_args
from .feedback.record import COUNT_COLUMNS, FeedbackRecord, check_record_state
from .feedback.signals import box_count_parts
from .feedback.sizes import GROUPS
from .feedback.stock_loops import ModelFinder, put_scalars, storage_iteration
from .op.device import resolve_device
from .settings import LoaderSettings, default_pipelines
from .stream.bad_images import BadImages
from .stream.batch_stream import BatchStream
from .stream.distributed import shard_of_rank, shared_random_seed
from .stream.formats import to_detectron2, to_torchvision, to_ultralytics
from .stream.kinds import COLLAGE, KINDS, REGULAR
from .stream.state import (
    STATE_VERSION,
    check_loader_state,
    check_same_dataset,
    dataset_identity,
    sequence_config,
)

logger = logging.getLogger(__name__)
_SETTINGS = frozenset(LoaderSettings.__dataclass_fields__)


class DSTLoader:
    """Iterates batches of a detection dataset for Dynamic Scale Training.

    Args:
        images, annotations: a COCO-format dataset (image folder, instances json); or index=
            (dst_dali.data.index), or DSTLoader.from_detectron2(name).
        controller: decides each batch's kind (dst_dali.feedback.controller); see watch().
        settings: a LoaderSettings (dst_dali.settings), whose fields are also taken as keyword
            arguments, each overriding its own: batch_size, k (images a collage), min_size,
            max_size, flip_prob, device ("cpu", "gpu", "auto"), seed, shard_id, num_shards,
            output ("detectron2", "torchvision" or "ultralytics", with imgsz), masks, labels,
            bad_images ("stop" or "skip"), num_threads, pipelines, max_pixels, cache_dir,
            endless, signal, decision, record_dir (where the feedback record is written), ...
            (LoaderSettings says what each does). Each is checked once, and a bad one is named
            with its value.

    Inside a loop that knows nothing of DST (detectron2's tools/lazyconfig_train_net.py),
    iterating the loader with a FeedbackController and no watch() finds the model by itself:
    the first module called with a batch as delivered is watched
    (dst_dali.feedback.stock_loops). With detectron2's EventStorage open, dst/* scalars go to
    it (metrics.json), and a resumed trainer's start iteration moves both streams past what the
    run can have read (start_after; an exact resume needs the loader's state, as DSTHook keeps
    it).

    Two DALI pipelines prefetch side by side: regular (k = 1: detectron2's ResizeShortestEdge +
    RandomFlip) and collage (k images a sample, all of one orientation, on a canvas the size of
    a regular image). Each `next_batch()` asks the controller, which has seen the previous
    iteration's loss, and runs only the chosen pipeline; the other one's prefetched batches wait
    for their turn, so the decision applies at the very next iteration and no decoded batch is
    thrown away.

    Each stream reads every image of the dataset once an epoch, spread over the ranks
    (dst_dali.stream.sampler); one epoch of the regular stream on this rank is `len(loader)`
    iterations, and `epochs_read()` tells how far each stream has got.
    """

    def __init__(self, images: Optional[str] = None, annotations: Optional[str] = None, *,
                 controller: Optional[FeedbackController] = None,
                 index: Optional[DatasetIndex] = None,
                 settings: Optional[LoaderSettings] = None, **options):
        unknown = sorted(set(options) - _SETTINGS)
        if unknown:
            raise TypeError(f"DSTLoader() got unexpected keyword argument(s) {unknown}; the "
                            f"settings are {sorted(_SETTINGS)}")
        given = settings or LoaderSettings()
        given = given.replace(**options) if options else given
        shard_id, num_shards = shard_of_rank(given.shard_id, given.num_shards)
        self.seed_drawn = given.seed is None
        seed = shared_random_seed(num_shards) if self.seed_drawn else given.seed
        if self.seed_drawn:
            logger.info("DSTLoader: seed=None, drew seed %d (the same on every rank; kept in "
                        "the loader's state)", seed)
        if index is None and (images is None or annotations is None):
            raise ValueError("give images and annotations (a COCO-format dataset), or use "
                             "DSTLoader.from_detectron2(name) for a registered one")
        self.index = index or load_coco_index(images, annotations, cache_dir=given.cache_dir,
                                              polygons=given.masks)
        masks = given.masks
        if masks and not self.index.polygons_read:
            raise ValueError("masks=True: the index was built with polygons=False")
        if masks and self.index.rle_annotations:
            raise DatasetError(self.index.source, [
                f"{where}: an RLE mask on a non-crowd annotation; masks=True trains on polygons "
                "(convert it to polygons, or train without masks)"
                for where in self.index.rle_annotations])
        if given.labels == "coco" and 0 in self.index.category_ids:
            raise ValueError(
                f"labels='coco': {self.index.source} has a category with id 0 (a dataset "
                "without COCO ids, as a registered list of dicts or PASCAL VOC), and torchvision "
                "reads label 0 as the background, so that class would never be learned; use "
                "labels='contiguous' (1..C, num_classes=C + 1)")
        device = resolve_device(given.device)
        # every default resolved: what the streams read, and what a state is compared with
        self.settings = given.replace(
            seed=seed, shard_id=shard_id, num_shards=num_shards, device=device,
            pipelines=given.pipelines or default_pipelines(device, given.num_threads),
            image_format=given.format, pad_value=given.padding,
            aspect_ratio_grouping=given.grouped,
            # YOLO's resize: the long side made imgsz, the square filled by the letterbox
            **({"min_size": (given.imgsz,), "max_size": given.imgsz}
               if given.output == "ultralytics" else {}))
        s = self.settings
        # torchvision's labels: 1..C (contiguous + 1, 0 is background) or COCO category ids
        self._label_ids = (np.asarray(self.index.category_ids, np.int64) if s.labels == "coco"
                           else None)
        self.bad = BadImages(self.index)
        self.dataset = dataset_identity(self.index)  # what a saved state must match
        self.controller = controller
        n = len(self.index)
        self.shard_size = n * (shard_id + 1) // num_shards - n * shard_id // num_shards
        if s.k * s.batch_size > self.shard_size:
            raise ValueError(
                f"batch_size={s.batch_size}: a collage batch needs k*batch_size="
                f"{s.k * s.batch_size} distinct images, but shard {shard_id} of {num_shards} "
                f"holds {self.shard_size} (of {n} usable images in {self.index.source})")
        self.streams = {kind: BatchStream(kind, self.index, self.bad, s) for kind in KINDS}
        self.closed = False
        self._restart(dict.fromkeys(KINDS, 0))
        self.iteration = 0
        self.last_kind: Optional[str] = None
        self.last_boxes: list = []
        self.last_image_ids: list = []
        self.feed = ControllerFeed()  # r of each delivered batch to the controller
        # a row an iteration the controller saw; the delivered batch's part waits for its r
        self.record = FeedbackRecord(s.record_dir, shard_id)
        self._pending_row: Optional[dict] = None
        self._position_of: Optional[dict] = None
        self._finder: Optional[ModelFinder] = None
        self.log_scalars = True  # dst/* into detectron2's EventStorage; DSTHook does its own
        self._run_kinds = dict.fromkeys(KINDS, 0)  # batches delivered by this object

    # the settings a loop reads most, by name
    batch_size = property(lambda self: self.settings.batch_size)
    k = property(lambda self: self.settings.k)
    output = property(lambda self: self.settings.output)
    masks = property(lambda self: self.settings.masks)
    device = property(lambda self: self.settings.device)

    @property
    def set_aside(self) -> dict:
        """Dataset position -> why its image is not read, for the rest of the run."""
        return self.bad.set_aside

    @classmethod
    def from_detectron2(cls, datasets, **kwargs) -> "DSTLoader":
        """A DSTLoader over datasets registered in detectron2's DatasetCatalog (a name or a
        list of names, concatenated: COCO json, the builtin PASCAL VOC sets, a registered list
        of dicts); kwargs as for DSTLoader."""
        settings = kwargs.get("settings") or LoaderSettings()
        return cls(index=detectron2_dataset_index(
            datasets, kwargs.get("cache_dir", settings.cache_dir),
            polygons=kwargs.get("masks", settings.masks)), **kwargs)

    @classmethod
    def from_yolo(cls, data: str, split: str = "train", **kwargs) -> "DSTLoader":
        """A DSTLoader over a YOLO-format dataset: `data` is its data yaml (path, train, val,
        names), `split` the split read (dst_dali.data.yolo_labels); background images are
        kept. Labels are the classes' positions in `names` (torchvision's labels="contiguous"
        adds 1). kwargs as for DSTLoader."""
        from .data.yolo_labels import load_yolo_index
        settings = kwargs.get("settings") or LoaderSettings()
        return cls(index=load_yolo_index(
            data, split, cache_dir=kwargs.get("cache_dir", settings.cache_dir),
            polygons=kwargs.get("masks", settings.masks)), **kwargs)

    # -- iteration ---------------------------------------------------------------------------
    def watch(self, model=None, signal: Optional[str] = None, decision: Optional[str] = None,
              controller=None) -> "DSTLoader":
        """Feeds the controller from the model's own training forwards: after this, each
        `next_batch()` first reads the loss parts the last forward left (see
        dst_dali.signals.probe_for) and gives r to the controller. A stock loop
        (`for batch in loader: losses = model(batch) ...`) then trains with DST unchanged.

        Args:
            model: a detectron2 R-CNN, RetinaNet or FCOS, or a torchvision Faster/Mask R-CNN
                (DDP-wrapped or not); None for signal "input".
            signal: "reg", "cls" or "joint" (that loss of positive proposals, split by
                matched-box area) or "input" (the share of small boxes in the batch); default
                the loader's `signal` ("reg").
            decision: "per_rank" (this rank's r, the paper's) or "global" (the losses summed
                over torch.distributed ranks: every rank must call next_batch alike); default
                the loader's `decision` ("per_rank").
            controller: the policy fed; default the loader's own, or FeedbackController(0.1).
        Returns the loader.
        """
        signal = signal or self.settings.signal
        decision = decision or self.settings.decision
        check_watch_args(signal, decision)
        self.feed.watch(model, signal, decision)
        self.controller = controller or self.controller or FeedbackController(0.1)
        if self._finder is not None:
            self._finder.remove()
        return self

    def unwatch(self) -> None:
        """Stops the feedback and gives the watched model its own methods back; the
        controller's last decision stands."""
        self.feed.unwatch()

    @property
    def signal(self) -> Optional[str]:
        """What watch() measures r from; None when nothing is watched."""
        return self.feed.signal

    @property
    def decision(self) -> Optional[str]:
        return self.feed.decision

    @property
    def last_feedback(self) -> Optional[dict]:
        """The last batch's {"local": its loss parts on this rank, "share": r as fed}."""
        return self.feed.last_feedback

    def close(self) -> None:
        """Shuts the pipelines and their threads down now, not when the garbage collector
        gets to them (their feed refers back to the loader); the global hook, if any, goes too.
        Safe to call twice; `with DSTLoader(...) as loader:` calls it. The loader serves no
        batch after it; the batches it gave stay valid."""
        if self._finder is not None:
            self._finder.remove()
        for stream in self.streams.values():
            stream.shut_down()
        self.record.close()
        self.closed = True

    def __enter__(self) -> "DSTLoader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def observe_last(self) -> Optional[dict]:
        """Feeds the controller r of the last delivered batch (once a batch), from its training
        forward; `next_batch()` calls it, and so may a trainer right after its step. Returns
        {"local": (small, medium, large, total) of this rank, "share": r as fed} or None
        when nothing is watched."""
        fresh = not self.feed.observed
        fed = self.feed.observe(self.controller, self.last_boxes)
        if fresh and fed is not None and self._pending_row is not None:
            self._add_record_row(self._pending_row, fed)
        return fed

    def _add_record_row(self, row: dict, fed: dict) -> None:
        local = fed["local"]
        controller = self.controller
        row = dict(row, r=fed["share"],
                   next=controller.decisions[-1] if controller is not None else None,
                   decided_by=getattr(controller, "reasons", [None])[-1] if controller
                   is not None else None,
                   **{group: (v / local[3] if local[3] > 0 else None)
                      for group, v in zip(GROUPS, local[:3])})
        self.record.add(row)

    def _warn_if_unfed(self) -> None:
        """DST silently off is the costliest failure: say so once, naming the fix."""
        if sum(self._run_kinds.values()) < UNFED_WARNING_AFTER or \
                (self._finder is not None and self._finder.active):  # still looking
            return
        reason = self.feed.unfed_reason(self.controller)
        if reason is not None:
            warnings.warn(f"DSTLoader: {reason} Until then DST is off: only regular batches.",
                          stacklevel=3)
            logger.warning("DSTLoader: %s", reason)

    def next_batch(self, kind: Optional[str] = None):
        """The next batch; its kind from the controller unless forced ("regular"/"collage")."""
        self.observe_last()
        if kind is None:
            self._warn_if_unfed()
            collage = self.controller is not None and self.controller.wants_collage()
            kind = COLLAGE if collage else REGULAR
        if kind not in KINDS:
            raise ValueError(f"kind={kind!r}: must be one of {KINDS}")
        if self.closed:
            raise RuntimeError("DSTLoader: closed; it serves no more batches")
        samples = self.streams[kind].samples()
        self.iteration += 1
        self._run_kinds[kind] += 1
        if self.log_scalars:
            put_scalars(self._scalars(kind))
        self.last_kind = kind
        self.last_boxes = [s.boxes for s in samples]  # for the "input" signal
        self.last_image_ids = [list(s.image_ids) for s in samples]
        self.feed.observed = False
        counts = box_count_parts(self.last_boxes)[:3].long().tolist() if samples else [0] * 3
        self._pending_row = {"iteration": self.iteration - 1, "kind": kind,
                             **dict(zip(COUNT_COLUMNS, counts))}
        if self.output == "detectron2":
            return [to_detectron2(s, self.masks) for s in samples]
        if self.output == "ultralytics":
            return self._to_ultralytics(samples)
        pairs = [to_torchvision(s, self.masks, self._label_ids) for s in samples]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    def _to_ultralytics(self, samples) -> dict:
        if self._position_of is None:  # image id -> its place in the index, made once
            self._position_of = {i: p for p, i in enumerate(self.index.image_ids)}
        first = [self._position_of[s.image_ids[0]] for s in samples]
        return to_ultralytics(
            samples, self.settings.imgsz, self.settings.padding[0],
            [self.index.file_paths[p] for p in first],
            [s.original_size or (s.height, s.width) for s in samples])

    def __len__(self) -> int:
        return math.ceil(self.shard_size / self.batch_size)

    def _scalars(self, kind: str) -> dict:
        """This rank's dst/* figures at a batch of `kind`: what a loop without DSTHook logs."""
        scalars = {"dst/collage": float(kind == COLLAGE),
                   "dst/collage_rate": self._run_kinds[COLLAGE] / sum(self._run_kinds.values()),
                   "dst/images_set_aside": len(self.set_aside)}
        share = (self.feed.last_feedback or {}).get("share")
        if share is not None:
            scalars["dst/small_share"] = share
        if getattr(self.controller, "tau", None) is not None:
            scalars["dst/tau"] = self.controller.tau
        return scalars

    def __iter__(self):
        """One epoch, len(self) iterations, like a torch DataLoader (the streams go on where
        they stopped); endless with endless=True. In a loop that knows nothing of DST it finds
        the model and the resumed start by itself (see the class's notes)."""
        start = storage_iteration()
        if self.iteration == 0 and start:
            self.start_after(start)
            logger.info("DSTLoader: the trainer starts at iteration %d: both streams continue "
                        "past what the run can have read", start)
        if self.feed.signal is None and isinstance(self.controller, FeedbackController) and \
                (self._finder is None or self._finder.active):
            self._finder = self._finder or ModelFinder(self._found_model)
        for _ in (itertools.count() if self.settings.endless else range(len(self))):
            batch = self.next_batch()
            if self._finder is not None:
                self._finder.delivered(batch)
            yield batch

    def _found_model(self, model) -> None:
        """The loop's model, called with the last batch: watched from this forward on."""
        self.watch(model)
        self.feed.observed = False  # this very forward feeds the next decision
        logger.info("DSTLoader: watching %s, the module the loop trains on its batches",
                    type(model).__name__)

    def endless(self):
        """An endless iterator of batches, for loops that draw from one (detectron2's trainers,
        `for batch in loader.endless()`): the streams have no end of their own."""
        while True:
            yield self.next_batch()

    def epochs_read(self) -> dict:
        """Passes over this rank's share of the dataset each stream has delivered (prefetch
        not counted)."""
        return {kind: s.delivered * s.k * self.batch_size / self.shard_size
                for kind, s in self.streams.items()}

    # -- checkpointing -----------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything a resumed run needs to continue with the identical batches: how many
        batches each stream has delivered (a batch is a function of its place in the stream),
        the counters, the controller, and the last batch's loss parts if its forward has run
        and the controller has not seen them yet (a loop checkpointing after its step): they
        are read, not observed, so the running loader still feeds them to the controller at its
        next batch, and a loader resumed from this state does the same. Plain numbers and
        lists."""
        due = self.feed.due(self.last_boxes)
        return {"version": STATE_VERSION,
                "feedback_due": due,
                "config": sequence_config(self.settings),
                "dataset": self.dataset,
                "iteration": self.iteration, "last_kind": self.last_kind,
                "delivered": {kind: s.delivered for kind, s in self.streams.items()},
                "set_aside": [[self.index.image_ids[p], why]
                              for p, why in sorted(self.set_aside.items())],
                "controller": self.controller.state_dict() if self.controller else None,
                "record": self.record.state_dict(), "record_pending": self._pending_row}

    def _restart(self, delivered: dict) -> None:
        """New pipelines, each stream fed from `delivered[kind]` batches on."""
        for kind, first in delivered.items():
            self.streams[kind].restart(first)

    def start_after(self, iterations: int) -> None:
        """Continues both streams past all that `iterations` iterations can have read (for a
        resume without the saved state): no batch of the run so far comes again."""
        self._restart({kind: iterations for kind in KINDS})
        self.iteration = iterations

    def load_state_dict(self, state: dict) -> None:
        """Continues where the state's loader was (see state_dict()). A state that is not one
        is refused with a ValueError naming the field, before anything changes."""
        check_loader_state(state, self.index.image_ids)
        check_same_dataset(state.get("dataset"), self.dataset)
        if "record" in state:  # absent from a state saved before the loader kept the record
            check_record_state(state["record"], state.get("record_pending"))
        saved_seed = state["config"].get("seed")
        adopt_seed = self.seed_drawn and saved_seed != self.settings.seed
        now = sequence_config(self.settings)
        diff = {key: (saved, now.get(key)) for key, saved in state["config"].items()
                if now.get(key) != saved and not (key == "seed" and adopt_seed)}
        if diff:
            raise ValueError(f"loader state was saved with other settings (saved, now): {diff}")
        if adopt_seed:  # the run drew its seed once; a resume reads on with that one
            logger.info("DSTLoader: resuming with the state's seed %d", saved_seed)
            self.settings = self.settings.replace(seed=saved_seed)
            for stream in self.streams.values():
                stream.reseed(self.settings)
        position_of = {image_id: p for p, image_id in enumerate(self.index.image_ids)}
        self.bad.set_aside = {position_of[image_id]: why for image_id, why in
                              state.get("set_aside", [])}
        self._restart(state["delivered"])
        self.iteration = state["iteration"]
        self.last_kind = state["last_kind"]
        self.feed.resume(state.get("feedback_due"))
        if "record" in state:
            self.record.load_state_dict(state["record"])
            self._pending_row = state.get("record_pending")
        if self.controller is not None and state["controller"] is not None:
            self.controller.load_state_dict(state["controller"])
