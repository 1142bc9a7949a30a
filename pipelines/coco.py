"""Reading and decoding a COCO-format dataset, as the first stage of every dst_dali graph."""
import os

import nvidia.dali.fn as fn
import nvidia.dali.types as types


def check_dataset(images_dir: str, annotations: str) -> None:
    """Fails before DALI does, with the argument and the path, when either is missing."""
    if not os.path.isdir(images_dir):
        raise FileNotFoundError(f"images={images_dir!r}: no such directory")
    if not os.path.isfile(annotations):
        raise FileNotFoundError(f"annotations={annotations!r}: no such file")


def read_coco(images_dir: str, annotations: str, *, shard_id: int = 0, num_shards: int = 1,
              seed: int = 0, shuffle: bool = True, device: str = "cpu", name: str = "reader"):
    """Decoded RGB images with their boxes (ltrb pixels), labels, polygons and vertices.

    Crowd annotations are left out of the training targets, as detectron2 does, and images
    with no annotation left are skipped. device="gpu" decodes on the GPU ("mixed").
    """
    jpegs, boxes, labels, polygons, vertices = fn.readers.coco(
        file_root=images_dir, annotations_file=annotations, ltrb=True, polygon_masks=True,
        include_iscrowd=False, skip_empty=True, shard_id=shard_id, num_shards=num_shards,
        random_shuffle=shuffle, seed=seed, name=name)
    images = fn.decoders.image(jpegs, device="mixed" if device == "gpu" else "cpu",
                               output_type=types.RGB)
    return images, boxes, labels, polygons, vertices
