"""DSTLoader's settings: one frozen object, every field checked once, by the rule beside its
definition, with a message naming the argument and its value. detectron2's `DST:` section is
checked by the same rules under its own key names (dst_dali.integrations.detectron2.config).

    LoaderSettings(batch_size=4, k=4)          # a ValueError names any field no run could use
    DSTLoader(images, annotations, batch_size=4, k=4)   # the same, as keyword arguments
"""
import dataclasses
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

from .data.image_files import MAX_PIXELS
from .data.index import is_integer, is_number
from .feedback.signal_table import DECISIONS, WATCH_SIGNALS
from .op.collage import check_k
from .op.device import DEVICES
from .stream.bad_images import BAD_IMAGES

OUTPUTS = ("detectron2", "torchvision", "ultralytics")
LABELS = ("contiguous", "coco")
IMAGE_FORMATS = ("BGR", "RGB")
# The padding of a collage's cells: the pixel mean, which normalization turns into the zeros
# detectron2 and torchvision pad batches with. In RGB order, 0-255 (detectron2's default
# PIXEL_MEAN is this in BGR; torchvision's image_mean is this / 255).
PIXEL_MEAN_RGB = (123.675, 116.28, 103.53)
YOLO_PAD = 114.0  # Ultralytics' letterbox and mosaic grey


def _one_of(options) -> Callable:
    return lambda v: None if v in options else f"must be one of {options}"


def _positive(v) -> Optional[str]:
    return None if is_integer(v) and v >= 1 else "must be a positive integer"


def _positive_or_none(v) -> Optional[str]:
    return None if v is None else _positive(v)


def _flag(v) -> Optional[str]:
    return None if isinstance(v, bool) else "must be True or False"


def _k(v) -> Optional[str]:
    try:
        check_k(v)
    except ValueError as e:
        return str(e).split(": ", 1)[1]
    return None


# One rule a field: None, or why the value cannot be used. The field's meaning is documented
# on LoaderSettings (and DSTLoader, which takes them as keyword arguments).
RULES: Dict[str, Callable] = {
    "batch_size": _positive,
    "k": _k,
    "flip_prob": lambda v: None if is_number(v) and 0 <= v <= 1 else "must be in [0, 1]",
    "device": _one_of(DEVICES),
    "seed": lambda v: None if v is None or (is_integer(v) and v >= 0) else
    "must be an integer >= 0, or None to draw one",
    "output": _one_of(OUTPUTS),
    "image_format": lambda v: None if v is None or v in IMAGE_FORMATS else
    f"must be one of {IMAGE_FORMATS}",
    "aspect_ratio_grouping": lambda v: None if v is None else _flag(v),
    "masks": _flag,
    "labels": _one_of(LABELS),
    "bad_images": _one_of(BAD_IMAGES),
    "num_threads": _positive,
    "pipelines": _positive_or_none,
    "prefetch": _positive,
    "device_id": lambda v: None if v is None or (is_integer(v) and v >= 0) else
    "must be a CUDA device number, or None",
    "endless": _flag,
    "signal": _one_of(WATCH_SIGNALS),
    "decision": _one_of(DECISIONS),
    "max_pixels": _positive_or_none,
    "cache_dir": lambda v: None if v is None or isinstance(v, str) else "must be a folder path",
    "record_dir": lambda v: None if v is None or isinstance(v, str) else
    "must be a folder path",
    "imgsz": _positive_or_none,
}


def check_setting(field: str, value, label: Optional[str] = None) -> None:
    """A ValueError "LABEL=VALUE: why" when `value` cannot be `field` (label: the name the user
    gave it, default the field's)."""
    why = RULES[field](value)
    if why is not None:
        raise ValueError(f"{label or field}={value!r}: {why}")


@dataclass(frozen=True)
class LoaderSettings:
    """What DSTLoader makes its batches with (the dataset and the controller aside).

    batch_size: samples a batch on this rank (a collage sample holds k images).
    k: images a collage (4, the paper's; 9 or 16).
    min_size, max_size: detectron2's ResizeShortestEdge("choice") of regular images; collage
        components get 1/sqrt(k) of it.
    flip_prob: horizontal flip probability of each image.
    device: "cpu", "gpu" or "auto" (where DALI decodes and stitches).
    seed: the data order, the same on every rank; None draws one, shared by the ranks
        (detectron2's SEED -1), logged and kept in the state, so a resume reads on with it.
    shard_id, num_shards: this rank's share of every epoch; by default torch.distributed's
        rank and world size when it is initialised (detectron2's launch, torchrun), else the
        whole dataset.
    output: "detectron2" (DatasetMapper's dicts), "torchvision" ((images, targets)) or
        "ultralytics" (a batch dict as YOLODataset.collate_fn makes it, every sample
        letterboxed into an imgsz square: dst_dali.stream.formats.to_ultralytics).
    imgsz: output="ultralytics": the square's side (YOLO's imgsz); regular images are resized
        so that their long side is imgsz (min_size and max_size are not used).
    image_format: "BGR" or "RGB"; default detectron2's BGR, torchvision's RGB.
    aspect_ratio_grouping: regular batches of one orientation; default for detectron2 only.
    masks: with instance masks (detectron2's MODEL.MASK_ON).
    labels: torchvision's labels, "contiguous" (1..C, num_classes C + 1) or "coco" (the
        dataset's category ids, num_classes 91 for COCO).
    pad_value: collage padding, in image_format order; default the pixel mean (YOLO's 114
        for output="ultralytics", also its letterbox's).
    bad_images: what an image that is missing, unreadable, does not decode, or decodes to
        another size than its entry's does when met: "stop" (raise, naming the file) or
        "skip" (log it and go on). Either way it is set aside for the rest of the run, and its
        batch comes again with another image in its place, so no good image is lost.
    num_threads: DALI CPU threads of each kind, shared by its pipelines.
    pipelines: DALI pipelines of each kind, making its batches in turn; default 2 on the CPU
        (at most num_threads), 1 on a GPU. The batches are the same whatever the number.
    prefetch: batches each pipeline prepares ahead.
    device_id: the CUDA device of a GPU pipeline; default torch's current one.
    endless: `for batch in loader` never ends (for loops that count iterations themselves).
    signal, decision: how watch() measures r and decides, unless told.
    max_pixels: an image whose entry or file header gives more pixels is a bad image (default
        PIL's error threshold); None: no limit.
    cache_dir: where the dataset's checked index is cached; default $DST_DALI_CACHE, else
        $XDG_CACHE_HOME/dst_dali.
    record_dir: where the feedback record of every iteration the controller saw is written as
        it grows, one CSV a rank (dst_dali.feedback.record), the folder
        `python -m dst_dali.diagnose_feedback` reads; None: kept in memory (loader.record).
    """
    batch_size: int = 2
    k: int = 4
    min_size: Tuple[int, ...] = (640, 672, 704, 736, 768, 800)
    max_size: int = 1333
    flip_prob: float = 0.5
    device: str = "auto"
    seed: Optional[int] = 0
    shard_id: Optional[int] = None
    num_shards: Optional[int] = None
    output: str = "detectron2"
    image_format: Optional[str] = None
    aspect_ratio_grouping: Optional[bool] = None
    masks: bool = False
    labels: str = "contiguous"
    pad_value: Optional[Tuple[float, ...]] = None
    bad_images: str = "stop"
    num_threads: int = 2
    pipelines: Optional[int] = None
    prefetch: int = 2
    device_id: Optional[int] = None
    endless: bool = False
    signal: str = "reg"
    decision: str = "per_rank"
    max_pixels: Optional[int] = MAX_PIXELS
    cache_dir: Optional[str] = None
    record_dir: Optional[str] = None
    imgsz: Optional[int] = None

    def __post_init__(self):
        for field in RULES:
            check_setting(field, getattr(self, field))
        min_size, max_size = self.min_size, self.max_size
        if isinstance(min_size, (int, float, str)) or not min_size or \
                not all(is_integer(v) and v > 0 for v in min_size) or \
                not is_integer(max_size) or max_size <= 0:
            raise ValueError(f"min_size={min_size!r}, max_size={max_size!r}: min_size is a "
                             "sequence of integers (the short sides drawn from, e.g. (800,)), "
                             "max_size an integer, all positive")
        object.__setattr__(self, "min_size", tuple(int(v) for v in min_size))
        if self.output in ("torchvision", "ultralytics") and \
                self.image_format not in (None, "RGB"):
            raise ValueError(f"output={self.output!r} takes RGB images: leave image_format "
                             "unset")
        if (self.output == "ultralytics") != (self.imgsz is not None):
            raise ValueError(f"output={self.output!r}, imgsz={self.imgsz!r}: imgsz is the "
                             "side of output='ultralytics''s square images; give both or "
                             "neither")
        if self.output == "ultralytics" and self.masks:
            raise ValueError("output='ultralytics' gives detection batches: masks=True is "
                             "not offered")
        if self.pad_value is not None:
            pad = self.pad_value
            if isinstance(pad, (int, float)) or not all(is_number(v) for v in pad) or \
                    len(pad) not in (1, 3):
                raise ValueError(f"pad_value={pad!r}: give 1 or 3 numbers "
                                 f"({self.image_format or 'image_format'} order)")
            object.__setattr__(self, "pad_value", tuple(float(v) for v in pad))

    @property
    def format(self) -> str:
        """The images' channel order: image_format, or the output's own."""
        return self.image_format or ("BGR" if self.output == "detectron2" else "RGB")

    @property
    def padding(self) -> Tuple[float, ...]:
        """pad_value, or the pixel mean in the images' channel order."""
        if self.pad_value is not None:
            return self.pad_value
        if self.output == "ultralytics":
            return (YOLO_PAD,) * 3
        return PIXEL_MEAN_RGB[::-1] if self.format == "BGR" else PIXEL_MEAN_RGB

    @property
    def grouped(self) -> bool:
        """Regular batches of one orientation (aspect_ratio_grouping, default detectron2's)."""
        return (self.output == "detectron2" if self.aspect_ratio_grouping is None
                else self.aspect_ratio_grouping)

    def replace(self, **changes) -> "LoaderSettings":
        """A copy with `changes`, checked like a new one."""
        return dataclasses.replace(self, **changes)


def default_pipelines(device: str, num_threads: int) -> int:
    """DALI pipelines of a kind unless given: 2 on the CPU (at most num_threads), 1 on a GPU."""
    return min(2, num_threads) if device == "cpu" else 1
