"""The DALI graph of DST, one function for both kinds: encoded images and their targets from
the loader -> decode -> CollageStitch.

k = 1 is the regular graph: detectron2's ResizeShortestEdge + RandomFlip as one fused pass
(bilinear); k = 4 the collage graph (nearest neighbour, the method's definition). What to read
and the random draws (short side, flip) come from the loader's feed (dst_dali.loader), so the
graph holds no state of its own and a batch is a pure function of its place in the stream.
"""
from typing import Callable, List, NamedTuple, Sequence

import nvidia.dali.fn as fn
import nvidia.dali.types as types

from nvidia.dali.data_node import DataNode

from dst_dali.ops import CollageOutputs, check_k, collage_stitch

# What the feed gives for each of the k components, in this order, then short_side and flip.
COMPONENT_INPUTS = ("encoded", "boxes", "labels", "polygons", "vertices")


def num_feed_outputs(k: int) -> int:
    return len(COMPONENT_INPUTS) * k + 2


class StitchedBatch(NamedTuple):
    out: CollageOutputs
    decoded_shapes: List[DataNode]  # k nodes: (H, W, C) of each component as decoded


def stitched_batch(feed: Callable, *, k: int, max_size: float, interp: str = "nearest",
                   device: str = "cpu", image_format: str = "RGB",
                   pad_value: Sequence[float] = (0.0,),
                   min_box_size: float = 1e-5) -> StitchedBatch:
    """feed: a callable giving a batch of each of num_feed_outputs(k) inputs (DALI's
    external_source, batch mode). min_box_size: boxes no larger after resizing are dropped
    (1e-5: detectron2's filter_empty_instances threshold).

    Images are decoded to RGB: DALI's CPU decoder makes BGR with an extra conversion pass that
    doubles its cost, while CollageStitch reverses the channels for free (reverse_channels).
    device="gpu" decodes on the GPU ("mixed") and stitches there.
    """
    check_k(k)
    inputs = fn.external_source(source=feed, num_outputs=num_feed_outputs(k), batch=True)
    encoded, boxes, labels, polygons, vertices = (
        inputs[i * k:(i + 1) * k] for i in range(len(COMPONENT_INPUTS)))
    short_side, flip = inputs[-2:]
    images = [fn.decoders.image(e, device="mixed" if device == "gpu" else "cpu",
                                output_type=types.RGB) for e in encoded]
    out = collage_stitch(images, boxes, labels, polygons, vertices, short_side=short_side,
                         flip=flip, max_size=max_size, interp=interp, pad_value=list(pad_value),
                         min_box_size=min_box_size, reverse_channels=image_format == "BGR")
    # the decoded sizes, against the annotations' (boxes are in the annotations' pixels)
    return StitchedBatch(out, [image.shape() for image in images])
