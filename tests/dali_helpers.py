"""Runs DALI CPU-only pipelines on numpy inputs, for the tests."""
import numpy as np
from nvidia.dali import fn, pipeline_def

import dst_dali


def run_collage(images, boxes=None, labels=None, polygons=None, vertices=None, *,
                num_threads=1, arg_inputs=None, raw=False, batch_size=None,
                image_layout="HWC", **kwargs):
    """Runs CollageStitch once. images[j][b] is component j of sample b (HWC numpy arrays).

    arg_inputs: {name: [per-sample numpy arrays]} passed as DALI argument inputs.
    raw: call fn.collage_stitch directly (bypassing the Python wrapper's checks).
    batch_size: the pipeline's maximum batch size, when it should differ from the fed one.
    image_layout: the layout the image inputs declare.
    Returns the 7 outputs as lists (over samples) of numpy arrays.
    """
    groups = {"img": images, "box": boxes, "lab": labels, "poly": polygons, "vert": vertices}
    groups = {k: v for k, v in groups.items() if v is not None}
    B = len(images[0])
    feeds = {}

    @pipeline_def(batch_size=batch_size or B, num_threads=num_threads, device_id=None, prefetch_queue_depth=1)
    def pipe():
        nodes = {}
        for g, comps in groups.items():
            nodes[g] = []
            for j, batch in enumerate(comps):
                name = f"{g}{j}"
                feeds[name] = batch
                nodes[g].append(fn.external_source(name=name, layout=image_layout if g == "img" else None))
        args = dict(kwargs)
        for name, batch in (arg_inputs or {}).items():
            feeds[name] = batch
            args[name] = fn.external_source(name=name)
        if raw:
            flat = [x for g in ("img", "box", "lab", "poly", "vert") for x in nodes.get(g, [])]
            return tuple(fn.collage_stitch(*flat, **args))
        return tuple(dst_dali.collage_stitch(
            nodes["img"], nodes.get("box"), nodes.get("lab"), nodes.get("poly"),
            nodes.get("vert"), **args))

    p = pipe()
    p.build()
    for name, batch in feeds.items():
        p.feed_input(name, batch)
    outs = p.run()
    return [[np.array(o[b]) for b in range(B)] for o in outs]
