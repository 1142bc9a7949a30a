"""The collage graph: k readers on disjoint sub-shards -> decode -> CollageStitch.

Reader j of shard s reads sub-shard s*k + j of num_shards*k, so the k*B images of an iteration
are distinct and the shards of different ranks stay disjoint. k = 1 is the regular graph
(one reader, detectron2's ResizeShortestEdge + RandomFlip fused into one pass).
"""
from typing import Sequence

import nvidia.dali.fn as fn

import dst_dali
from dst_dali.ops import CollageOutputs, check_k

from .coco import check_dataset, read_coco


def stitched_batch(images_dir: str, annotations: str, *, k: int, min_sizes: Sequence[int],
                   max_size: float, flip_prob: float = 0.5, interp: str = "nearest",
                   device: str = "cpu", seed: int = 0, shard_id: int = 0,
                   num_shards: int = 1) -> CollageOutputs:
    check_k(k)
    check_dataset(images_dir, annotations)
    if not 0.0 <= flip_prob <= 1.0:
        raise ValueError(f"flip_prob={flip_prob}: must be in [0, 1]")
    parts = [read_coco(images_dir, annotations, shard_id=shard_id * k + j,
                       num_shards=num_shards * k, seed=seed + j, device=device,
                       name=f"reader{j}") for j in range(k)]
    # Per component, as detectron2 draws them per image: a short side ("choice") and a flip.
    short_side = fn.random.choice([float(s) for s in min_sizes], shape=[k], seed=seed + 1000)
    flip = fn.random.coin_flip(probability=flip_prob, shape=[k], seed=seed + 2000)
    images, boxes, labels, polygons, vertices = (list(x) for x in zip(*parts))
    return dst_dali.collage_stitch(images, boxes, labels, polygons, vertices,
                                   short_side=short_side, flip=flip, max_size=max_size,
                                   interp=interp)
