"""DSTLoader: regular and collage batches from two prefetching DALI pipelines, the kind of each
iteration chosen by the feedback controller, in detectron2's or torchvision's format."""
import itertools
import logging
import math
import warnings
from typing import Optional, Sequence

import numpy as np

try:
    import torch
except ModuleNotFoundError as e:  # the operator needs DALI alone; the loader needs torch too
    raise ModuleNotFoundError("dst_dali.loader needs torch and torchvision: pip install "
                              "'dst_dali[loader]' (in a checkout: pip install '.[loader]')",
                              name=e.name) from e

from .bad_images import BadImages
from .batch_stream import BatchStream
from .checkpoint import SEQUENCE_KEYS, STATE_VERSION, check_loader_state
from .controller import COLLAGE, KINDS, REGULAR, FeedbackController
from .distributed import shard_of_rank, shared_random_seed
from .feedback import UNFED_WARNING_AFTER, ControllerFeed, check_watch_args
from .catalog import detectron2_dataset_index
from .coco_index import load_coco_index
from .dataset import DatasetError, DatasetIndex
from .device import resolve_device
from .formats import to_detectron2, to_torchvision
from .image_files import MAX_PIXELS
from .ops import check_k
from .stock_loops import ModelFinder, put_scalars, storage_iteration

logger = logging.getLogger(__name__)
OUTPUTS = ("detectron2", "torchvision")
LABELS = ("contiguous", "coco")
BAD_IMAGES = ("stop", "skip")
# The padding of a collage's cells: the pixel mean, which normalization turns into the zeros
# detectron2 and torchvision pad batches with. In RGB order, 0-255 (detectron2's default
# PIXEL_MEAN is this in BGR; torchvision's image_mean is this / 255).
PIXEL_MEAN_RGB = (123.675, 116.28, 103.53)


def _integer(value) -> bool:
    """An int, not a bool (True is an int to Python, never a batch size to a user)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def default_pipelines(device: str, num_threads: int) -> int:
    """DALI pipelines of a kind unless given: 2 on the CPU (at most num_threads), 1 on a GPU."""
    return min(2, num_threads) if device == "cpu" else 1


class DSTLoader:
    """Iterates batches of a detection dataset for Dynamic Scale Training.

    Args (the main ones):
        images, annotations: a COCO-format dataset (image folder, instances json); or index=
            (dst_dali.dataset), or DSTLoader.from_detectron2(name).
        batch_size: samples a batch on this rank (a collage sample holds k images).
        k: images a collage (4, the paper's; 9 or 16).
        min_size, max_size: detectron2's ResizeShortestEdge("choice") of regular images;
            collage components get 1/sqrt(k) of it.
        flip_prob: horizontal flip probability of each image.
        device: "cpu", "gpu" or "auto" (where DALI decodes and stitches).
        seed: the data order, the same on every rank; None draws one, shared by the ranks
            (detectron2's SEED -1), logged and kept in the state, so a resume reads on with it.
        shard_id, num_shards: this rank's share of every epoch; by default torch.distributed's
            rank and world size when it is initialised (detectron2's launch, torchrun), else
            the whole dataset.
        output: "detectron2" (DatasetMapper's dicts) or "torchvision" ((images, targets)).
        controller: decides each batch's kind (dst_dali.controller); see watch().
        labels: torchvision's labels, "contiguous" (1..C, num_classes C + 1) or "coco" (the
            dataset's category ids, num_classes 91 for COCO).
        masks: with instance masks (detectron2's MODEL.MASK_ON).
        pad_value: collage padding, in image_format order; default the pixel mean.
        num_threads: DALI CPU threads of each kind, shared by its pipelines.
        pipelines: DALI pipelines of each kind, making its batches in turn; default 2 on the
            CPU (at most num_threads), 1 on a GPU. A pipeline runs one batch at a time, and
            with a few images a batch its threads wait on the slowest image: two pipelines of
            one thread keep both busy (bench/results/throughput.md). The batches are the same
            whatever the number.
        bad_images: what an image that does not decode, or decodes to another size than its
            entry's, does when met: "stop" (raise, naming the file) or "skip" (log it and go
            on). Either way it is set aside for the rest of the run (see `set_aside`), and its
            batch comes again with another image of the dataset in its place, so the good
            images of that batch are not lost (also when a caller catches "stop"'s error).
            Missing or unreadable files, and images larger than their entry says, are bad
            images alike, whenever they are met.
        max_pixels: an image whose entry or file header gives more pixels is a bad image
            (default PIL's error threshold, 178,956,970); None: no limit.
        cache_dir: where the dataset's checked index is cached, built once and memory-mapped
            by every rank and later run (dst_dali.index_cache); default $DST_DALI_CACHE, else
            $XDG_CACHE_HOME/dst_dali (~/.cache/dst_dali).
        endless: `for batch in loader` never ends (for loops that iterate once and count
            iterations themselves, as detectron2's SimpleTrainer); default one epoch.
        signal, decision: how watch() measures and decides unless told (see watch()).

    Inside a loop that knows nothing of DST (detectron2's tools/lazyconfig_train_net.py),
    iterating the loader with a FeedbackController and no watch() finds the model by itself:
    the first module called with a batch as delivered is watched (dst_dali.stock_loops). With
    detectron2's EventStorage open, dst/* scalars go to it (metrics.json), and a resumed
    trainer's start iteration moves both streams past what the run can have read
    (start_after; an exact resume needs the loader's state, as DSTHook keeps it).

    Two DALI pipelines prefetch side by side: regular (k = 1: detectron2's ResizeShortestEdge +
    RandomFlip) and collage (k images a sample, all of one orientation, on a canvas the size of
    a regular image). Each `next_batch()` asks the controller, which has seen the previous
    iteration's loss, and runs only the chosen pipeline; the other one's prefetched batches wait
    for their turn, so the decision applies at the very next iteration and no decoded batch is
    thrown away.

    Each stream reads every image of the dataset once an epoch, spread over the ranks
    (dst_dali.sampler); one epoch of the regular stream on this rank is `len(loader)`
    iterations, and `epochs_read()` tells how far each stream has got.
    """

    def __init__(self, images: Optional[str] = None, annotations: Optional[str] = None,
                 batch_size: int = 2, k: int = 4,
                 min_size: Sequence[int] = (640, 672, 704, 736, 768, 800), max_size: int = 1333,
                 flip_prob: float = 0.5, device: str = "auto", seed: Optional[int] = 0,
                 shard_id: Optional[int] = None, num_shards: Optional[int] = None,
                 output: str = "detectron2",
                 controller: Optional[FeedbackController] = None,
                 image_format: Optional[str] = None,
                 aspect_ratio_grouping: Optional[bool] = None, masks: bool = False,
                 labels: str = "contiguous", pad_value: Optional[Sequence[float]] = None,
                 bad_images: str = "stop", num_threads: int = 2,
                 pipelines: Optional[int] = None, prefetch: int = 2,
                 device_id: Optional[int] = None, index: Optional[DatasetIndex] = None,
                 endless: bool = False, signal: str = "reg", decision: str = "per_rank",
                 max_pixels: Optional[int] = MAX_PIXELS, cache_dir: Optional[str] = None):
        if not _integer(batch_size) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r}: must be a positive integer")
        if seed is not None and (not _integer(seed) or seed < 0):
            raise ValueError(f"seed={seed!r}: must be an integer >= 0, or None to draw one")
        if isinstance(min_size, (int, float)) or not all(_integer(v) for v in min_size) or \
                not _integer(max_size):
            raise ValueError(f"min_size={min_size!r}, max_size={max_size!r}: min_size is a "
                             "sequence of integers (the short sides drawn from, e.g. (800,)), "
                             "max_size an integer")
        check_k(k)
        if output not in OUTPUTS:
            raise ValueError(f"output={output!r}: must be one of {OUTPUTS}")
        shard_id, num_shards = shard_of_rank(shard_id, num_shards)
        self.seed_drawn = seed is None
        if self.seed_drawn:
            seed = shared_random_seed(num_shards)
            logger.info("DSTLoader: seed=None, drew seed %d (the same on every rank; kept in "
                        "the loader's state)", seed)
        if not min_size or any(s <= 0 for s in min_size) or max_size <= 0:
            raise ValueError(f"min_size={min_size}, max_size={max_size}: must be positive")
        if not 0.0 <= flip_prob <= 1.0:
            raise ValueError(f"flip_prob={flip_prob}: must be in [0, 1]")
        image_format = image_format or ("BGR" if output == "detectron2" else "RGB")
        if image_format not in ("BGR", "RGB"):
            raise ValueError(f"image_format={image_format!r}: must be 'BGR' or 'RGB'")
        if output == "torchvision" and image_format != "RGB":
            raise ValueError("output='torchvision' takes RGB images: leave image_format unset")
        if labels not in LABELS:
            raise ValueError(f"labels={labels!r}: must be one of {LABELS}")
        if bad_images not in BAD_IMAGES:
            raise ValueError(f"bad_images={bad_images!r}: must be one of {BAD_IMAGES}")
        check_watch_args(signal, decision)
        for name, value in (("num_threads", num_threads), ("pipelines", pipelines),
                            ("prefetch", prefetch), ("max_pixels", max_pixels)):
            if value is not None and (not _integer(value) or value < 1):
                raise ValueError(f"{name}={value!r}: must be a positive integer")
        if pad_value is None:
            pad_value = PIXEL_MEAN_RGB[::-1] if image_format == "BGR" else PIXEL_MEAN_RGB
        pad_value = [float(v) for v in pad_value]
        if len(pad_value) not in (1, 3):
            raise ValueError(f"pad_value={pad_value}: give 1 or 3 values ({image_format} order)")
        if index is None and (images is None or annotations is None):
            raise ValueError("give images and annotations (a COCO-format dataset), or use "
                             "DSTLoader.from_detectron2(name) for a registered one")
        self.index = index or load_coco_index(images, annotations, cache_dir=cache_dir,
                                              polygons=masks)
        if masks and not self.index.polygons_read:
            raise ValueError("masks=True: the index was built with polygons=False")
        if masks and self.index.rle_annotations:
            raise DatasetError(self.index.source, [
                f"{where}: an RLE mask on a non-crowd annotation; masks=True trains on polygons "
                "(convert it to polygons, or train without masks)"
                for where in self.index.rle_annotations])
        if labels == "coco" and 0 in self.index.category_ids:
            raise ValueError(
                f"labels='coco': {self.index.source} has a category with id 0 (a dataset "
                "without COCO ids, as a registered list of dicts or PASCAL VOC), and torchvision "
                "reads label 0 as the background, so that class would never be learned; use "
                "labels='contiguous' (1..C, num_classes=C + 1)")
        # torchvision's labels: 1..C (contiguous + 1, 0 is background) or COCO category ids
        self._label_ids = (np.asarray(self.index.category_ids, np.int64) if labels == "coco"
                           else None)
        self.batch_size, self.k = batch_size, k
        self.output, self.masks = output, masks
        self.bad_images = bad_images
        self.bad = BadImages(self.index)
        self.controller = controller
        self.device = resolve_device(device)
        if pipelines is None:
            pipelines = default_pipelines(self.device, num_threads)
        self.aspect_ratio_grouping = (output == "detectron2" if aspect_ratio_grouping is None
                                      else aspect_ratio_grouping)
        self._config = dict(dataset=self.index.source, batch_size=batch_size, k=k,
                            min_size=list(min_size), max_size=max_size, flip_prob=flip_prob,
                            seed=seed, shard_id=shard_id, num_shards=num_shards,
                            image_format=image_format, pipelines=pipelines,
                            threads_per_pipeline=max(1, num_threads // pipelines),
                            prefetch=prefetch, device_id=device_id, pad_value=pad_value,
                            max_pixels=max_pixels,
                            aspect_ratio_grouping=self.aspect_ratio_grouping)
        n = len(self.index)
        self.shard_size = n * (shard_id + 1) // num_shards - n * shard_id // num_shards
        if k * batch_size > self.shard_size:
            raise ValueError(
                f"batch_size={batch_size}: a collage batch needs k*batch_size={k * batch_size} "
                f"distinct images, but shard {shard_id} of {num_shards} holds "
                f"{self.shard_size} (of {n} usable images in {self.index.source})")
        self.streams = {kind: BatchStream(kind, self.index, self.bad, self._config, k=k,
                                          grouped=self.aspect_ratio_grouping,
                                          device=self.device, masks=masks,
                                          bad_images=bad_images) for kind in KINDS}
        self.closed = False
        self._restart(dict.fromkeys(KINDS, 0))
        self.iteration = 0
        self.last_kind: Optional[str] = None
        self.last_boxes: list = []
        self.last_image_ids: list = []
        self.feed = ControllerFeed()  # r of each delivered batch to the controller
        self.endless_iteration, self._watch_args = endless, (signal, decision)
        self._finder: Optional[ModelFinder] = None
        self.log_scalars = True  # dst/* into detectron2's EventStorage; DSTHook does its own
        self._run_kinds = dict.fromkeys(KINDS, 0)  # batches delivered by this object

    @property
    def set_aside(self) -> dict:
        """Dataset position -> why its image is not read, for the rest of the run."""
        return self.bad.set_aside

    @classmethod
    def from_detectron2(cls, datasets, **kwargs) -> "DSTLoader":
        """A DSTLoader over datasets registered in detectron2's DatasetCatalog (a name or a
        list of names, concatenated: COCO json, the builtin PASCAL VOC sets, a registered list
        of dicts); kwargs as for DSTLoader."""
        return cls(index=detectron2_dataset_index(datasets, kwargs.get("cache_dir"),
                                                  polygons=kwargs.get("masks", False)), **kwargs)

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
        signal = signal or self._watch_args[0]
        decision = decision or self._watch_args[1]
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
        return self.feed.observe(self.controller, self.last_boxes)

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
        if self.output == "detectron2":
            return [to_detectron2(s, self.masks) for s in samples]
        pairs = [to_torchvision(s, self.masks, self._label_ids) for s in samples]
        return [p[0] for p in pairs], [p[1] for p in pairs]

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
        for _ in (itertools.count() if self.endless_iteration else range(len(self))):
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
                "config": {key: self._config[key] for key in SEQUENCE_KEYS},
                "iteration": self.iteration, "last_kind": self.last_kind,
                "delivered": {kind: s.delivered for kind, s in self.streams.items()},
                "set_aside": [[self.index.image_ids[p], why]
                              for p, why in sorted(self.set_aside.items())],
                "controller": self.controller.state_dict() if self.controller else None}

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
        saved_seed = state["config"].get("seed")
        adopt_seed = self.seed_drawn and saved_seed != self._config["seed"]
        diff = {key: (saved, self._config.get(key)) for key, saved in state["config"].items()
                if self._config.get(key) != saved and not (key == "seed" and adopt_seed)}
        if diff:
            raise ValueError(f"loader state was saved with other settings (saved, now): {diff}")
        if adopt_seed:  # the run drew its seed once; a resume reads on with that one
            logger.info("DSTLoader: resuming with the state's seed %d", saved_seed)
            self._config["seed"] = saved_seed
            for stream in self.streams.values():
                stream.sampler = stream.new_sampler()
        position_of = {image_id: p for p, image_id in enumerate(self.index.image_ids)}
        self.bad.set_aside = {position_of[image_id]: why for image_id, why in
                              state.get("set_aside", [])}
        self._restart(state["delivered"])
        self.iteration = state["iteration"]
        self.last_kind = state["last_kind"]
        self.feed.resume(state.get("feedback_due"))
        if self.controller is not None and state["controller"] is not None:
            self.controller.load_state_dict(state["controller"])
