"""The GPU graph plans a collage's boxes from the files' headers while the pixels are decoded
on the device: the shapes planned for are compared with the decoded ones for every sample of
every batch, here on the CPU graph running that same path. DALI 2.4's header peek applies the
orientation the decoder applies (EXIF in JPEG, eXIf in PNG: tried, they agree), so no crafted
file makes the two differ; a planted disagreement shows the check."""
import numpy as np
import pytest
from dst_dali.pipelines import stitch

from dst_dali import DSTLoader


def loader(coco128, **kwargs):
    lo = DSTLoader(coco128.images, coco128.annotations, batch_size=2, min_size=(160,),
                   max_size=256, device="cpu", output="torchvision", seed=5, **kwargs)
    for stream in lo.streams.values():  # the GPU graph's plan path, on the CPU
        stream.plan_from_headers = True
        stream.restart(0)
    return lo


def test_the_header_plan_gives_the_decoded_plans_batches(coco128):
    planned = loader(coco128)
    plain = DSTLoader(coco128.images, coco128.annotations, batch_size=2, min_size=(160,),
                      max_size=256, device="cpu", output="torchvision", seed=5)
    for kind in ("regular", "collage", "collage", "regular", "collage"):
        (a, ta), (b, tb) = planned.next_batch(kind), plain.next_batch(kind)
        for x, y, tx, ty in zip(a, b, ta, tb):
            assert x.shape == y.shape and bool((x == y).all())
            np.testing.assert_array_equal(tx["boxes"].numpy(), ty["boxes"].numpy())
    assert planned.set_aside == {}


def swapped(encoded):
    h, w, c = (stitch.fn.peek_image_shape(encoded)[i] for i in range(3))
    return stitch.fn.stack(w, h, c)


def larger(encoded):
    h, w, c = (stitch.fn.peek_image_shape(encoded)[i] for i in range(3))
    return stitch.fn.stack(h + 16, w + 16, c)


@pytest.mark.parametrize("lie", [swapped, larger])
def test_a_header_that_disagrees_with_the_pixels_is_a_bad_image(coco128, monkeypatch, lie):
    """Planted: the planned shapes come back as a header lying about its size would give them:
    swapped (boxes then fall outside the planned image, and the operator stops the batch) or
    larger (the batch is made, with every box misplaced). Either way the image is named and
    set aside, not trained on."""
    monkeypatch.setattr(stitch, "header_shape", lie)
    lo = loader(coco128)
    with pytest.raises((ValueError, RuntimeError), match=r"has a header giving \d+x\d+ "
                       r"\(width x height\), but decodes to \d+x\d+: its boxes would be placed"):
        lo.next_batch("collage")
    assert len(lo.set_aside) >= 1
    assert all("has a header giving" in why for why in lo.set_aside.values())
