"""An independent numpy reference of a DST collage, written from the method's definition.

It shares no code with csrc/: sizes come from detectron2's own ResizeShortestEdge, nearest
neighbour is computed in float64 as "sample the source pixel under the output pixel's centre",
and a flip is applied to the resized image afterwards (the operator mirrors indices instead).
"""
import math

import numpy as np
from detectron2.data.transforms import ResizeShortestEdge


def regular_size(h, w, short_side, max_size):
    return ResizeShortestEdge.get_output_shape(h, w, short_side, max_size)


MIN_FIT = 0.875  # a component shrinks to fit its cell by no more than this factor


def layout(src_sizes, short_sides, max_size):
    """Canvas size, cell size and per-component (y0, x0, h, w), as the method defines them: the
    canvas is a regular image's size (the mean of the components' regular sizes, grown where a
    component would shrink by more than MIN_FIT), cut in n x n cells; a component is 1/n of its
    regular size, shrunk with its aspect ratio kept only as far as its cell needs."""
    k = len(src_sizes)
    n = math.isqrt(k)
    reg = np.array([[max(1, v) for v in regular_size(h, w, s, max_size)]
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
    img = img.astype(np.float64)
    top = img[y0][:, x0] * (1 - fx)[None, :, None] + img[y0][:, x1] * fx[None, :, None]
    bot = img[y1][:, x0] * (1 - fx)[None, :, None] + img[y1][:, x1] * fx[None, :, None]
    return top * (1 - fy)[:, None, None] + bot * fy[:, None, None]


def collage(images, short_sides, flips, max_size, pad=0.0, interp="nearest", mean=0.0, std=1.0):
    """float64 HWC collage of k HWC images, and the placement of each component."""
    (out_h, out_w), places = layout([im.shape[:2] for im in images], short_sides, max_size)
    C = images[0].shape[2]
    canvas = np.empty((out_h, out_w, C), np.float64)
    canvas[:] = np.broadcast_to(np.asarray(pad, np.float64), (C,))
    for img, flip, (y0, x0, h, w) in zip(images, flips, places):
        if interp == "nearest":
            part = img[nearest_indices(h, img.shape[0])][:, nearest_indices(w, img.shape[1])]
        else:
            part = linear_resize(img, h, w)
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
