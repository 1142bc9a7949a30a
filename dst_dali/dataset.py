"""What the loader knows of a dataset before any pixel is read: each usable image's file, size
and training targets as arrays, checked entry by entry, so bad input is reported (every
problem at once) or skipped and counted before training starts rather than mid-epoch."""
import json
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional

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
    rle_annotations: List[str] = field(default_factory=list)  # non-crowd RLE masks (where)

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


def load_coco_index(images_dir: str, annotations: str,
                    problems: Optional[List[str]] = None) -> DatasetIndex:
    """Reads and checks a COCO instances file. Every bad entry is reported in one DatasetError
    (a ValueError) naming the file and the entry; or, given a `problems` list, added to it and
    left out of the index. Crowd annotations are not training targets (as in detectron2); boxes
    with a side under MIN_BOX_SIDE px, malformed polygons and images left with no annotation are
    skipped and counted in `skipped`."""
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
    strict = problems is None
    problems = [] if strict else problems
    cats = sorted(data["categories"], key=lambda c: c["id"])
    contiguous = {c["id"]: i for i, c in enumerate(cats)}
    records: Dict[object, dict] = {}
    for n, im in enumerate(data["images"]):
        missing = [key for key in ("id", "file_name", "height", "width") if key not in im]
        if missing:
            problems.append(f"images[{n}]: no {', '.join(missing)}")
            continue
        record = _image_record(im["id"], im["file_name"], os.path.join(images_dir,
                               im["file_name"]), im["height"], im["width"], records, problems)
        if record is not None:
            records[im["id"]] = record
    outside = [im["file_name"] for im in records.values()
               if os.path.isabs(im["file_name"]) or
               os.path.normpath(im["file_name"]).split(os.sep)[0] == os.pardir]
    if outside:  # allowed (detectron2 reads them too), but never silently
        logger.warning("%s: %d file_name(s) lie outside images=%s, e.g. %r", annotations,
                       len(outside), images_dir, outside[0])
    listed = {im.get("id") for im in data["images"] if isinstance(im.get("id"), (int, str))}
    for n, a in enumerate(data.get("annotations", [])):
        image_id = a.get("image_id")
        where = f"annotation {a.get('id', f'[{n}]')} of image {image_id!r}"
        if not isinstance(image_id, (int, str)) or image_id not in listed:
            problems.append(f"{where}: no such image")
            continue
        if image_id in records:  # else its image was reported
            records[image_id]["annotations"].append(dict(a, category=contiguous.get(
                a.get("category_id")), where=where))
    return _index(annotations, records.values(), [c["id"] for c in cats],
                  [c["name"] for c in cats], problems, strict)


def index_of_dataset_dicts(name: str, dicts: List[dict], category_ids: List[int],
                           category_names: List[str]) -> DatasetIndex:
    """The index of a detectron2 dataset: `dicts` as DatasetCatalog.get(name) gives them
    (file_name, height, width, image_id, annotations with bbox, bbox_mode, category_id as a
    contiguous id, optional segmentation and iscrowd). category_ids: the dataset's id of each
    contiguous class (what labels="coco" reports). Checked like a COCO file."""
    from detectron2.structures import BoxMode
    problems: List[str] = []
    records: Dict[object, dict] = {}
    for n, d in enumerate(dicts):
        missing = [key for key in ("file_name", "height", "width") if key not in d]
        if missing:
            problems.append(f"{name}[{n}]: no {', '.join(missing)}")
            continue
        record = _image_record(d.get("image_id", n), d["file_name"], d["file_name"], d["height"],
                               d["width"], records, problems)
        if record is None:
            continue
        records[record["id"]] = record
        for m, a in enumerate(d.get("annotations", [])):
            a = dict(a, where=f"{name}[{n}] annotation {m}",
                     category=a.get("category_id") if a.get("category_id") in
                     range(len(category_ids)) else None)
            mode, bbox = a.get("bbox_mode", BoxMode.XYWH_ABS), a.get("bbox")
            if isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(map(_number, bbox)):
                a["bbox"] = list(BoxMode.convert(list(bbox), mode, BoxMode.XYWH_ABS))
            record["annotations"].append(a)
    return _index(name, records.values(), list(category_ids), list(category_names), problems,
                  strict=True)


def _image_record(image_id, file_name, path, height, width, records, problems):
    """One image's record, or None with its problem listed."""
    if isinstance(image_id, np.generic):  # e.g. VOC's ids, read by numpy: plain Python
        image_id = image_id.item()
    where = f"image {image_id!r} ({file_name})"
    if not isinstance(image_id, (int, str)) or isinstance(image_id, bool):
        problems.append(f"{where}: its id is neither an integer nor a string")
        return None
    if image_id in records:
        same = records[image_id]["file_name"] == file_name
        problems.append(f"{where}: " + ("listed twice" if same else
                                        f"its id is also {records[image_id]['file_name']}'s"))
        return None
    if not all(_number(v) and v >= 1 for v in (height, width)):
        problems.append(f"{where}: height {height!r}, width {width!r} must be positive numbers")
        return None
    if not os.path.isfile(path):
        problems.append(f"{where}: names {path}, which does not exist")
        return None
    return {"id": image_id, "file_name": file_name, "path": path, "height": int(height),
            "width": int(width), "annotations": []}


def _index(source: str, records, category_ids, category_names, problems,
           strict: bool) -> DatasetIndex:
    """Checks every annotation of the records (bbox in xywh pixels, `category` contiguous or
    None when unknown) and builds the index; `strict`: a DatasetError lists all problems."""
    skipped = {"crowd_annotations": 0, "degenerate_boxes": 0, "dropped_polygons": 0,
               "rle_segmentations": 0, "images_without_annotations": 0}
    usable, rle = [], []
    for image in records:
        boxes, labels, polys, verts = [], [], [], []
        for a in image["annotations"]:
            where = f"{a['where']} ({image['file_name']})"
            if a["category"] is None:
                problems.append(f"{where}: unknown category_id {a.get('category_id')!r} (the "
                                f"dataset defines {len(category_ids)} categories)")
                continue
            crowd = a.get("iscrowd", 0)
            if not isinstance(crowd, (int, np.integer)) or crowd not in (0, 1):
                problems.append(f"{where}: iscrowd {crowd!r} must be 0 or 1 (an integer)")
                continue
            if crowd:
                skipped["crowd_annotations"] += 1
                continue
            bbox = a.get("bbox")
            if not isinstance(bbox, list) or len(bbox) != 4 or not all(map(_number, bbox)):
                problems.append(f"{where}: bbox {bbox!r} is not 4 finite numbers (x, y, w, h)")
                continue
            x, y, w, h = bbox
            if w < MIN_BOX_SIDE or h < MIN_BOX_SIDE:
                skipped["degenerate_boxes"] += 1
                continue
            H, W, t = image["height"], image["width"], BOX_TOLERANCE
            if x < -t or y < -t or x + w > W + t or y + h > H + t:
                problems.append(f"{where}: bbox {bbox} (xywh) lies outside the {W}x{H} image "
                                f"by more than {t} px")
                continue
            if isinstance(a.get("segmentation"), dict):
                rle.append(where)
            _polygon_arrays(a.get("segmentation"), len(boxes), polys, verts, skipped)
            boxes.append((x, y, x + w, y + h))
            labels.append(a["category"])
        if boxes:
            usable.append((image, boxes, labels, polys, verts))
        else:
            skipped["images_without_annotations"] += 1
    if problems and strict:
        raise DatasetError(source, problems)
    if not usable:
        raise DatasetError(source, ["no image has a usable (non-crowd, non-degenerate) "
                                    "annotation"])
    for what, count in skipped.items():
        if count:  # an empty or negative box is a flaw of the data: say so louder
            logger.log(logging.WARNING if what == "degenerate_boxes" else logging.INFO,
                       "%s: skipping %d %s", source, count,
                       "boxes of zero or negative width or height (under "
                       f"{MIN_BOX_SIDE} px)" if what == "degenerate_boxes"
                       else what.replace("_", " "))
    return DatasetIndex(
        source=source, category_ids=category_ids, category_names=category_names,
        image_ids=[u[0]["id"] for u in usable], file_paths=[u[0]["path"] for u in usable],
        sizes=np.array([(u[0]["height"], u[0]["width"]) for u in usable], np.int64),
        boxes=[np.asarray(u[1], np.float32).reshape(-1, 4) for u in usable],
        labels=[np.asarray(u[2], np.int32) for u in usable],
        polygons=[np.asarray(u[3], np.int32).reshape(-1, 3) for u in usable],
        vertices=[np.asarray([v for p in u[4] for v in p], np.float32).reshape(-1, 2)
                  for u in usable], skipped=skipped, rle_annotations=rle)


def _catalog_dicts(catalog, name: str) -> List[dict]:
    """DatasetCatalog.get(name), a missing file named in one line (detectron2's builtin sets
    are read under $DETECTRON2_DATASETS)."""
    try:
        return catalog.get(name)
    except FileNotFoundError as e:
        root = os.environ.get("DETECTRON2_DATASETS", "datasets")
        raise FileNotFoundError(
            f"dataset {name!r}: {e.filename or e} does not exist; detectron2 reads its builtin "
            f"datasets under DETECTRON2_DATASETS={root!r} (see detectron2's datasets/README.md)"
        ) from None


def detectron2_dataset_index(names) -> DatasetIndex:
    """The index of datasets registered in detectron2's DatasetCatalog (register_coco_instances,
    the builtin COCO and PASCAL VOC sets, DatasetCatalog.register(name, fn) of a list of dicts),
    read through detectron2's own loaders and concatenated as detectron2 does for several
    DATASETS.TRAIN, with their MetadataCatalog's classes."""
    from detectron2.data import DatasetCatalog, MetadataCatalog
    names = [names] if isinstance(names, str) else list(names)
    for name in names:
        if name not in DatasetCatalog.list():
            raise ValueError(f"dataset {name!r} is not registered in detectron2's DatasetCatalog "
                             "(register it with register_coco_instances, register_pascal_voc "
                             "or DatasetCatalog.register)")
    dicts = [d for name in names for d in _catalog_dicts(DatasetCatalog, name)]
    meta = MetadataCatalog.get(names[0])
    classes = list(getattr(meta, "thing_classes", []))
    for name in names[1:]:
        other = list(getattr(MetadataCatalog.get(name), "thing_classes", []))
        if other != classes:
            raise ValueError(f"datasets {names[0]!r} and {name!r} have different classes")
    if not classes:
        found = [a.get("category_id") for d in dicts for a in d.get("annotations", [])]
        classes = [str(i) for i in range(max([c for c in found if isinstance(c, int)],
                                             default=-1) + 1)]
    to_contiguous = getattr(meta, "thing_dataset_id_to_contiguous_id", None)
    ids = (sorted(to_contiguous, key=to_contiguous.get) if to_contiguous
           else list(range(len(classes))))
    return index_of_dataset_dicts("+".join(names), dicts, ids, classes)
