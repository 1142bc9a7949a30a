"""The two graphs of DST, built by one function: k readers on disjoint sub-shards -> decode ->
CollageStitch.

Reader j of shard s reads sub-shard s*k + j of num_shards*k; with one shuffle seed the k
sub-shards of shard s are exactly shard s, split in k, so the k*B images of an iteration are
distinct and ranks stay disjoint. k = 1 is the regular graph: detectron2's ResizeShortestEdge +
RandomFlip as one fused pass (bilinear); k = 4 the collage graph (nearest neighbour, the
method's definition).
"""
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
    # The k readers share one permutation (their sub-shards then tile the shard); the regular
    # and collage graphs use different ones, so they do not walk the shard in step.
    reader_seed = seed if k == 1 else seed + 1
    parts = [read_coco(images_dir, annotations, category_ids, shard_id=shard_id * k + j,
                       num_shards=num_shards * k, seed=reader_seed, device=device,
                       image_format=image_format, name=f"reader{j}") for j in range(k)]
    # Per component, drawn as detectron2 draws them per image: a short side ("choice") and a
    # flip. Seeds differ per rank so ranks draw independently.
    short_side = fn.random.choice([float(s) for s in min_sizes], shape=[k],
                                  seed=seed + 2 + 2 * shard_id)
    flip = fn.random.coin_flip(probability=flip_prob, shape=[k], seed=seed + 3 + 2 * shard_id)
    images, boxes, labels, polygons, vertices, image_ids = (list(x) for x in zip(*parts))
    out = collage_stitch(images, boxes, labels, polygons, vertices,
                                  short_side=short_side, flip=flip, max_size=max_size,
                                  interp=interp, min_box_size=min_box_size)
    return StitchedBatch(out, image_ids, short_side, flip)
