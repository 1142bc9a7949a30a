"""The two graphs of DST, built by one function: k readers on disjoint sub-shards -> decode ->
CollageStitch.

Reader j of shard s reads sub-shard s*k + j of num_shards*k; with one shuffle seed the k
sub-shards of shard s are exactly shard s, split in k, so the k*B images of an iteration are
distinct and ranks stay disjoint. k = 1 is the regular graph: detectron2's ResizeShortestEdge +
RandomFlip as one fused pass (bilinear); k = 4 the collage graph (nearest neighbour, the
method's definition).
"""
import zlib
from typing import List, NamedTuple, Sequence

import nvidia.dali.fn as fn
from nvidia.dali.data_node import DataNode

from ..ops import CollageOutputs, check_k, collage_stitch

from .coco import read_coco


class StitchedBatch(NamedTuple):
    out: CollageOutputs
    image_ids: List[DataNode]  # k nodes: the COCO image id of each component
    short_side: DataNode       # (k,) per sample: the short side drawn for each component
    flip: DataNode             # (k,) per sample: the flip drawn for each component


def derived_seed(seed: int, *stream) -> int:
    """The seed of one random stream of a graph, from the user's seed and the stream's name, so
    that no two streams share a generator."""
    return zlib.crc32(repr((seed,) + stream).encode()) & 0x7FFFFFFF


def stitched_batch(images_dir: str, annotations: str, category_ids: Sequence[int], *, k: int,
                   min_sizes: Sequence[int], max_size: float, flip_prob: float = 0.5,
                   interp: str = "nearest", device: str = "cpu", image_format: str = "RGB",
                   seed: int = 0, shard_id: int = 0, num_shards: int = 1,
                   min_box_size: float = 1e-5) -> StitchedBatch:
    """min_box_size: boxes no larger after resizing are dropped (1e-5: detectron2's
    filter_empty_instances threshold)."""
    check_k(k)
    if not 0.0 <= flip_prob <= 1.0:
        raise ValueError(f"flip_prob={flip_prob}: must be in [0, 1]")
    # The k readers share one permutation, and so do all ranks (their sub-shards then tile
    # the dataset); the regular and collage graphs use different ones, so they do not walk the
    # data in step.
    parts = [read_coco(images_dir, annotations, category_ids, shard_id=shard_id * k + j,
                       num_shards=num_shards * k, seed=derived_seed(seed, "shuffle", k),
                       device=device, name=f"reader{j}") for j in range(k)]
    # Per component, drawn as detectron2 draws them per image: a short side ("choice") and a
    # flip; each rank and each graph draws its own stream.
    short_side = fn.random.choice([float(s) for s in min_sizes], shape=[k],
                                  seed=derived_seed(seed, "short_side", k, shard_id))
    flip = fn.random.coin_flip(probability=flip_prob, shape=[k],
                               seed=derived_seed(seed, "flip", k, shard_id))
    images, boxes, labels, polygons, vertices, image_ids = (list(x) for x in zip(*parts))
    out = collage_stitch(images, boxes, labels, polygons, vertices, short_side=short_side,
                         flip=flip, max_size=max_size, interp=interp, min_box_size=min_box_size,
                         reverse_channels=image_format == "BGR")
    return StitchedBatch(out, image_ids, short_side, flip)
