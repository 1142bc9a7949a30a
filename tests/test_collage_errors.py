"""Bad input to CollageStitch: a clear error naming what is wrong, never a crash."""
import re

import numpy as np
import pytest

from .dali_helpers import run_collage

IMG = np.zeros((10, 12, 3), np.uint8)
BOX = np.array([[1, 1, 5, 5]], np.float32)
LAB = np.array([3], np.int32)


def error_of(call):
    with pytest.raises(Exception) as info:
        call()
    return str(info.value)


def assert_error(call, *patterns):
    msg = error_of(call)
    for p in patterns:
        assert re.search(p, msg), f"{p!r} not in:\n{msg}"


def test_k_not_a_square():
    from dst_dali.op.collage import check_k
    for k in (2, 3, 5, 8, 0, 25):
        with pytest.raises(ValueError, match=f"k={k}"):
            check_k(k)
    assert_error(lambda: run_collage([[IMG]] * 3, short_side=10), r"k=3.*square")  # the Python wrapper
    assert_error(lambda: run_collage([[IMG]] * 3, raw=True, k=3, short_side=[10.0]),
                 r"argument k=3 must be a square")  # the operator itself


def test_non_uint8_images():
    assert_error(lambda: run_collage([[IMG.astype(np.float32)]] * 4, short_side=10),
                 r"image input 0 has type float; decoded uint8 images are expected")


def test_plan_only_takes_shapes():
    """plan_only reads each image input as (H, W, C): images, or shapes of another length, are
    named as such."""
    shape = np.array(IMG.shape, np.int64)
    assert_error(lambda: run_collage([[IMG]] * 4, short_side=10, plan_only=True),
                 r"with plan_only, image input 0 must be the images' shapes, \(H, W, C\)",
                 r"got type uint8 with 3 dimensions")
    assert_error(lambda: run_collage([[shape[:2]]] * 4, short_side=10, plan_only=True,
                                     image_layout=None),
                 r"image input 0, sample 0 holds 2 values; plan_only takes \(H, W, C\)")
    assert_error(lambda: run_collage([[shape * [1, 0, 1]]] * 4, short_side=10,
                                     plan_only=True, image_layout=None),
                 r"has size 10x0; zero-size images cannot be resized")


def test_not_hwc():
    gray2d = np.zeros((10, 12), np.uint8)
    assert_error(lambda: run_collage([[gray2d]] * 4, short_side=10, image_layout=None),
                 r"image input 0 has 2 dimensions; HWC images are expected")
    assert_error(lambda: run_collage([[IMG.transpose(2, 0, 1).copy()]] * 4, short_side=10,
                                     image_layout="CHW"),
                 r"image input 0 has layout 'CHW'; HWC is expected")


def test_channel_mismatch():
    gray = np.zeros((10, 12, 1), np.uint8)
    assert_error(lambda: run_collage([[IMG], [gray], [IMG], [IMG]], short_side=10),
                 r"image input 1, sample 0 has 1 channels, but image input 0, sample 0 has 3")
    assert_error(lambda: run_collage([[IMG]] * 4, short_side=10, pad_value=[1, 2]),
                 r"pad_value has 2 values; give 1 or one per channel \(3\)")


def test_zero_size_image():
    empty = np.zeros((0, 12, 3), np.uint8)
    assert_error(lambda: run_collage([[IMG], [IMG], [empty], [IMG]], short_side=10),
                 r"image input 2, sample 0 has size 0x12; zero-size images cannot be resized")


def test_empty_batch_passes_through_as_empty():
    # DALI's executor does not run operators on an empty batch: nothing to stitch, nothing
    # lost, an empty batch out.
    out = run_collage([[]] * 4, short_side=10, batch_size=2)
    assert [len(o) for o in out] == [0] * 7


def test_boxes_outside_their_image():
    far = np.array([[1, 1, 5, 5], [2, 2, 14.5, 8]], np.float32)  # 12 px wide image
    assert_error(lambda: run_collage([[IMG]] * 4, [[BOX], [far], [BOX], [BOX]],
                                     [[LAB], [np.array([1, 2], np.int32)], [LAB], [LAB]],
                                     short_side=10),
                 r"component 1, sample 0: box 1 \[2, 2, 14.5, 8\] \(ltrb\) lies outside its "
                 r"12x10 image by more than box_tolerance=1 px")
    nan = np.array([[1, np.nan, 5, 5]], np.float32)
    assert_error(lambda: run_collage([[IMG]] * 4, [[BOX], [BOX], [nan], [BOX]], [[LAB]] * 4,
                                     short_side=10),
                 r"component 2, sample 0: box 0 has a non-finite coordinate")


def test_annotation_shapes():
    assert_error(lambda: run_collage([[IMG]] * 4, [[BOX]] * 4,
                                     [[np.array([1, 2], np.int32)]] * 4, short_side=10),
                 r"2 labels for 1 boxes")
    assert_error(lambda: run_collage([[IMG]] * 4, [[np.zeros((1, 5), np.float32)]] * 4,
                                     [[LAB]] * 4, short_side=10),
                 r"boxes must have shape \(N, 4\)")
    assert_error(lambda: run_collage([[IMG]] * 4, [[BOX]] * 4, [[LAB.astype(np.int64)]] * 4,
                                     short_side=10), r"labels must be int32")
    bad_poly = np.array([[1, 0, 3]], np.int32)  # box 1 of a single box
    verts = np.zeros((3, 2), np.float32)
    assert_error(lambda: run_collage([[IMG]] * 4, [[BOX]] * 4, [[LAB]] * 4, [[bad_poly]] * 4,
                                     [[verts]] * 4, short_side=10),
                 r"polygon 0 \[1, 0, 3\] does not index its 1 boxes and 3 vertices")
    assert_error(lambda: run_collage([[IMG]] * 4, [[BOX]] * 3, [[LAB]] * 3, short_side=10),
                 r"boxes: 3 inputs for 4 images")
    assert_error(lambda: run_collage([[IMG]] * 4, [[BOX]] * 4, raw=True, short_side=[10.0]),
                 r"got 8 inputs for k=4")


def test_bad_arguments():
    import nvidia.dali.types as types
    assert_error(lambda: run_collage([[IMG]] * 4, short_side=[10, 20]),
                 r'"short_side" expects either a single value or a list of 4 elements\. 2 given')
    two_flips = np.array([1, 0], np.int32)  # per sample, as an argument input
    assert_error(lambda: run_collage([[IMG, IMG]] * 4, short_side=10,
                                     arg_inputs={"flip": [np.array([1], np.int32), two_flips]}),
                 r"flip for sample 1 is expected to have 1 or 4 elements, got: 2")
    assert_error(lambda: run_collage([[IMG]] * 4, short_side=0), r"short_side=0 .* positive")
    assert_error(lambda: run_collage([[IMG]] * 4, short_side=10, interp="cubic"),
                 r"interp='cubic' must be 'nearest' or 'linear'")
    assert_error(lambda: run_collage([[IMG]] * 4, short_side=10, mean=[1.0]),
                 r"mean/std normalization needs dtype=types.FLOAT")
    assert_error(lambda: run_collage([[IMG]] * 4, short_side=10, dtype=types.INT16),
                 r"dtype must be types.UINT8 or types.FLOAT")
    assert_error(lambda: run_collage([[IMG]] * 4, short_side=10, max_size=-1),
                 r"max_size=-1 must be positive")


def test_error_names_the_file(coco128, tmp_path):
    """Through the COCO reader, an error names the image file it is about."""
    import json
    import os

    import nvidia.dali.fn as fn
    from nvidia.dali import pipeline_def

    import dst_dali
    with open(coco128.annotations) as f:
        data = json.load(f)
    image = data["images"][0]
    anns = [a for a in data["annotations"] if a["image_id"] == image["id"]][:1]
    anns[0] = dict(anns[0], bbox=[image["width"] - 5, 0, 40, 10], iscrowd=0)
    data = dict(data, images=[image], annotations=anns)
    ann_file = tmp_path / "bad.json"
    ann_file.write_text(json.dumps(data))

    @pipeline_def(batch_size=1, num_threads=1, device_id=None)
    def pipe():
        jpegs, boxes, labels = fn.readers.coco(file_root=coco128.images,
                                               annotations_file=str(ann_file), ltrb=True)
        img = fn.decoders.image(jpegs)
        return tuple(dst_dali.collage_stitch([img], [boxes], [labels], short_side=100))

    p = pipe()
    p.build()
    assert_error(p.run, re.escape(os.path.basename(image["file_name"])), r"lies outside")
