"""What the loader knows of a COCO-format dataset before DALI reads it: the category mapping,
each image's size, and a check of every annotation, so bad input fails (or is skipped and
counted) before training starts rather than mid-epoch."""
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Dict, List

logger = logging.getLogger(__name__)

# DALI's COCO reader drops boxes whose width or height is below this many pixels; the index
# counts exactly those, so the skip is logged rather than silent.
MIN_BOX_SIDE = 0.1
BOX_TOLERANCE = 1.0  # px a box may exceed its image (CollageStitch clips it); more is an error


@dataclass
class CocoIndex:
    images_dir: str
    annotations: str
    category_ids: List[int]                       # sorted: contiguous id i <-> category_ids[i]
    category_names: List[str]
    image_sizes: Dict[int, tuple]                 # image id -> (height, width)
    file_names: Dict[int, str]
    usable_image_ids: List[int]                   # images with at least one usable annotation
    skipped: Dict[str, int] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)


def _fail(path, message):
    raise ValueError(f"{path}: {message}")


def load_coco_index(images_dir: str, annotations: str) -> CocoIndex:
    """Reads and checks a COCO instances file; a ValueError naming the file and the entry on
    bad input. Crowd annotations are not training targets (as in detectron2); boxes with a side
    under MIN_BOX_SIDE px are skipped and counted; images left with no annotation are skipped
    and counted."""
    if not os.path.isdir(images_dir):
        raise FileNotFoundError(f"images={images_dir!r}: no such directory")
    if not os.path.isfile(annotations):
        raise FileNotFoundError(f"annotations={annotations!r}: no such file")
    try:
        with open(annotations) as f:
            data = json.load(f)
    except ValueError as e:
        _fail(annotations, f"not valid JSON ({e})")
    if not isinstance(data, dict) or not data.get("images") or not data.get("categories"):
        _fail(annotations, "no images or no categories: an empty annotation file")
    cats = sorted(data["categories"], key=lambda c: c["id"])
    category_ids = [c["id"] for c in cats]
    known = set(category_ids)
    sizes, names = {}, {}
    for im in data["images"]:
        sizes[im["id"]] = (int(im["height"]), int(im["width"]))
        names[im["id"]] = im["file_name"]
        path = os.path.join(images_dir, im["file_name"])
        if not os.path.isfile(path):
            _fail(annotations, f"image {im['id']} names {path}, which does not exist")
    skipped = {"crowd_annotations": 0, "degenerate_boxes": 0, "images_without_annotations": 0}
    usable = set()
    for a in data.get("annotations", []):
        where = f"annotation {a.get('id')} of image {a.get('image_id')}"
        if a.get("image_id") not in sizes:
            _fail(annotations, f"{where}: no such image")
        if a.get("category_id") not in known:
            _fail(annotations, f"{where}: unknown category_id {a.get('category_id')} (the "
                               f"file defines {len(known)} categories)")
        if a.get("iscrowd", 0):
            skipped["crowd_annotations"] += 1
            continue
        x, y, w, h = a["bbox"]
        if w < MIN_BOX_SIDE or h < MIN_BOX_SIDE:
            skipped["degenerate_boxes"] += 1
            continue
        H, W = sizes[a["image_id"]]
        t = BOX_TOLERANCE
        if x < -t or y < -t or x + w > W + t or y + h > H + t:
            _fail(annotations, f"{where} ({names[a['image_id']]}): bbox {a['bbox']} (xywh) lies "
                               f"outside the {W}x{H} image by more than {t} px")
        usable.add(a["image_id"])
    skipped["images_without_annotations"] = len(sizes) - len(usable)
    if not usable:
        _fail(annotations, "no image has a usable (non-crowd, non-degenerate) annotation")
    for what, n in skipped.items():
        if n:
            logger.info("%s: skipping %d %s", annotations, n, what.replace("_", " "))
    return CocoIndex(images_dir, annotations, category_ids, [c["name"] for c in cats], sizes,
                     names, sorted(usable), skipped)
