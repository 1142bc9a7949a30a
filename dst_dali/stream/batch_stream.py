"""BatchStream: one kind's batches (regular or collage) from its DALI pipelines, each batch a
function of its place in the stream, whatever the pipelines, bad images and restarts."""
import ctypes
import logging
from collections import deque
from typing import List, NamedTuple

import numpy as np
import torch
from nvidia.dali import pipeline_def

from dst_dali.pipelines import stitch
from dst_dali.pipelines.stitch import component_inputs, stitched_batch

from ..data.checks import dali_cause
from ..data.image_files import NO_ANNOTATIONS, STAND_IN, read_image_file
from ..data.index import DatasetIndex
from ..op.device import dali_device_id
from .bad_images import BadImages
from .formats import Sample
from .kinds import COLLAGE, KINDS, REGULAR
from .rng import DRAW, generator
from .sampler import GroupSampler

logger = logging.getLogger("dst_dali.batch_stream")  # the name users filter logs by


class _Group(NamedTuple):
    """What the feed gave a pipeline for one batch: dataset positions (sample b, component j
    at b * k + j), the draws for each, and the images it could not give ({position: why}:
    their stand-ins make the batch decode, which is then made again without them)."""
    positions: List[int]
    short_side: np.ndarray
    flip: np.ndarray
    flagged: dict


def _return_freed_heap() -> None:
    """Hands the C heap's free pages back to the system (glibc's malloc_trim): pipelines rebuilt
    after each bad image otherwise leave the process's memory a little higher every time."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def gpu_to_torch(sample):
    """One DALI GPU sample as a CUDA tensor on the GPU the pipeline ran on, sharing its memory
    (docs/design.md, "The hand-off to torch"): DALI's dynamic executor never reuses an output
    buffer something still refers to, and torch.from_dlpack hands DALI torch's current stream
    of that GPU, into which DALI puts an event after the sample's work: torch's later kernels
    wait for it on the GPU, the host never does, and nothing is copied."""
    with torch.cuda.device(sample.device_id()):
        return torch.from_dlpack(sample)


class BatchStream:
    """The batches of one kind on this rank, in order.

    Pipeline w of P makes the groups at places first + w, first + w + P, ... of the stream,
    delivered in turn, so `delivered` is always a prefix of the stream. A group's images come
    from the sampler and its short sides and flips from (seed, kind, rank, place) alone, so a
    restart at any place (a resume, a bad image set aside) makes the same batches again.

    Args:
        kind: "regular" (k = 1) or "collage" (k images a sample).
        index, bad: the dataset and the run's set-aside images (shared by both kinds).
        settings: the loader's LoaderSettings, every default resolved (its seed, shard,
            device, pipelines, image format and padding as the loader decided them).
    """

    def __init__(self, kind: str, index: DatasetIndex, bad: BadImages, settings):
        self.kind, self.index, self.bad, self.settings = kind, index, bad, settings
        self.k = 1 if kind == REGULAR else settings.k
        # regular groups share an orientation with aspect-ratio grouping; collages always
        self.grouped = kind == COLLAGE or settings.aspect_ratio_grouping
        self.device, self.masks = settings.device, settings.masks
        # annotations planned from the files' headers, the pixels decoded on the device: the
        # GPU graph's way (the CPU graph can be asked to run it too)
        self.plan_from_headers = self.device == "gpu"
        self.sampler = self.new_sampler()
        self.first = self.delivered = 0
        self._drawn: dict = {}  # place -> group, drawn for a later pipeline
        self._next_fed: List[int] = []
        self._pending: List[deque] = []  # per pipeline: groups fed to DALI, not yet delivered
        self.pipes: list = []

    def new_sampler(self) -> GroupSampler:
        """The sampler of the settings' seed."""
        s, source = self.settings, self.index.source
        size = self.k * s.batch_size
        try:
            sampler = GroupSampler(self.index.landscape if self.grouped else None,
                                   len(self.index), size, seed=s.seed,
                                   stream=KINDS.index(self.kind), shard_id=s.shard_id,
                                   num_shards=s.num_shards)
        except ValueError as e:
            raise ValueError(f"batch_size={s.batch_size}: {self.kind} batches of {size} "
                             f"images: {e} ({source})") from None
        if sampler.left_out:
            logger.warning("%s: %d image(s) of an orientation with fewer than %d images are "
                           "left out of %s batches", source, sampler.left_out, size, self.kind)
        return sampler

    def reseed(self, settings) -> None:
        """Reads on under `settings`' seed (a resume adopting the saved one)."""
        self.settings = settings
        self.sampler = self.new_sampler()

    # -- what each batch reads ---------------------------------------------------------------
    def _draws(self, number: int, size: int):
        """The short side and flip of each image of a group, drawn as detectron2 draws them per
        image, from the seed, the rank and the group's place in the stream alone."""
        s = self.settings
        rng = generator(s.seed, DRAW, KINDS.index(self.kind), s.shard_id, number)
        short = rng.choice(np.asarray(s.min_size, np.float32), size=size)
        flip = (rng.random(size) < s.flip_prob).astype(np.int32)
        return short, flip

    def _group_at(self, place: int) -> List[int]:
        """The dataset positions of the stream's group at `place` (from 0); the sampler draws
        in order, so groups drawn on the way wait for their pipeline."""
        while self.sampler.position <= place:
            at = self.sampler.position
            self._drawn[at] = next(self.sampler)
        return self._drawn.pop(place)

    def _feed(self, w: int):
        """The inputs of pipeline w's next batch (component_inputs per component, then
        short_side and flip): called by DALI, in order, as it prefetches."""
        s, k, B = self.settings, self.k, self.settings.batch_size
        place = self._next_fed[w]
        self._next_fed[w] += len(self.pipes)
        number = place + 1  # the random draws are keyed by the group's number from 1
        positions = self.bad.replaced(
            self._group_at(place), self.grouped,
            [s.seed, KINDS.index(self.kind), s.shard_id, number], self.kind)
        short, flip = self._draws(number, len(positions))
        ix, encoded, flagged = self.index, [], {}
        for p in positions:  # a file that fails here is flagged, never raised out of DALI
            data, why = read_image_file(ix.file_paths[p], ix.sizes[p], s.max_pixels)
            if why is not None:
                flagged[p] = why
            encoded.append(STAND_IN if why is not None else data)

        def field(name: str, slot: int):
            p = positions[slot]
            if name == "encoded":
                return encoded[slot]
            return NO_ANNOTATIONS[name] if p in flagged else getattr(ix, name)[p]
        inputs = [[field(name, b * k + j) for b in range(B)]
                  for name in component_inputs(self.masks) for j in range(k)]
        inputs.append([short[b * k:(b + 1) * k] for b in range(B)])
        inputs.append([flip[b * k:(b + 1) * k] for b in range(B)])
        self._pending[w].append(_Group(positions, short, flip, flagged))
        return inputs

    # -- pipelines ---------------------------------------------------------------------------
    def _build(self, w: int):
        s, k = self.settings, self.k
        local = s.device_id if s.device_id is not None else (
            torch.cuda.current_device() if self.device == "gpu" else 0)

        @pipeline_def(batch_size=s.batch_size, num_threads=max(1, s.num_threads // s.pipelines),
                      device_id=dali_device_id(self.device, local),
                      prefetch_queue_depth=s.prefetch,
                      exec_dynamic=True)  # outputs outlive run(): see samples
        def graph():
            sb = stitched_batch(lambda: self._feed(w), k=k, max_size=s.max_size,
                                interp="linear" if k == 1 else "nearest", device=self.device,
                                image_format=s.image_format, pad_value=list(s.pad_value),
                                polygons=self.masks, plan_from_headers=self.plan_from_headers)
            o = sb.out
            return (sb.shapes, o.image, o.boxes, o.labels, o.origin, o.placement,
                    *((o.polygons, o.vertices) if self.masks else ()))

        pipe = graph()
        pipe.build()
        return pipe

    def restart(self, first: int) -> None:
        """New pipelines, the stream fed from its batch `first` on."""
        self.shut_down()
        P = self.settings.pipelines
        self.first = self.delivered = first
        self.sampler.seek(first)
        self._drawn.clear()
        self._next_fed = [first + w for w in range(P)]
        self._pending = [deque() for _ in range(P)]
        self.pipes = [self._build(w) for w in range(P)]

    def shut_down(self) -> None:
        """Ends the pipelines and their threads now, not whenever the garbage collector frees
        them (their feed refers back to this stream)."""
        pipes, self.pipes, self._pending = self.pipes, [], []
        for pipe in pipes:
            pipe._shutdown()  # DALI's own teardown (what Pipeline.__del__ calls)
        if pipes:
            _return_freed_heap()

    def _set_aside(self, bad: dict) -> str:
        """Sets the group's bad images aside and restarts the pipelines at the failed group,
        which the feed now gives with replacements. Returns the message."""
        message = self.bad.record(bad)
        self.restart(self.delivered)
        return message

    def _run(self):
        """The next batch from the pipeline whose turn it is: (its group, its outputs). A bad
        image is set aside and named, in an error ("stop") or in the log ("skip": then the
        batch is made again)."""
        while True:
            w = (self.delivered - self.first) % len(self.pipes)
            pending = self._pending[w]
            try:
                shapes, *outputs = self.pipes[w].run()
            except RuntimeError as e:
                # a file that does not decode, or one smaller than its entry (whose boxes then
                # lie outside it): found by decoding the group's files again, one by one
                group = pending[0] if pending else None
                bad = self.bad.diagnose(group.positions, group.flagged,
                                        stitch.header_shape if self.plan_from_headers
                                        else None) if group else {}
                if not bad:  # not an image's fault; rebuilt for a caller who retries
                    files = [self.index.file_paths[p] for p in group.positions] if group else []
                    self.restart(self.delivered)
                    raise RuntimeError(f"DSTLoader: the {self.kind} pipeline stopped reading "
                                       f"{', '.join(files)} ({dali_cause(e)})") from e
                message = self._set_aside(bad)
                error = RuntimeError(f"DSTLoader: the {self.kind} pipeline stopped: {message}; "
                                     "bad_images='skip' goes on")
            else:
                group = pending[0]
                hw = np.array(shapes.as_tensor())[..., :2]  # (B, k, 2), then k planned
                decoded = hw[:, :self.k].reshape(-1, 2)  # in the group's order
                bad = dict(group.flagged) or self.bad.size_mismatches(group.positions, decoded)
                if not bad and self.plan_from_headers:
                    bad = self.bad.header_mismatches(group.positions, decoded,
                                                     hw[:, self.k:].reshape(-1, 2))
                if not bad:
                    self.delivered += 1
                    return pending.popleft(), outputs
                message = self._set_aside(bad)
                error = (RuntimeError if group.flagged else ValueError)(
                    f"DSTLoader: {message}; fix the entry or the file (python -m "
                    "dst_dali.check_dataset finds them all), or bad_images='skip'")
            if self.settings.bad_images == "stop":
                raise error
            logger.warning("DSTLoader: skipping %s", message)

    def samples(self) -> List[Sample]:
        """The stream's next batch as Samples. Images are views of DALI's output buffers, on
        the CPU and the GPU alike (gpu_to_torch): DALI's dynamic executor hands each run's
        outputs over to the caller and never reuses a buffer something still refers to (a
        collage is about 3 MB, and copying it costs about two thirds of stitching it:
        bench/collage_op.py)."""
        group, (image, *annotations) = self._run()
        gpu = self.device == "gpu"  # the image only: annotations are planned on the CPU
        boxes, labels, origin, place, *polygon_outputs = annotations
        k = self.k
        samples = []
        for i in range(len(image)):
            positions = group.positions[i * k:(i + 1) * k]
            samples.append(Sample(
                image=gpu_to_torch(image[i]) if gpu else torch.from_numpy(np.asarray(image[i])),
                boxes=np.array(boxes[i]).reshape(-1, 4), labels=np.array(labels[i]).reshape(-1),
                polygons=(np.array(polygon_outputs[0][i]).reshape(-1, 3) if self.masks
                          else np.zeros((0, 3), np.int32)),
                vertices=(np.array(polygon_outputs[1][i]).reshape(-1, 2) if self.masks
                          else np.zeros((0, 2), np.float32)),
                image_ids=[self.index.image_ids[p] for p in positions],
                short_side=group.short_side[i * k:(i + 1) * k],
                placement=np.array(place[i]).reshape(-1, 4),
                box_component=np.array(origin[i]).reshape(-1, 2)[:, 0],
                flip=group.flip[i * k:(i + 1) * k], kind=self.kind,
                original_size=tuple(self.index.sizes[positions[0]]) if self.kind == REGULAR
                else None))
        return samples
