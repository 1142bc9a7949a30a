"""What the loader knows of a dataset before any pixel is read: each usable image's file, size
and training targets as arrays, checked entry by entry, so bad input is reported (every
problem at once) or skipped and counted before training starts rather than mid-epoch."""
import json
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Dict, List

import numpy as np

logger = logging.getLogger(__name__)

# Boxes with a side under this many pixels are no training target (DALI's COCO reader and
# detectron2's filter_empty_instances drop them too); the index counts them.
MIN_BOX_SIDE = 0.1
BOX_TOLERANCE = 1.0  # px a box may exceed its image (CollageStitch clips it); more is an error
MAX_LISTED = 20      # problems listed in one error; the rest are counted


class DatasetError(ValueError):
    """Bad entries in a dataset: every problem found, each naming its entry."""

    def __init__(self, source: str, problems: List[str]):
        self.source, self.problems = source, problems
        if len(problems) == 1:
            super().__init__(f"{source}: {problems[0]}")
            return
        shown = "\n  ".join(problems[:MAX_LISTED])
        more = (f"\n  ... and {len(problems) - MAX_LISTED} more"
                if len(problems) > MAX_LISTED else "")
        super().__init__(f"{source}: {len(problems)} problems:\n  {shown}{more}")


@dataclass
class DatasetIndex:
    """The usable images of a dataset, position i = one image, with the targets DSTLoader feeds
    to DALI: boxes (N, 4) float32 ltrb pixels, labels (N,) int32 contiguous 0..C-1, polygons
    (P, 3) int32 [box index, first vertex, one past last] and vertices (V, 2) float32 (x, y)."""
    source: str                                    # the annotation file, for messages
    category_ids: List[int]                        # sorted: contiguous id i <-> category_ids[i]
    category_names: List[str]
    image_ids: list
    file_paths: List[str]
    sizes: np.ndarray                              # (n, 2) int (height, width)
    boxes: List[np.ndarray]
    labels: List[np.ndarray]
    polygons: List[np.ndarray]
    vertices: List[np.ndarray]
    skipped: Dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)

    @property
    def landscape(self) -> np.ndarray:
        """(n,) bool: wider than tall (the orientation detectron2 groups batches by)."""
        return self.sizes[:, 1] > self.sizes[:, 0]


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _polygon_arrays(segmentation, box_index, polys, verts, skipped):
    """Appends an annotation's polygons in DALI's layout; odd-length or < 3-point polygons are
    dropped and counted (detectron2 drops them too)."""
    if not isinstance(segmentation, list):
        if segmentation is not None:
            skipped["rle_segmentations"] += 1
        return
    for poly in segmentation:
        if (not isinstance(poly, list) or len(poly) % 2 or len(poly) < 6
                or not all(_number(v) for v in poly)):
            skipped["dropped_polygons"] += 1
            continue
        first = sum(len(v) for v in verts) // 2
        verts.append(poly)
        polys.append((box_index, first, first + len(poly) // 2))


def load_coco_index(images_dir: str, annotations: str) -> DatasetIndex:
    """Reads and checks a COCO instances file. Every bad entry is reported in one DatasetError
    (a ValueError) naming the file and the entry. Crowd annotations are not training targets (as
    in detectron2); boxes with a side under MIN_BOX_SIDE px, malformed polygons and images left
    with no annotation are skipped and counted in `skipped`."""
    if not os.path.isdir(images_dir):
        raise FileNotFoundError(f"images={images_dir!r}: no such directory")
    if not os.path.isfile(annotations):
        raise FileNotFoundError(f"annotations={annotations!r}: no such file")
    try:
        with open(annotations) as f:
            data = json.load(f)
    except ValueError as e:
        raise DatasetError(annotations, [f"not valid JSON ({e})"]) from None
    if not isinstance(data, dict) or not data.get("images") or not data.get("categories"):
        raise DatasetError(annotations, ["no images or no categories: an empty annotation file"])
    problems: List[str] = []
    cats = sorted(data["categories"], key=lambda c: c["id"])
    category_ids = [c["id"] for c in cats]
    contiguous = {cid: i for i, cid in enumerate(category_ids)}
    images: Dict[object, dict] = {}
    for n, im in enumerate(data["images"]):
        missing = [key for key in ("id", "file_name", "height", "width") if key not in im]
        if missing:
            problems.append(f"images[{n}]: no {', '.join(missing)}")
            continue
        where = f"image {im['id']!r} ({im['file_name']})"
        if not isinstance(im["id"], (int, str)) or isinstance(im["id"], bool):
            problems.append(f"images[{n}]: id {im['id']!r} is neither an integer nor a string")
            continue
        if im["id"] in images:
            same = images[im["id"]]["file_name"] == im["file_name"]
            problems.append(f"{where}: " + ("listed twice" if same else
                                            f"its id is also image {images[im['id']]['file_name']}'s"))
            continue
        if not all(_number(im[key]) and im[key] >= 1 for key in ("height", "width")):
            problems.append(f"{where}: height {im['height']!r}, width {im['width']!r} must be "
                            "positive numbers")
            continue
        path = os.path.join(images_dir, im["file_name"])
        if not os.path.isfile(path):
            problems.append(f"{where}: names {path}, which does not exist")
            continue
        images[im["id"]] = dict(im, path=path, boxes=[], labels=[], polys=[], verts=[])
    listed = {im.get("id") for im in data["images"] if isinstance(im.get("id"), (int, str))}
    skipped = {"crowd_annotations": 0, "degenerate_boxes": 0, "dropped_polygons": 0,
               "rle_segmentations": 0, "images_without_annotations": 0}
    for n, a in enumerate(data.get("annotations", [])):
        where = f"annotation {a.get('id', f'[{n}]')} of image {a.get('image_id')!r}"
        image = images.get(a.get("image_id"))
        if image is None:
            if a.get("image_id") not in listed:
                problems.append(f"{where}: no such image")
            continue  # an image reported above
        where += f" ({image['file_name']})"
        if a.get("category_id") not in contiguous:
            problems.append(f"{where}: unknown category_id {a.get('category_id')!r} (the file "
                            f"defines {len(contiguous)} categories)")
            continue
        if a.get("iscrowd", 0):
            skipped["crowd_annotations"] += 1
            continue
        bbox = a.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(_number(v) for v in bbox):
            problems.append(f"{where}: bbox {bbox!r} is not 4 finite numbers (x, y, w, h)")
            continue
        x, y, w, h = bbox
        if w < MIN_BOX_SIDE or h < MIN_BOX_SIDE:
            skipped["degenerate_boxes"] += 1
            continue
        H, W, t = image["height"], image["width"], BOX_TOLERANCE
        if x < -t or y < -t or x + w > W + t or y + h > H + t:
            problems.append(f"{where}: bbox {bbox} (xywh) lies outside the {W}x{H} image by "
                            f"more than {t} px")
            continue
        _polygon_arrays(a.get("segmentation"), len(image["boxes"]), image["polys"],
                        image["verts"], skipped)
        image["boxes"].append((x, y, x + w, y + h))
        image["labels"].append(contiguous[a["category_id"]])
    if problems:
        raise DatasetError(annotations, problems)
    usable = [im for im in images.values() if im["boxes"]]
    skipped["images_without_annotations"] = len(images) - len(usable)
    if not usable:
        raise DatasetError(annotations, ["no image has a usable (non-crowd, non-degenerate) "
                                         "annotation"])
    for what, count in skipped.items():
        if count:
            logger.info("%s: skipping %d %s", annotations, count, what.replace("_", " "))
    flat = [np.asarray([v for p in im["verts"] for v in p], np.float32).reshape(-1, 2)
            for im in usable]
    return DatasetIndex(
        source=annotations, category_ids=category_ids, category_names=[c["name"] for c in cats],
        image_ids=[im["id"] for im in usable], file_paths=[im["path"] for im in usable],
        sizes=np.array([(int(im["height"]), int(im["width"])) for im in usable], np.int64),
        boxes=[np.asarray(im["boxes"], np.float32).reshape(-1, 4) for im in usable],
        labels=[np.asarray(im["labels"], np.int32) for im in usable],
        polygons=[np.asarray(im["polys"], np.int32).reshape(-1, 3) for im in usable],
        vertices=flat, skipped=skipped)
