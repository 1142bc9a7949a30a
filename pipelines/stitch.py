"""The DALI graph of DST, one function for both kinds: encoded images and their targets from
the loader -> decode -> CollageStitch.

k = 1 is the regular graph: detectron2's ResizeShortestEdge + RandomFlip as one fused pass
(bilinear); k = 4 the collage graph (nearest neighbour, the method's definition). What to read and
the random draws (short side, flip) come from the loader's feed (dst_dali.stream.batch_stream), so
the graph holds no state of its own and a batch is a pure function of its place in the stream.
"""
from typing import Callable, NamedTuple, Optional, Sequence, Tuple

import nvidia.dali.fn as fn
import nvidia.dali.types as types
from nvidia.dali.data_node import DataNode

from dst_dali.op.collage import CollageOutputs, check_k, collage_stitch

# What the feed gives for each of the k components, in this order, then short_side and flip;
# the polygons only where masks are trained (each input costs the feed time every batch).
COMPONENT_INPUTS = ("encoded", "boxes", "labels", "polygons", "vertices")


def component_inputs(polygons: bool) -> Tuple[str, ...]:
    return COMPONENT_INPUTS if polygons else COMPONENT_INPUTS[:3]


def num_feed_outputs(k: int, polygons: bool = True) -> int:
    return len(component_inputs(polygons)) * k + 2


class StitchedBatch(NamedTuple):
    out: CollageOutputs
    # (k, 3) a sample: (H, W, C) of each component as decoded; then, where the annotations were
    # planned from the files' headers, (k, 3) more: the shapes they were planned for
    shapes: DataNode


def header_shape(encoded: DataNode) -> DataNode:
    """(H, W, C) an image file's header gives, EXIF orientation applied as the decoder applies
    it: what a plan made before decoding places the boxes for."""
    return fn.peek_image_shape(encoded)


def stitched_batch(feed: Callable, *, k: int, max_size: float, interp: str = "nearest",
                   device: str = "cpu", image_format: str = "RGB",
                   pad_value: Sequence[float] = (0.0,), polygons: bool = True,
                   min_box_size: float = 1e-5,
                   plan_from_headers: Optional[bool] = None) -> StitchedBatch:
    """feed: a callable giving a batch of each of num_feed_outputs(k, polygons) inputs (DALI's
    external_source, batch mode); without polygons the collages' polygon outputs are empty.
    min_box_size: boxes no larger after resizing are dropped
    (1e-5: detectron2's filter_empty_instances threshold).

    Images are decoded to RGB: DALI's CPU decoder makes BGR with an extra conversion pass that
    doubles its cost, while CollageStitch reverses the channels for free (reverse_channels).
    device="gpu" decodes on the GPU ("mixed") and stitches there; the annotations come from
    CollageStitch(plan_only) on the CPU, planned from the files' headers (plan_from_headers,
    the default on a GPU; the CPU graph runs the same path when asked). The shapes planned for
    are then output beside the decoded ones, which the caller compares sample by sample: a file
    whose header and pixels disagree would otherwise misplace every box of its collage.
    """
    check_k(k)
    names = component_inputs(polygons)
    inputs = fn.external_source(source=feed, num_outputs=num_feed_outputs(k, polygons),
                                batch=True)
    given = {name: inputs[i * k:(i + 1) * k] for i, name in enumerate(names)}
    short_side, flip = inputs[-2:]
    images = [fn.decoders.image(e, device="mixed" if device == "gpu" else "cpu",
                                output_type=types.RGB) for e in given["encoded"]]
    annotations = (given["boxes"], given["labels"], given.get("polygons"), given.get("vertices"))
    args = dict(short_side=short_side, flip=flip, max_size=max_size, interp=interp,
                pad_value=list(pad_value), min_box_size=min_box_size,
                reverse_channels=image_format == "BGR")
    shapes = [image.shape() for image in images]
    if device == "gpu" if plan_from_headers is None else plan_from_headers:
        # The plan again on the host, from the encoded images' headers: the annotations are
        # made on the CPU and never copied back from the GPU, which stitches the pixels alone.
        planned = [header_shape(e) for e in given["encoded"]]
        plan = collage_stitch(planned, *annotations, plan_only=True, **args)
        out = plan._replace(image=collage_stitch(images, **args).image)
        shapes += planned
    else:
        out = collage_stitch(images, *annotations, **args)
    # the decoded sizes (against the annotations', whose pixels the boxes are in) and the
    # planned ones, as one output: a pipeline output costs the caller time every run
    return StitchedBatch(out, fn.stack(*shapes))
