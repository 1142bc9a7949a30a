"""An independent numpy reference of a DST collage, written from the method's definition.

It shares no code with csrc/: sizes follow detectron2's ResizeShortestEdge, written out here
from its definition (tests/test_gpu_kernel_check.py checks it against detectron2's own), nearest
neighbour is computed in float64 as "sample the source pixel under the output pixel's centre",
and a flip is applied to the resized image afterwards (the operator mirrors indices instead).
It needs numpy alone (bench/gpu/kernel_check.py on a bare GPU node), and a process using it
imports neither detectron2 nor torch.
"""
import math

import numpy as np


def resize_shortest_edge_shape(h, w, short_side, max_size):
    """detectron2's ResizeShortestEdge.get_output_shape, from its definition: the short side to
    short_side, the long side capped at max_size, each side rounded half up. In float64 as
    detectron2's Python floats, whatever the callers' types: numpy 2 keeps a float32 short side
    in float32, whose rounding moves some sides by a pixel."""
    h, w, short_side, max_size = int(h), int(w), float(short_side), float(max_size)
    scale = short_side / min(h, w)
    newh, neww = (short_side, scale * w) if h < w else (scale * h, short_side)
    if max(newh, neww) > max_size:
        s = max_size / max(newh, neww)
        newh, neww = newh * s, neww * s
    return int(newh + 0.5), int(neww + 0.5)


MIN_FIT = 0.875  # a component shrinks to fit its cell by no more than this factor


def layout(src_sizes, short_sides, max_size):
    """Canvas size, cell size and per-component (y0, x0, h, w), as the method defines them: the
    canvas is a regular image's size (the mean of the components' regular sizes, grown where a
    component would shrink by more than MIN_FIT), cut in n x n cells; a component is 1/n of its
    regular size, shrunk with its aspect ratio kept only as far as its cell needs."""
    k = len(src_sizes)
    n = math.isqrt(k)
    reg = np.array([[max(1, v) for v in resize_shortest_edge_shape(h, w, s, max_size)]
                    for (h, w), s in zip(src_sizes, short_sides)], np.float64)
    canvas = np.maximum(reg.mean(0), MIN_FIT * reg.max(0))
    cell_h, cell_w = (max(1, int(c / n)) for c in canvas)
    places = []
    for i, (rh, rw) in enumerate(reg / n):
        fit = min(1.0, cell_h / rh, cell_w / rw)
        h = min(max(1, int(rh * fit + 0.5)), cell_h)
        w = min(max(1, int(rw * fit + 0.5)), cell_w)
        places.append(((i // n) * cell_h, (i % n) * cell_w, h, w))
    return (cell_h * n, cell_w * n), places


def nearest_indices(dst_len, src_len):
    return np.minimum(np.floor((np.arange(dst_len) + 0.5) * src_len / dst_len).astype(np.int64),
                      src_len - 1)


def linear_resize(img, h, w):
    """Bilinear with pixel centres, edges clamped, no antialiasing; float64."""
    def taps(dst_len, src_len):
        f = np.clip((np.arange(dst_len) + 0.5) * src_len / dst_len - 0.5, 0, src_len - 1)
        i0 = np.floor(f).astype(np.int64)
        return i0, np.minimum(i0 + 1, src_len - 1), f - i0
    y0, y1, fy = taps(h, img.shape[0])
    x0, x1, fx = taps(w, img.shape[1])

    def at(ys, xs):  # the taps' pixels, in float64 (only those: the image may be far larger)
        return img[ys][:, xs].astype(np.float64)
    top = at(y0, x0) * (1 - fx)[None, :, None] + at(y0, x1) * fx[None, :, None]
    bot = at(y1, x0) * (1 - fx)[None, :, None] + at(y1, x1) * fx[None, :, None]
    return top * (1 - fy)[:, None, None] + bot * fy[:, None, None]


WEIGHT_BITS, ROW_SHIFT, VALUE_BITS = 11, 4, 18


def linear_resize_fixed(img, h, w):
    """The operator's bilinear, in integers as its docs define it: the source position
    ((2d + 1) S - D) / 2D, its fraction rounded to 11 bits (0 where clamped); per row
    a * (2048 - w) + b * w >> 4, then per column the same, rounded off 18 bits. Returns
    (value as uint8, value in grey levels as float64)."""
    def taps(dst_len, src_len):
        d = np.arange(dst_len, dtype=np.int64)
        num, den = (2 * d + 1) * src_len - dst_len, 2 * dst_len
        i0 = np.where(num > 0, num // den, 0)
        wt = np.where(num > 0, ((num % den) * (1 << WEIGHT_BITS) + dst_len) // den, 0)
        i0, wt = np.where(wt == 1 << WEIGHT_BITS, i0 + 1, i0), np.where(wt == 1 << WEIGHT_BITS, 0, wt)
        clamped = i0 >= src_len - 1
        i0, wt = np.where(clamped, src_len - 1, i0), np.where(clamped, 0, wt)
        return i0, np.minimum(i0 + 1, src_len - 1), wt
    one = 1 << WEIGHT_BITS
    y0, y1, wy = taps(h, img.shape[0])
    x0, x1, wx = taps(w, img.shape[1])
    src = img.astype(np.int64)
    rows = (src[:, x0] * (one - wx)[None, :, None] + src[:, x1] * wx[None, :, None]) >> ROW_SHIFT
    value = rows[y0] * (one - wy)[:, None, None] + rows[y1] * wy[:, None, None]
    return ((value + (1 << (VALUE_BITS - 1))) >> VALUE_BITS).astype(np.uint8), value / (1 << VALUE_BITS)


def collage(images, short_sides, flips, max_size, pad=0.0, interp="nearest", mean=0.0, std=1.0):
    """float64 HWC collage of k HWC images, and the placement of each component. interp:
    "nearest", "linear" (float64) or "linear_u8" / "linear_float" (the operator's fixed point,
    rounded to uint8 or not)."""
    (out_h, out_w), places = layout([im.shape[:2] for im in images], short_sides, max_size)
    C = images[0].shape[2]
    canvas = np.empty((out_h, out_w, C), np.float64)
    canvas[:] = np.broadcast_to(np.asarray(pad, np.float64), (C,))
    for img, flip, (y0, x0, h, w) in zip(images, flips, places):
        if interp == "nearest":
            part = img[nearest_indices(h, img.shape[0])][:, nearest_indices(w, img.shape[1])]
        elif interp == "linear":
            part = linear_resize(img, h, w)
        else:
            rounded, exact = linear_resize_fixed(img, h, w)
            part = rounded if interp == "linear_u8" else exact
        if flip:
            part = part[:, ::-1]
        canvas[y0:y0 + h, x0:x0 + w] = (part - np.asarray(mean)) / np.asarray(std)
    return canvas, places


def map_boxes(boxes, src_hw, place, flip):
    """ltrb boxes of a src_hw image into the collage cell `place`."""
    (sh, sw), (y0, x0, h, w) = src_hw, place
    b = np.asarray(boxes, np.float64).reshape(-1, 4).copy()
    if flip:
        b[:, [0, 2]] = sw - b[:, [2, 0]]
    return b * [w / sw, h / sh, w / sw, h / sh] + [x0, y0, x0, y0]


def map_points(points, src_hw, place, flip):
    (sh, sw), (y0, x0, h, w) = src_hw, place
    p = np.asarray(points, np.float64).reshape(-1, 2).copy()
    if flip:
        p[:, 0] = sw - p[:, 0]
    return p * [w / sw, h / sh] + [x0, y0]
