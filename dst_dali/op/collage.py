"""Python face of the CollageStitch operator: named inputs instead of DALI's flat input list."""
import math
from typing import NamedTuple, Optional, Sequence

import nvidia.dali.fn as fn
import nvidia.dali.types as types
from nvidia.dali.data_node import DataNode


class CollageOutputs(NamedTuple):
    image: DataNode      # HWC uint8, or normalized float in output_layout
    boxes: DataNode      # (M, 4) ltrb, collage pixels
    labels: DataNode     # (M,) int32
    polygons: DataNode   # (Q, 3) int32 [box index, first vertex, one past last vertex]
    vertices: DataNode   # (W, 2) float, collage pixels
    origin: DataNode     # (M, 2) int32 [component, input box index]
    placement: DataNode  # (k, 4) int32 [y0, x0, h, w] of each component


def check_k(k: int) -> int:
    """The side n of a k = n*n collage grid; a ValueError naming k otherwise."""
    n = math.isqrt(k) if isinstance(k, int) and k > 0 else 0
    if not 1 <= k <= 16 or n * n != k:
        raise ValueError(f"k={k!r}: the number of collage components must be a square "
                         "(1, 4, 9 or 16) so that they tile a square grid")
    return n


def _per_component(value, dtype):
    """A DataNode argument is cast to the operator's type; constants become lists."""
    if isinstance(value, DataNode):
        return fn.cast(value, dtype=dtype)
    return [float(v) if dtype == types.FLOAT else int(v) for v in
            (value if isinstance(value, (list, tuple)) else [value])]


def collage_stitch(images: Sequence[DataNode], boxes: Optional[Sequence[DataNode]] = None,
                   labels: Optional[Sequence[DataNode]] = None,
                   polygons: Optional[Sequence[DataNode]] = None,
                   vertices: Optional[Sequence[DataNode]] = None, *, short_side,
                   max_size: float = 1333, flip=0, interp: str = "nearest", pad_value=0,
                   dtype=types.UINT8, output_layout: str = "HWC", mean=0.0, std=1.0,
                   reverse_channels: bool = False,
                   box_tolerance: float = 1.0, min_box_size: float = 0.0,
                   device: Optional[str] = None, **kwargs) -> CollageOutputs:
    """Stitches k = len(images) image batches into one batch of collages (see csrc/).

    `short_side` and `flip` take a constant, a list of k constants, or a DataNode with 1 or k
    values a sample (e.g. drawn with fn.random.choice). Annotations are optional: boxes with
    labels, and polygons with vertices, as DALI's COCO reader gives them (ltrb=True,
    polygon_masks=True). reverse_channels turns RGB input into BGR output (or back) for free.
    """
    k = len(images)
    check_k(k)
    inputs = list(images)
    for name, group in (("boxes", boxes), ("labels", labels), ("polygons", polygons),
                        ("vertices", vertices)):
        if group is not None and len(group) != k:
            raise ValueError(f"{name}: {len(group)} inputs for {k} images; give one per image")
    if (boxes is None) != (labels is None):
        raise ValueError("boxes and labels go together: give both or neither")
    if (polygons is None) != (vertices is None):
        raise ValueError("polygons and vertices go together: give both or neither")
    if polygons is not None and boxes is None:
        raise ValueError("polygons need their boxes and labels")
    for group in (boxes, labels, polygons, vertices):
        inputs += list(group or [])
    if device is not None:
        kwargs["device"] = device
    mean = mean if isinstance(mean, (list, tuple)) else [mean]
    std = std if isinstance(std, (list, tuple)) else [std]
    pad_value = pad_value if isinstance(pad_value, (list, tuple)) else [pad_value]
    outputs = fn.collage_stitch(
        *inputs, k=k, short_side=_per_component(short_side, types.FLOAT), max_size=max_size,
        flip=_per_component(flip, types.INT32), interp=interp,
        pad_value=[float(v) for v in pad_value], dtype=dtype, output_layout=output_layout,
        reverse_channels=reverse_channels,
        mean=[float(v) for v in mean], std=[float(v) for v in std],
        box_tolerance=box_tolerance, min_box_size=min_box_size, **kwargs)
    return CollageOutputs(*outputs)
