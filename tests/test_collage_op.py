"""CollageStitch against the independent numpy reference (collage_reference.py)."""

import os

import numpy as np
import pytest

from bench.oracle import collage, layout, map_boxes, map_points

from .dali_helpers import run_collage

MAX_SIZE = 96


def random_image(rng, channels, tiny=False):
    if tiny:  # 1-pixel-wide or 1-pixel-tall images, and 1x1
        h, w = [(1, int(rng.integers(1, 50))), (int(rng.integers(1, 50)), 1), (1, 1)][
            int(rng.integers(0, 3))]
    else:
        h, w = int(rng.integers(2, 120)), int(rng.integers(2, 120))  # odd and even sizes
    return rng.integers(0, 256, (h, w, channels), dtype=np.uint8)


def random_batch(rng, k, B, channels, tiny_every=3):
    return [[random_image(rng, channels, tiny=(j * B + b) % tiny_every == 0)
             for b in range(B)] for j in range(k)]


def reference_batch(images, short, flips, **kwargs):
    k, B = len(images), len(images[0])
    return [collage([images[j][b] for j in range(k)], short[b], flips[b], MAX_SIZE,
                    **kwargs)[0] for b in range(B)]


@pytest.mark.parametrize("k", [1, 4, 9])
@pytest.mark.parametrize("channels", [1, 3])
def test_nearest_pixels_equal_reference(k, channels):
    rng = np.random.default_rng(100 * k + channels)
    B = 3
    images = random_batch(rng, k, B, channels)
    short = [rng.integers(8, 80, k).astype(np.float32) for _ in range(B)]
    flips = [rng.integers(0, 2, k).astype(np.int32) for _ in range(B)]
    pad = 7 if channels == 1 else [7, 100, 255]
    out = run_collage(images, arg_inputs={"short_side": short, "flip": flips},
                      max_size=MAX_SIZE, pad_value=pad, num_threads=2)
    ref = reference_batch(images, short, flips, pad=pad)
    for b in range(B):
        assert out[0][b].dtype == np.uint8
        np.testing.assert_array_equal(out[0][b], ref[b].astype(np.uint8))
        _, places = layout([images[j][b].shape[:2] for j in range(k)], short[b], MAX_SIZE)
        np.testing.assert_array_equal(out[6][b], np.array(places))


def test_collage_is_a_regular_image_of_half_scale_components():
    """k = 4 components of one orientation: each is 1/2 of the size k = 1 gives the same image
    (within 1 px), shrunk with its aspect ratio kept by at most 7/8 to fit its cell; the canvas
    is about the mean regular size of its components."""
    rng = np.random.default_rng(1)
    for trial in range(6):
        landscape = trial % 2 == 0
        images = [[] for _ in range(4)]
        for j in range(4):
            for b in range(2):
                short, long = int(rng.integers(20, 60)), int(rng.integers(60, 119))
                hw = (short, long) if landscape else (long, short)
                images[j].append(rng.integers(0, 256, hw + (3,), dtype=np.uint8))
        short = [rng.integers(20, 80, 4).astype(np.float32) for _ in range(2)]
        col = run_collage(images, arg_inputs={"short_side": short}, max_size=MAX_SIZE)
        for b in range(2):
            regs = np.array([run_collage([images[j]], arg_inputs={
                "short_side": [short[b][j:j + 1]] * 2}, max_size=MAX_SIZE)[0][b].shape[:2]
                for j in range(4)], np.float64)
            canvas = np.array(col[0][b].shape[:2])
            assert np.all(canvas <= np.maximum(regs.mean(0), 0.875 * regs.max(0)))
            assert np.all(canvas >= regs.mean(0) - 2)
            cell = canvas // 2
            for j in range(4):
                y0, x0, h, w = col[6][b][j]
                half = regs[j] / 2
                fit = min(1.0, *(cell / half))  # the scale its cell allows, at most 1/2
                assert min((cell + 1) / half) >= 0.875  # shrunk by at most 7/8 (1 px rounding)
                # aspect ratio kept: both sides within a pixel of that one scale
                assert abs(h - fit * half[0]) <= 1 and abs(w - fit * half[1]) <= 1
                assert (y0, x0) == ((j // 2) * cell[0], (j % 2) * cell[1])
                assert y0 + h <= canvas[0] and x0 + w <= canvas[1]


def test_constant_and_per_sample_arguments_agree():
    rng = np.random.default_rng(2)
    images = random_batch(rng, 4, 2, 3)
    const = run_collage(images, short_side=[30, 40, 50, 60], flip=[1, 0, 0, 1], max_size=MAX_SIZE)
    per_sample = run_collage(images, max_size=MAX_SIZE, arg_inputs={
        "short_side": [np.array([30, 40, 50, 60], np.float32)] * 2,
        "flip": [np.array([1, 0, 0, 1], np.int32)] * 2})
    scalar = run_collage(images, short_side=30, max_size=MAX_SIZE)
    for b in range(2):
        np.testing.assert_array_equal(const[0][b], per_sample[0][b])
        ref = collage([images[j][b] for j in range(4)], [30] * 4, [0] * 4, MAX_SIZE)[0]
        np.testing.assert_array_equal(scalar[0][b], ref.astype(np.uint8))


@pytest.mark.parametrize("layout_", ["HWC", "CHW"])
def test_float_output_is_normalized(layout_):
    import nvidia.dali.types as types
    rng = np.random.default_rng(3)
    images = random_batch(rng, 4, 2, 3)
    short = [rng.integers(8, 80, 4).astype(np.float32) for _ in range(2)]
    mean, std = [103.5, 116.3, 123.7], [57.4, 57.1, 58.4]
    out = run_collage(images, arg_inputs={"short_side": short}, max_size=MAX_SIZE,
                      dtype=types.FLOAT, output_layout=layout_, mean=mean, std=std, pad_value=0)
    ref = reference_batch(images, short, [[0] * 4] * 2, mean=mean, std=std)
    for b in range(2):
        got = out[0][b] if layout_ == "HWC" else out[0][b].transpose(1, 2, 0)
        assert out[0][b].dtype == np.float32
        np.testing.assert_allclose(got, ref[b], rtol=0, atol=1e-4)


def test_linear_interpolation_matches_reference():
    rng = np.random.default_rng(4)
    images = random_batch(rng, 4, 2, 3)
    short = [rng.integers(8, 80, 4).astype(np.float32) for _ in range(2)]
    flips = [rng.integers(0, 2, 4).astype(np.int32) for _ in range(2)]
    out = run_collage(images, arg_inputs={"short_side": short, "flip": flips},
                      max_size=MAX_SIZE, interp="linear")
    ref = reference_batch(images, short, flips, interp="linear")
    for b in range(2):
        # float32 arithmetic vs float64 reference, then rounding: at most 1 grey level apart
        diff = np.abs(out[0][b].astype(np.int16) - np.round(ref[b]).astype(np.int16))
        assert diff.max() <= 1


@pytest.mark.parametrize("dtype,layout_,interp", [
    ("uint8", "HWC", "nearest"), ("uint8", "HWC", "linear"),
    ("float", "CHW", "nearest"), ("float", "HWC", "linear")])
def test_emulated_cuda_launch_equals_cpu_path(dtype, layout_, interp):
    """The CUDA kernel's per-thread function, replayed over its full launch grid on the CPU,
    gives the same output as the CPU backend and as the reference (no GPU here)."""
    import nvidia.dali.types as types
    rng = np.random.default_rng(5)
    images = random_batch(rng, 9, 3, 3)
    short = [rng.integers(8, 80, 9).astype(np.float32) for _ in range(3)]
    flips = [rng.integers(0, 2, 9).astype(np.int32) for _ in range(3)]
    kw = dict(max_size=MAX_SIZE, interp=interp, output_layout=layout_, pad_value=[1, 2, 3],
              dtype=types.UINT8 if dtype == "uint8" else types.FLOAT)
    if dtype == "float":
        kw.update(mean=[10.0, 20.0, 30.0], std=[2.0, 3.0, 4.0])
    args = {"short_side": short, "flip": flips}
    cpu = run_collage(images, arg_inputs=args, **kw)
    emulated = run_collage(images, arg_inputs=args, _emulate_gpu_launch=True, **kw)
    for b in range(3):
        np.testing.assert_array_equal(emulated[0][b], cpu[0][b])
    if interp == "nearest":
        ref = reference_batch(images, short, flips, pad=[1, 2, 3], **(
            dict(mean=kw["mean"], std=kw["std"]) if dtype == "float" else {}))
        for b in range(3):
            got = emulated[0][b] if layout_ == "HWC" else emulated[0][b].transpose(1, 2, 0)
            np.testing.assert_allclose(got, ref[b] if dtype == "float" else ref[b].round(),
                                       atol=1e-4)


def random_boxes(rng, h, w, n):
    x = np.sort(rng.uniform(0, w, (n, 2)), axis=1)
    y = np.sort(rng.uniform(0, h, (n, 2)), axis=1)
    return np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], axis=1).astype(np.float32)


def square_polygon(box):
    l, t, r, b = box
    return np.array([[l, t], [r, t], [r, b], [l, b]], np.float32)


@pytest.mark.parametrize("k", [1, 4, 9])
def test_boxes_polygons_and_accounting(k):
    rng = np.random.default_rng(10 + k)
    B = 2
    images = random_batch(rng, k, B, 3, tiny_every=10 ** 6)
    boxes, labels, polys, verts = [], [], [], []
    for j in range(k):
        bj, lj, pj, vj = [], [], [], []
        for b in range(B):
            h, w = images[j][b].shape[:2]
            bx = random_boxes(rng, h, w, int(rng.integers(0, 6)))
            if b == 0 and len(bx):
                bx[0, 2] = bx[0, 0]  # zero width: must be dropped and reported
            if b == 1:  # slightly outside the image (within tolerance): clipped, kept
                bx = np.concatenate([bx, [[-0.5, 0, w + 0.5, h]]]).astype(np.float32)
            bj.append(bx)
            lj.append(rng.integers(0, 80, len(bx)).astype(np.int32))
            v = [square_polygon(box) for box in bx]
            pj.append(np.array([[i, 4 * i, 4 * i + 4] for i in range(len(bx))],
                               np.int32).reshape(-1, 3))
            vj.append(np.concatenate(v).astype(np.float32) if v else np.zeros((0, 2), np.float32))
        boxes.append(bj), labels.append(lj), polys.append(pj), verts.append(vj)
    short = [rng.integers(8, 80, k).astype(np.float32) for _ in range(B)]
    flips = [rng.integers(0, 2, k).astype(np.int32) for _ in range(B)]
    out = run_collage(images, boxes, labels, polys, verts, max_size=MAX_SIZE,
                      arg_inputs={"short_side": short, "flip": flips})
    o_img, o_box, o_lab, o_poly, o_vert, o_origin, o_place = out
    for b in range(B):
        expected_boxes, expected_origin, expected_labels, expected_verts = [], [], [], []
        for j in range(k):
            src_hw = images[j][b].shape[:2]
            place = tuple(o_place[b][j])
            flip = flips[b][j]
            clipped = np.clip(boxes[j][b], 0, [src_hw[1], src_hw[0]] * 2)
            mapped = map_boxes(clipped, src_hw, place, flip)
            for i, m in enumerate(mapped):
                if clipped[i, 2] > clipped[i, 0] and clipped[i, 3] > clipped[i, 1]:
                    expected_boxes.append(m)
                    expected_origin.append((j, i))
                    expected_labels.append(labels[j][b][i])
                    expected_verts.append(map_points(verts[j][b][4 * i:4 * i + 4], src_hw,
                                                     place, flip))
            # every mapped box lies inside its component's pixels
            y0, x0, h, w = place
            mine = o_origin[b][:, 0] == j
            assert np.all(o_box[b][mine] >= [x0, y0, x0, y0]) if mine.any() else True
            assert np.all(o_box[b][mine] <= [x0 + w, y0 + h, x0 + w, y0 + h]) if mine.any() else True
        np.testing.assert_allclose(o_box[b], np.array(expected_boxes).reshape(-1, 4), atol=1e-3)
        np.testing.assert_array_equal(o_origin[b], np.array(expected_origin).reshape(-1, 2))
        np.testing.assert_array_equal(o_lab[b], np.array(expected_labels, np.int32))
        # every input box is in the output or reported dropped, never both, never twice
        n_in = sum(len(boxes[j][b]) for j in range(k))
        kept = {tuple(x) for x in o_origin[b]}
        assert len(kept) == len(o_origin[b]) <= n_in
        dropped = [(j, i) for j in range(k) for i in range(len(boxes[j][b])) if (j, i) not in kept]
        if b == 0:  # exactly the zero-width boxes were dropped
            assert dropped == [(j, 0) for j in range(k) if len(boxes[j][0])]
        else:
            assert dropped == []
        # polygons follow their boxes
        assert len(o_poly[b]) == len(expected_verts)
        for q, (box_idx, first, last) in enumerate(o_poly[b]):
            assert box_idx == q
            np.testing.assert_allclose(o_vert[b][first:last], expected_verts[q], atol=1e-3)


def test_min_box_size_drops_boxes_too_small_after_scaling():
    image = np.zeros((100, 100, 3), np.uint8)
    boxes = np.array([[0, 0, 10, 10], [20, 20, 21, 60], [50, 50, 90, 90]], np.float32)
    labels = np.array([1, 2, 3], np.int32)
    out = run_collage([[image]] * 4, [[boxes]] * 4, [[labels]] * 4, short_side=100,
                      max_size=1000, min_box_size=1.0)
    # scale 0.5: the 1-px-wide box becomes 0.5 px wide and is dropped from every component
    np.testing.assert_array_equal(out[5][0], [[j, i] for j in range(4) for i in (0, 2)])
    np.testing.assert_array_equal(out[2][0], [1, 3] * 4)


def test_coco128_collages_match_reference(coco128):
    """Real COCO images, boxes and polygons from DALI's COCO reader, four readers on disjoint
    shards; polygon areas checked with pycocotools."""
    import nvidia.dali.fn as fn
    from nvidia.dali import pipeline_def
    from pycocotools import mask as mask_utils

    import dst_dali

    k, B, max_size = 4, 2, 400
    short = [160.0, 200.0, 240.0, 280.0]
    flips = [0, 1, 1, 0]

    @pipeline_def(batch_size=B, num_threads=2, device_id=None, prefetch_queue_depth=1)
    def pipe():
        parts = []
        for j in range(k):
            jpegs, boxes, labels, polys, verts = fn.readers.coco(
                file_root=coco128.images, annotations_file=coco128.annotations, ltrb=True,
                polygon_masks=True, shard_id=j, num_shards=k, skip_empty=True,
                name=f"reader{j}")
            parts.append((fn.decoders.image(jpegs), boxes, labels, polys, verts))
        out = dst_dali.collage_stitch(*[list(x) for x in zip(*parts)], short_side=short,
                                      flip=flips, max_size=max_size)
        return tuple(out) + tuple(x for p in parts for x in p)

    p = pipe()
    p.build()
    outs = [[np.array(o[b]) for b in range(B)] for o in p.run()]
    o_img, o_box, o_lab, o_poly, o_vert, o_origin, o_place = outs[:7]
    comps = [outs[7 + 5 * j: 12 + 5 * j] for j in range(k)]
    n_small = 0
    for b in range(B):
        imgs = [comps[j][0][b] for j in range(k)]
        ref, places = collage(imgs, short, flips, max_size)
        np.testing.assert_array_equal(o_img[b], ref.astype(np.uint8))
        for j in range(k):
            _, boxes, labels, polys, verts = (c[b] for c in comps[j])
            src_hw = imgs[j].shape[:2]
            mine = o_origin[b][:, 0] == j
            np.testing.assert_array_equal(o_origin[b][mine][:, 1], np.arange(len(boxes)))
            np.testing.assert_allclose(o_box[b][mine], map_boxes(boxes, src_hw, places[j],
                                                                 flips[j]), atol=1e-2)
            np.testing.assert_array_equal(o_lab[b][mine], labels.reshape(-1))
            out_h, out_w = o_img[b].shape[:2]
            sy, sx = places[j][2] / src_hw[0], places[j][3] / src_hw[1]
            for (box_idx, first, last) in o_poly[b]:
                if o_origin[b][box_idx, 0] != j:
                    continue
                src_box = o_origin[b][box_idx, 1]
                src_polys = polys[polys[:, 0] == src_box]
                # area of the mapped polygon rasterized in the collage vs the source polygon
                # rasterized in its image, times the pixel scale (pycocotools both times)
                got = mask_utils.area(mask_utils.frPyObjects(
                    [o_vert[b][first:last].ravel().tolist()], out_h, out_w))[0]
                match = [verts[f:l] for _, f, l in src_polys
                         if l - f == last - first and np.allclose(map_points(verts[f:l], src_hw, places[j], flips[j]),
                                        o_vert[b][first:last], atol=1e-2)]
                assert len(match) == 1
                src_area = mask_utils.area(mask_utils.frPyObjects(
                    [match[0].ravel().tolist()], *src_hw))[0]
                perimeter = np.abs(np.diff(np.vstack([o_vert[b][first:last],
                                                      o_vert[b][first:first + 1]]),
                                           axis=0)).sum()
                assert abs(got - src_area * sx * sy) <= 0.05 * src_area * sx * sy + perimeter
                bw, bh = o_box[b][box_idx, 2:] - o_box[b][box_idx, :2]
                n_small += bw * bh < 32 ** 2
    assert n_small > 0  # the collage makes small objects, the point of the method


def exif_rotated_jpeg(h, w, orientation, seed):
    """A JPEG stored h x w with an EXIF orientation tag (6: shown rotated by 90 degrees)."""
    import io

    from PIL import Image
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", exif=exif.tobytes())
    return np.frombuffer(buf.getvalue(), np.uint8)


def test_plan_only_gives_the_operators_annotations(coco128):
    """CollageStitch(plan_only) on the encoded images' peeked shapes, as a GPU graph plans on
    the host: outputs 1-6 bit for bit those of the operator on the decoded images (coco128
    through DALI's COCO reader, k = 4 and 1, and images whose EXIF orientation turns them);
    the stored, unturned shapes would plan another collage."""
    import nvidia.dali.fn as fn
    from nvidia.dali import pipeline_def

    import dst_dali

    def both(parts, args, turned=True):
        """parts: k (encoded, boxes, labels[, polygons, vertices]) DataNode tuples."""
        encoded, annotations = [p[0] for p in parts], [list(x) for x in zip(*[p[1:] for p in parts])]
        full = dst_dali.collage_stitch([fn.decoders.image(e) for e in encoded], *annotations,
                                       **args)
        plan = dst_dali.collage_stitch(
            [fn.peek_image_shape(e, adjust_orientation=turned) for e in encoded], *annotations,
            plan_only=True, **args)
        return tuple(full) + tuple(plan)

    def outputs(pipe, B):
        pipe.build()
        outs = [[np.array(o[b]) for b in range(B)] for o in pipe.run()]
        return outs[:7], outs[7:]

    for k, B in ((4, 3), (1, 4)):
        args = dict(short_side=[160.0, 200.0, 240.0, 280.0][:k], flip=[0, 1, 1, 0][:k],
                    max_size=400, min_box_size=1e-5)

        @pipeline_def(batch_size=B, num_threads=2, device_id=None, prefetch_queue_depth=1)
        def readers():
            return both([fn.readers.coco(
                file_root=coco128.images, annotations_file=coco128.annotations, ltrb=True,
                polygon_masks=True, shard_id=j, num_shards=k, skip_empty=True)
                for j in range(k)], args)
        full, plan = outputs(readers(), B)
        for b in range(B):
            assert plan[0][b].shape == (0, 0, 3) and full[0][b].shape[0] > 0
            for i in range(1, 7):
                np.testing.assert_array_equal(plan[i][b], full[i][b])
                assert plan[i][b].dtype == full[i][b].dtype
        assert sum(len(full[1][b]) for b in range(B)) > 10 and len(full[3][0]) > 0

    # stored 40 x 64 and 50 x 30, shown turned: the decoder and the peek both turn them
    files = [exif_rotated_jpeg(40, 64, 6, 0), exif_rotated_jpeg(50, 30, 8, 1),
             exif_rotated_jpeg(36, 36, 1, 2), exif_rotated_jpeg(20, 70, 6, 3)]
    box = np.array([[1, 2, 30, 35]], np.float32)  # inside every turned image
    label = np.array([7], np.int32)
    args = dict(short_side=[32.0, 48.0, 64.0, 40.0], flip=[1, 0, 0, 1], max_size=200)
    for turned in (True, False):
        @pipeline_def(batch_size=1, num_threads=1, device_id=None, prefetch_queue_depth=1)
        def exif():
            return both([(fn.external_source(lambda j=j: [files[j]], batch=True),
                          fn.external_source(lambda: [box], batch=True),
                          fn.external_source(lambda: [label], batch=True))
                         for j in range(4)], args, turned)
        full, plan = outputs(exif(), 1)
        h, w = full[6][0][0, 2:]
        assert h > w  # the first image, stored wide, is decoded turned: tall
        same = all(np.array_equal(plan[i][0], full[i][0]) for i in range(1, 7))
        assert same == turned


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("reverse", [False, True])
def test_nearest_rows_over_widths_and_scales(channels, reverse):
    """The CPU nearest path gathers wide rows as 16-byte shuffles and their ends byte by byte
    (x86-64), or a pixel at a time (the portable code other CPUs run): rows of 2 to 400 pixels,
    from 20x downscales to 4x upscales, flipped or not, with the last source row read (windows
    must stay inside the image) equal the reference either way."""
    rng = np.random.default_rng(40 + channels + 10 * reverse)
    k, B = 4, 4
    images, short = [[] for _ in range(k)], []
    for b in range(B):
        sides = []
        for j in range(k):
            h = int(rng.integers(2, 40))
            images[j].append(rng.integers(0, 256, (h, int(rng.integers(h, 400)), channels),
                                          dtype=np.uint8))
            sides.append(max(1.0, h * float(rng.choice([0.1, 0.3, 0.8, 1.0, 1.7, 4.0]))))
        short.append(np.array(sides, np.float32))
    flips = [rng.integers(0, 2, k).astype(np.int32) for _ in range(B)]
    args = {"short_side": short, "flip": flips}
    out = run_collage(images, arg_inputs=args, max_size=2000, reverse_channels=reverse)
    portable = run_collage(images, arg_inputs=args, max_size=2000, reverse_channels=reverse,
                           _portable_cpu=True)
    emulated = run_collage(images, arg_inputs=args, max_size=2000, reverse_channels=reverse,
                           _emulate_gpu_launch=True)
    seen = [[im[..., ::-1] if reverse else im for im in comp] for comp in images]
    for b in range(B):
        ref, _ = collage([seen[j][b] for j in range(k)], short[b], flips[b], 2000)
        np.testing.assert_array_equal(out[0][b], ref.astype(np.uint8))
        np.testing.assert_array_equal(portable[0][b], out[0][b])
        np.testing.assert_array_equal(emulated[0][b], out[0][b])


def test_gpu_backend_is_registered():
    from nvidia.dali import backend

    import dst_dali
    assert "CollageStitch" in backend.RegisteredCPUOps()
    info = dst_dali.op.plugin.build_info(dst_dali.op.plugin.plugin_path())
    assert dst_dali.has_gpu_backend() == info["cuda"]
    if info["cuda"]:
        assert "CollageStitch" in backend.RegisteredGPUOps()


@pytest.mark.parametrize("channels, interp, dtype", [
    (3, "nearest", "uint8"), (4, "nearest", "uint8"), (1, "nearest", "uint8"),
    (3, "linear", "uint8"), (3, "nearest", "float")])
def test_reverse_channels(channels, interp, dtype):
    """RGB in, BGR out: the same bytes as stitching channel-reversed images, on the CPU fast
    paths, the generic path and the emulated CUDA launch alike (the pad value as given)."""
    import nvidia.dali.types as types
    rng = np.random.default_rng(20 + channels)
    images = random_batch(rng, 4, 2, channels)
    short = [rng.integers(8, 80, 4).astype(np.float32) for _ in range(2)]
    flips = [rng.integers(0, 2, 4).astype(np.int32) for _ in range(2)]
    pad = list(range(1, channels + 1))
    kw = dict(max_size=MAX_SIZE, interp=interp, pad_value=pad,
              dtype=types.UINT8 if dtype == "uint8" else types.FLOAT)
    args = {"short_side": short, "flip": flips}
    flipped_input = [[im[..., ::-1].copy() for im in comp] for comp in images]
    expected = run_collage(flipped_input, arg_inputs=args, **kw)
    reversed_ = run_collage(images, arg_inputs=args, reverse_channels=True, **kw)
    emulated = run_collage(images, arg_inputs=args, reverse_channels=True,
                           _emulate_gpu_launch=True, **kw)
    ref = reference_batch(flipped_input, short, flips, interp=interp, pad=pad)
    for b in range(2):
        np.testing.assert_array_equal(reversed_[0][b], expected[0][b])
        np.testing.assert_array_equal(emulated[0][b], expected[0][b])
        if interp == "nearest":
            np.testing.assert_allclose(reversed_[0][b], ref[b], atol=1e-4)


@pytest.mark.parametrize("k, channels", [(1, 3), (1, 1), (1, 4), (4, 3), (9, 1)])
def test_linear_fixed_point_is_exact(k, channels):
    """Bilinear is integer arithmetic: the SIMD rows (byte shuffles where a component is not
    shrunk much, gathers where it is), the portable rows and the emulated CUDA launch all give
    the numpy reference's integers exactly, up- and downscaled, flipped, channels reversed."""
    import nvidia.dali.types as types
    rng = np.random.default_rng(40 + k + channels)
    B = 3
    images = [[rng.integers(0, 256, (int(rng.integers(2, 200)), int(rng.integers(2, 200)),
                                     channels), dtype=np.uint8) for _ in range(B)]
              for _ in range(k)]
    short = [rng.integers(4, 240, k).astype(np.float32) for _ in range(B)]
    flips = [rng.integers(0, 2, k).astype(np.int32) for _ in range(B)]
    args = {"short_side": short, "flip": flips}
    for reverse in (False, True):
        seen = [[im[..., ::-1] if reverse else im for im in comp] for comp in images]
        kw = dict(arg_inputs=args, max_size=400, interp="linear", reverse_channels=reverse)
        outputs = [run_collage(images, **kw, **extra)[0] for extra in (
            {}, {"_portable_cpu": True}, {"_emulate_gpu_launch": True})]
        floats = run_collage(images, **kw, dtype=types.FLOAT, mean=[7.0] * channels,
                             std=[3.0] * channels)[0]
        for b in range(B):
            parts = [seen[j][b] for j in range(k)]
            ref, _ = collage(parts, short[b], flips[b], 400, interp="linear_u8")
            for out in outputs:
                np.testing.assert_array_equal(out[b], ref.astype(np.uint8))
            exact, _ = collage(parts, short[b], flips[b], 400, interp="linear_float", mean=7.0,
                               std=3.0)
            np.testing.assert_allclose(floats[b], exact, rtol=0, atol=1e-4)


def test_regular_resize_agrees_with_opencv(coco128):
    """k = 1 bilinear is OpenCV's INTER_LINEAR (same taps and 11-bit weights, rounding of
    its own): at most 1 grey level apart on coco128 images, upscaled and downscaled."""
    import cv2
    names = sorted(os.listdir(coco128.images))[:6]
    images = [cv2.imread(os.path.join(coco128.images, n)) for n in names]
    for short, max_size in ((800.0, 1333.0), (320.0, 400.0)):
        out = run_collage([images], short_side=short, max_size=max_size, interp="linear",
                          flip=1)[0]
        for img, got in zip(images, out):
            want = cv2.flip(cv2.resize(img, got.shape[1::-1], interpolation=cv2.INTER_LINEAR), 1)
            diff = np.abs(got.astype(np.int16) - want)
            assert diff.max() <= 1 and diff.mean() < 0.25, (diff.max(), diff.mean())
