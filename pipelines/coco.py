"""Reading and decoding a COCO-format dataset: the first stage of every dst_dali graph."""
from typing import Sequence

import nvidia.dali.fn as fn
import nvidia.dali.types as types


def read_coco(images_dir: str, annotations: str, category_ids: Sequence[int], *,
              shard_id: int = 0, num_shards: int = 1, seed: int = 0, shuffle: bool = True,
              device: str = "cpu", name: str = "reader"):
    """Decoded images with their boxes (ltrb pixels), contiguous labels, polygons, vertices
    and image ids.

    Labels are detectron2's contiguous ids: the index of the category id in the sorted
    `category_ids`. Crowd annotations are left out of the training targets, as in detectron2,
    and images with no annotation left are skipped. With `shuffle`, every epoch is a fresh
    permutation of the whole dataset drawn from `seed`, then split into shards: ranks that share
    the seed hold disjoint shards every epoch. device="gpu" decodes on the GPU ("mixed").

    Images are decoded to RGB: DALI's CPU decoder makes BGR with an extra conversion pass that
    doubles its cost, while CollageStitch reverses the channels for free (reverse_channels).
    """
    jpegs, boxes, labels, polygons, vertices, image_ids = fn.readers.coco(
        file_root=images_dir, annotations_file=annotations, ltrb=True, polygon_masks=True,
        include_iscrowd=False, skip_empty=True, image_ids=True, avoid_class_remapping=True,
        shard_id=shard_id, num_shards=num_shards, shuffle_after_epoch=shuffle,
        shuffle_after_epoch_seed=seed, seed=seed, name=name)
    labels = fn.lookup_table(labels, keys=list(category_ids),
                             values=list(range(len(category_ids))), default_value=-1,
                             dtype=types.INT32)
    images = fn.decoders.image(jpegs, device="mixed" if device == "gpu" else "cpu",
                               output_type=types.RGB)
    return images, boxes, labels, polygons, vertices, image_ids
