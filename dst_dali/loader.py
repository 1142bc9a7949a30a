"""DSTLoader: regular and collage batches from two prefetching DALI pipelines, the kind of each
iteration chosen by the feedback controller, in detectron2's or torchvision's format."""
import logging
import math
from collections import deque
from typing import Optional, Sequence

import numpy as np
import torch
from nvidia.dali import pipeline_def

from .controller import COLLAGE, REGULAR, FeedbackController
from .dataset import load_coco_index
from .device import dali_device_id, resolve_device
from .formats import Sample, to_detectron2, to_torchvision
from .ops import check_k

logger = logging.getLogger(__name__)
KINDS = (REGULAR, COLLAGE)
OUTPUTS = ("detectron2", "torchvision")
STATE_VERSION = 1
# Settings that decide the sequence of batches: a saved state resumes only under the same ones
# (paths, threads and prefetch depth may change, e.g. on another node).
SEQUENCE_KEYS = ("batch_size", "k", "min_size", "max_size", "flip_prob", "seed", "shard_id",
                 "num_shards", "image_format", "aspect_ratio_grouping")


def _dali_cause(error: Exception) -> str:
    """The operator's own message out of DALI's error report (which opens with a traceback of
    the pipeline definition): e.g. "Failed to decode sample #0 : 000000000009.jpg"."""
    text = str(error)
    cause = text.split("encountered:", 1)[-1]
    lines = [ln.strip() for ln in cause.splitlines()
             if ln.strip() and "pipeline object is no longer valid" not in ln]
    return " ".join(lines) or text


def _gpu_to_torch(tensor):
    """A copy of one DALI GPU sample as a CUDA tensor (DALI reuses its buffers)."""
    from nvidia.dali.plugin.pytorch import feed_ndarray
    out = torch.empty(tensor.shape(), dtype=torch.uint8, device="cuda")
    feed_ndarray(tensor, out, cuda_stream=torch.cuda.current_stream())
    return out


class DSTLoader:
    """Iterates batches of a COCO-format dataset for Dynamic Scale Training.

    Two DALI pipelines prefetch side by side: regular (k = 1: detectron2's ResizeShortestEdge +
    RandomFlip) and collage (k images a sample). Each `next_batch()` asks the controller, which
    has seen the previous iteration's loss, and runs only the chosen pipeline; the other one's
    prefetched batches wait for their turn, so the decision applies at the very next iteration
    and no decoded batch is thrown away.

    One pass of the regular pipeline over this rank's shard is `len(loader)` iterations; both
    pipelines walk the shard in a fresh permutation every epoch (the collage one through k
    sub-shards), and `epochs_read()` tells how far each has got.
    """

    def __init__(self, images: str, annotations: str, batch_size: int = 2, k: int = 4,
                 min_size: Sequence[int] = (640, 672, 704, 736, 768, 800), max_size: int = 1333,
                 flip_prob: float = 0.5, device: str = "auto", seed: int = 0, shard_id: int = 0,
                 num_shards: int = 1, output: str = "detectron2",
                 controller: Optional[FeedbackController] = None,
                 image_format: Optional[str] = None,
                 aspect_ratio_grouping: Optional[bool] = None, masks: bool = False,
                 num_threads: int = 2, prefetch: int = 2, device_id: Optional[int] = None):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r}: must be a positive integer")
        check_k(k)
        if output not in OUTPUTS:
            raise ValueError(f"output={output!r}: must be one of {OUTPUTS}")
        if not 0 <= shard_id < num_shards:
            raise ValueError(f"shard_id={shard_id}, num_shards={num_shards}: need "
                             "0 <= shard_id < num_shards")
        if not min_size or any(s <= 0 for s in min_size) or max_size <= 0:
            raise ValueError(f"min_size={min_size}, max_size={max_size}: must be positive")
        if not 0.0 <= flip_prob <= 1.0:
            raise ValueError(f"flip_prob={flip_prob}: must be in [0, 1]")
        image_format = image_format or ("BGR" if output == "detectron2" else "RGB")
        if image_format not in ("BGR", "RGB"):
            raise ValueError(f"image_format={image_format!r}: must be 'BGR' or 'RGB'")
        if output == "torchvision" and image_format != "RGB":
            raise ValueError("output='torchvision' takes RGB images: leave image_format unset")
        self.index = load_coco_index(images, annotations)
        self.batch_size, self.k = batch_size, k
        self.output, self.masks = output, masks
        self.controller = controller
        self.device = resolve_device(device)
        self.aspect_ratio_grouping = (output == "detectron2" if aspect_ratio_grouping is None
                                      else aspect_ratio_grouping)
        self._config = dict(images=images, annotations=annotations, batch_size=batch_size, k=k,
                            min_size=list(min_size), max_size=max_size, flip_prob=flip_prob,
                            seed=seed, shard_id=shard_id, num_shards=num_shards,
                            image_format=image_format, num_threads=num_threads,
                            prefetch=prefetch, device_id=device_id,
                            aspect_ratio_grouping=self.aspect_ratio_grouping)
        self._pipes = {kind: self._build(kind) for kind in KINDS}
        n = self._pipes[REGULAR].reader_meta("reader0")["epoch_size"]
        self.shard_size = n * (shard_id + 1) // num_shards - n * shard_id // num_shards
        if batch_size > self.shard_size // k:
            raise ValueError(
                f"batch_size={batch_size}: a collage batch needs k*batch_size={k * batch_size} "
                f"distinct images, but shard {shard_id} of {num_shards} holds "
                f"{self.shard_size} (of {n} usable images in {annotations})")
        self.iteration = 0
        self.last_kind: Optional[str] = None
        self.last_boxes: list = []
        self.last_image_ids: list = []
        self._images_read = {REGULAR: 0, COLLAGE: 0}
        self._ready = {kind: deque() for kind in KINDS}       # batches of Samples
        self._buckets = {kind: {True: [], False: []} for kind in KINDS}  # landscape?

    # -- pipelines ---------------------------------------------------------------------------
    def _build(self, kind: str, checkpoint: Optional[str] = None):
        from .pipelines.stitch import stitched_batch
        c = self._config
        k = 1 if kind == REGULAR else c["k"]
        local = c["device_id"] if c["device_id"] is not None else (
            torch.cuda.current_device() if self.device == "gpu" else 0)

        @pipeline_def(batch_size=c["batch_size"], num_threads=c["num_threads"],
                      device_id=dali_device_id(self.device, local),
                      prefetch_queue_depth=c["prefetch"], enable_checkpointing=True,
                      seed=c["seed"], exec_dynamic=True)  # outputs outlive run(): see _samples
        def graph():
            sb = stitched_batch(
                c["images"], c["annotations"], self.index.category_ids, k=k,
                min_sizes=c["min_size"], max_size=c["max_size"], flip_prob=c["flip_prob"],
                interp="linear" if k == 1 else "nearest", device=self.device,
                image_format=c["image_format"], seed=c["seed"], shard_id=c["shard_id"],
                num_shards=c["num_shards"])
            o = sb.out
            return (o.image, o.boxes, o.labels, o.polygons, o.vertices, o.origin, o.placement,
                    sb.short_side, sb.flip, *sb.image_ids)

        pipe = graph(checkpoint=checkpoint) if checkpoint else graph()
        pipe.build()
        return pipe

    def _samples(self, kind: str):
        """Runs the kind's pipeline once: its batch as Samples. CPU images are views of DALI's
        output buffers, not copies: DALI's dynamic executor hands each run's outputs over to
        the caller and never reuses a buffer something still refers to (a collage is 3-4 MB,
        and copying it costs about two thirds of stitching it: bench/collage_op.py)."""
        try:
            image, boxes, labels, polys, verts, origin, place, short, flip, *ids = \
                self._pipes[kind].run()
        except RuntimeError as e:
            raise RuntimeError(f"DSTLoader: the {kind} pipeline stopped: {_dali_cause(e)} "
                               f"(dataset {self._config['annotations']})") from e
        gpu = self.device == "gpu"
        if gpu:
            boxes, labels, polys, verts, origin, place = (
                x.as_cpu() for x in (boxes, labels, polys, verts, origin, place))
        samples = []
        for i in range(len(image)):
            ids_i = [int(np.array(t[i]).reshape(-1)[0]) for t in ids]
            samples.append(Sample(
                image=_gpu_to_torch(image[i]) if gpu else torch.from_numpy(np.asarray(image[i])),
                boxes=np.array(boxes[i]).reshape(-1, 4), labels=np.array(labels[i]).reshape(-1),
                polygons=np.array(polys[i]).reshape(-1, 3),
                vertices=np.array(verts[i]).reshape(-1, 2),
                image_ids=ids_i, short_side=np.array(short[i]).reshape(-1),
                placement=np.array(place[i]).reshape(-1, 4),
                box_component=np.array(origin[i]).reshape(-1, 2)[:, 0],
                flip=np.array(flip[i]).reshape(-1), kind=kind,
                original_size=self.index.image_sizes[ids_i[0]] if kind == REGULAR else None))
        self._images_read[kind] += len(image) * (1 if kind == REGULAR else self.k)
        return samples

    def _next_group(self, kind: str):
        """The next batch of `kind`: a DALI batch as is, or, with aspect-ratio grouping,
        batch_size samples of one orientation (the others wait in their bucket)."""
        while not self._ready[kind]:
            samples = self._samples(kind)
            if not self.aspect_ratio_grouping:
                self._ready[kind].append(samples)
                continue
            for s in samples:
                bucket = self._buckets[kind][s.landscape]
                bucket.append(s)
                if len(bucket) == self.batch_size:
                    self._ready[kind].append(list(bucket))
                    bucket.clear()
        return self._ready[kind].popleft()

    # -- iteration ---------------------------------------------------------------------------
    def next_batch(self, kind: Optional[str] = None):
        """The next batch; its kind from the controller unless forced ("regular"/"collage")."""
        if kind is None:
            collage = self.controller is not None and self.controller.wants_collage()
            kind = COLLAGE if collage else REGULAR
        if kind not in KINDS:
            raise ValueError(f"kind={kind!r}: must be one of {KINDS}")
        samples = self._next_group(kind)
        self.iteration += 1
        self.last_kind = kind
        self.last_boxes = [s.boxes for s in samples]  # for the "input" signal
        self.last_image_ids = [list(s.image_ids) for s in samples]
        if self.output == "detectron2":
            return [to_detectron2(s, self.masks) for s in samples]
        pairs = [to_torchvision(s, self.masks) for s in samples]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    def __len__(self) -> int:
        return math.ceil(self.shard_size / self.batch_size)

    def __iter__(self):
        """One epoch's worth of iterations (len(self)), continuing the pipelines' streams."""
        for _ in range(len(self)):
            yield self.next_batch()

    def epochs_read(self) -> dict:
        """Passes over this rank's shard each pipeline has read (prefetch not counted)."""
        return {kind: n / self.shard_size for kind, n in self._images_read.items()}

    # -- checkpointing -----------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything a resumed run needs to continue with the identical batches: DALI's
        checkpoints of both pipelines (reader positions, random generators), the batches
        waiting in grouping buckets, the counters and the controller."""
        return {"version": STATE_VERSION,
                "config": {key: self._config[key] for key in SEQUENCE_KEYS},
                "iteration": self.iteration, "last_kind": self.last_kind,
                "images_read": dict(self._images_read),
                "pipelines": {kind: p.checkpoint() for kind, p in self._pipes.items()},
                "ready": {kind: list(q) for kind, q in self._ready.items()},
                "buckets": {kind: {o: list(b) for o, b in bs.items()}
                            for kind, bs in self._buckets.items()},
                "controller": self.controller.state_dict() if self.controller else None}

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"loader state version {state.get('version')!r}: this DSTLoader "
                             f"reads version {STATE_VERSION}")
        diff = {key: (saved, self._config[key]) for key, saved in state["config"].items()
                if self._config[key] != saved}
        if diff:
            raise ValueError(f"loader state was saved with other settings (saved, now): {diff}")
        self._pipes = {kind: self._build(kind, state["pipelines"][kind]) for kind in KINDS}
        self.iteration = state["iteration"]
        self.last_kind = state["last_kind"]
        self._images_read = dict(state["images_read"])
        self._ready = {kind: deque(q) for kind, q in state["ready"].items()}
        self._buckets = {kind: {o: list(b) for o, b in bs.items()}
                         for kind, bs in state["buckets"].items()}
        if self.controller is not None and state["controller"] is not None:
            self.controller.load_state_dict(state["controller"])
