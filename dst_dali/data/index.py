"""What the loader knows of a dataset before any pixel is read: each usable image's file, size and
training targets, and the rules every entry is checked by, so bad input is reported (every problem
at once) or skipped and counted before training starts rather than mid-epoch. The index is columnar
(dst_dali.data.columns): a few flat arrays, built once (dst_dali.data.coco_index,
dst_dali.data.catalog) and memory-mapped by every rank and every later run
(dst_dali.data.index_cache)."""
import itertools
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from .columns import ImageIds, Paths, Ragged, Strings, offsets_of, ranges

logger = logging.getLogger("dst_dali.dataset")  # the name users filter logs by

# Boxes with a side under this many pixels are no training target (DALI's COCO reader and
# detectron2's filter_empty_instances drop them too); the index counts them.
MIN_BOX_SIDE = 0.1
BOX_TOLERANCE = 1.0  # px a box may exceed its image (CollageStitch clips it); more is an error
MAX_LISTED = 20      # problems listed in one error; the rest are counted
# The version of the rules above and below: an index cached under other rules is not reused.
# the largest side an image entry may give: PNG's limit (JPEG's is 65535), and far inside int64
MAX_IMAGE_SIDE = 2 ** 31 - 1
RULES = {"version": 2, "min_box_side": MIN_BOX_SIDE, "box_tolerance": BOX_TOLERANCE,
         "max_image_side": MAX_IMAGE_SIDE}
SKIPS = ("crowd_annotations", "degenerate_boxes", "dropped_polygons", "rle_segmentations",
         "images_without_annotations")


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
    to DALI: boxes[i] (N, 4) float32 ltrb pixels, labels[i] (N,) int32 contiguous 0..C-1,
    polygons[i] (P, 3) int32 [box index, first vertex, one past last] and vertices[i] (V, 2)
    float32 (x, y), each a view into one flat array (dst_dali.data.columns)."""
    source: str                                    # the annotation file, for messages
    category_ids: List[int]                        # sorted: contiguous id i <-> category_ids[i]
    category_names: List[str]
    image_ids: ImageIds
    file_paths: Paths
    sizes: np.ndarray                              # (n, 2) int64 (height, width)
    boxes: Ragged
    labels: Ragged
    polygons: Ragged
    vertices: Ragged
    skipped: Dict[str, int] = field(default_factory=dict)
    rle_annotations: List[str] = field(default_factory=list)  # non-crowd RLE masks (where)
    polygons_read: bool = True                     # False: polygons left unread (no masks)
    cache: Optional[str] = None                    # the cache directory it was mapped from
    built: bool = False                            # this process built that cache

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)

    @property
    def landscape(self) -> np.ndarray:
        """(n,) bool: wider than tall (the orientation detectron2 groups batches by)."""
        return self.sizes[:, 1] > self.sizes[:, 0]

    def arrays(self) -> Dict[str, np.ndarray]:
        """The index as flat arrays (what dst_dali.data.index_cache saves)."""
        out = {"sizes": self.sizes, "category_ids": np.asarray(self.category_ids, np.int64)}
        for name in ("boxes", "labels", "polygons", "vertices"):
            out.update(getattr(self, name).arrays(name))
        out.update(self.image_ids.arrays("image_ids"))
        out.update(self.file_paths.names.arrays("file_names"))
        return out

    def meta(self) -> dict:
        """What the arrays do not hold (plain JSON values)."""
        return {"source": self.source, "category_names": self.category_names,
                "skipped": self.skipped, "rle_annotations": self.rle_annotations,
                "polygons_read": self.polygons_read}

    @classmethod
    def from_arrays(cls, arrays: Dict[str, np.ndarray], meta: dict, root: str,
                    cache: Optional[str] = None) -> "DatasetIndex":
        return cls(source=meta["source"], category_ids=arrays["category_ids"].tolist(),
                   category_names=list(meta["category_names"]),
                   image_ids=ImageIds.from_arrays(arrays, "image_ids"),
                   file_paths=Paths(root, Strings.from_arrays(arrays, "file_names")),
                   sizes=arrays["sizes"],
                   **{name: Ragged.from_arrays(arrays, name)
                      for name in ("boxes", "labels", "polygons", "vertices")},
                   skipped=dict(meta["skipped"]), rle_annotations=list(meta["rle_annotations"]),
                   polygons_read=meta.get("polygons_read", True), cache=cache)


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def is_integer(v) -> bool:
    """An int, not a bool (True is an int to Python, never a count to a user)."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def existing_files(paths: List[str]) -> np.ndarray:
    """(n,) bool: whether each path names a file. One directory listing a folder, not one stat
    a file (a million-image folder on NFS)."""
    listed: Dict[str, Optional[set]] = {}
    out = np.zeros(len(paths), bool)
    for i, path in enumerate(paths):
        folder, name = os.path.split(path)
        names = listed.get(folder, False)
        if names is False:
            try:
                with os.scandir(folder or ".") as it:
                    names = listed[folder] = {e.name for e in it if e.is_file()}
            except OSError:
                names = listed[folder] = None
        out[i] = name in names if names is not None else os.path.isfile(path)
    return out


class AcceptedImages:
    """The images a dataset's entries accept, in order, and how an annotation finds its own:
    `positions(ids)` gives each id's position, -1 for an id no entry lists and -2 for one
    whose entry was refused (its annotations go with it, unreported)."""

    def __init__(self, root: str):
        self.root = root
        self.ids: list = []
        self.names: List[str] = []
        self.sizes: List[tuple] = []
        self.refused: set = set()
        self._sorted = None

    def accept_all(self, ids: list, names: List[str], heights, widths) -> None:
        self.ids, self.names = ids, names
        self.sizes = np.stack([heights, widths], 1).astype(np.int64).reshape(-1, 2)

    def add(self, image_id, file_name: str, path: str, height, width, problems: List[str],
            known: Dict) -> None:
        """One entry, checked; `known`: id -> file name of the entries accepted so far."""
        if isinstance(image_id, np.generic):  # e.g. VOC's ids, read by numpy: plain Python
            image_id = image_id.item()
        where = f"image {image_id!r} ({file_name})"
        if not isinstance(image_id, (int, str)) or isinstance(image_id, bool):
            problems.append(f"{where}: its id is neither an integer nor a string")
            return
        refused = f"{where}: "
        if image_id in known:
            same = known[image_id] == file_name
            problems.append(refused + ("listed twice" if same else
                                       f"its id is also {known[image_id]}'s"))
        elif not isinstance(file_name, str):
            problems.append(refused + f"file_name {file_name!r} is not a string")
        elif not all(is_number(v) and 1 <= v <= MAX_IMAGE_SIDE for v in (height, width)):
            problems.append(refused + f"height {height!r}, width {width!r} must be numbers "
                            f"from 1 to {MAX_IMAGE_SIDE}")
        elif not os.path.isfile(path):
            problems.append(refused + f"names {path}, which does not exist")
        else:
            known[image_id] = file_name
            self.ids.append(image_id)
            self.names.append(file_name)
            self.sizes.append((int(height), int(width)))
            return
        self.refused.add(image_id)

    def done(self) -> None:
        self.sizes = np.asarray(self.sizes, np.int64).reshape(-1, 2)
        self.refused -= set(self.ids)
        self._position = None
        if all(type(i) is int for i in self.ids) and all(type(i) is int for i in self.refused):
            try:
                ids = np.asarray(self.ids, np.int64)
                refused = np.asarray(sorted(self.refused), np.int64)
            except OverflowError:  # ids beyond 64 bits: looked up one by one
                return
            order = np.argsort(ids, kind="stable")
            self._sorted = (ids[order], order, refused)

    def positions(self, image_ids: list, typed: bool = False) -> np.ndarray:
        """typed: the ids are ints or strings (as decoded into coco_json's structs)."""
        wanted = None
        if self._sorted is not None and typed:
            wanted = np.array(image_ids)
            if wanted.dtype != np.int64:  # a string among them (never parsed as a number)
                wanted = None
        elif self._sorted is not None and all(type(i) is int for i in image_ids):
            wanted = np.asarray(image_ids, np.int64)
        if wanted is not None:
            keys, order, refused = self._sorted
            at = np.minimum(np.searchsorted(keys, wanted), max(len(keys) - 1, 0))
            found = keys[at] == wanted if len(keys) else np.zeros(len(wanted), bool)
            out = np.where(found, order[at] if len(keys) else 0, -1)
            if len(refused):
                out[~found & np.isin(wanted, refused)] = -2
            return out.astype(np.int64)
        if self._position is None:
            self._position = {image_id: p for p, image_id in enumerate(self.ids)}
        return np.fromiter((self._position.get(i, -2 if i in self.refused else -1)
                            if isinstance(i, (int, str)) else -1 for i in image_ids),
                           np.int64, len(image_ids))


class Targets:
    """The training targets of the accepted annotations, gathered a chunk at a time in file
    order: image position, box (ltrb, float64 until the end), contiguous label, and the valid
    polygons of each (their vertex counts and vertices)."""

    def __init__(self, num_categories: int, polygons: bool = True):
        self.num_categories, self.with_polygons = num_categories, polygons
        self.chunks: List[tuple] = []
        self.skipped = dict.fromkeys(SKIPS, 0)
        self.rle: List[str] = []

    def add(self, image, boxes, labels, poly_counts, poly_lengths, vertices) -> None:
        self.chunks.append((np.asarray(image, np.int64), np.asarray(boxes, np.float64),
                            np.asarray(labels, np.int32), np.asarray(poly_counts, np.int64),
                            np.asarray(poly_lengths, np.int64),
                            np.asarray(vertices, np.float32).reshape(-1, 2)))

    def valid_polygons(self, per_segmentation, per_polygon, numbers):
        """(polygons an annotation, vertex count a polygon, vertices) of the valid polygons,
        counting the dropped ones: odd-length or under 3 points (detectron2 drops them too)."""
        valid = (per_polygon % 2 == 0) & (per_polygon >= 6)
        self.skipped["dropped_polygons"] += int((~valid).sum())
        owner = np.repeat(np.arange(len(per_segmentation)), per_segmentation)
        counts = np.bincount(owner[valid], minlength=len(per_segmentation))
        return counts, per_polygon[valid] // 2, numbers[np.repeat(valid, per_polygon)]

    def polygons(self, segmentations: list):
        """valid_polygons() of decoded segmentations: lists of polygons (a polygon that is not
        a list of numbers is dropped), None, or an RLE dict (no polygon)."""
        if not self.with_polygons:
            return np.zeros(len(segmentations), np.int64), (), ()
        lists = [[p for p in s if isinstance(p, list) and all(map(is_number, p))]
                 if isinstance(s, list) else [] for s in segmentations]
        self.skipped["dropped_polygons"] += sum(len(s) - len(good) for s, good in
                                                zip(segmentations, lists) if isinstance(s, list))
        return self.valid_polygons(
            np.fromiter(map(len, lists), np.int64, len(lists)),
            np.fromiter((len(p) for s in lists for p in s), np.int64),
            np.fromiter(itertools.chain.from_iterable(itertools.chain.from_iterable(lists)),
                        np.float64))

    def check(self, a: dict, where: str, category, height: int, width: int,
              problems: List[str]):
        """One annotation, checked as a plain dict: its (box, label, segmentation) when it is a
        training target, else None (its problem listed, or its skip counted)."""
        if category is None:
            problems.append(f"{where}: unknown category_id {a.get('category_id')!r} (the "
                            f"dataset defines {self.num_categories} categories)")
            return None
        crowd = a.get("iscrowd", 0)
        if not isinstance(crowd, (int, np.integer)) or crowd not in (0, 1):
            problems.append(f"{where}: iscrowd {crowd!r} must be 0 or 1 (an integer)")
            return None
        if crowd:
            self.skipped["crowd_annotations"] += 1
            return None
        bbox = a.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(map(is_number, bbox)):
            problems.append(f"{where}: bbox {bbox!r} is not 4 finite numbers (x, y, w, h)")
            return None
        x, y, w, h = bbox
        if w < MIN_BOX_SIDE or h < MIN_BOX_SIDE:
            self.skipped["degenerate_boxes"] += 1
            return None
        t = BOX_TOLERANCE
        if x < -t or y < -t or x + w > width + t or y + h > height + t:
            problems.append(f"{where}: bbox {bbox} (xywh) lies outside the {width}x{height} "
                            f"image by more than {t} px")
            return None
        segmentation = a.get("segmentation")
        if isinstance(segmentation, dict):
            self.rle.append(where)
        if segmentation is not None and not isinstance(segmentation, list):
            self.skipped["rle_segmentations"] += 1
        return (x, y, x + w, y + h), category, segmentation

    def add_checked(self, rows: List[tuple]) -> None:
        """(image position, what check() gave) of a chunk's training targets."""
        if rows:
            self.add([r[0] for r in rows], [r[1][0] for r in rows], [r[1][1] for r in rows],
                     *self.polygons([r[1][2] for r in rows]))


def log_skips(source: str, skipped: Dict[str, int]) -> None:
    """What training leaves out, said at every start (a cached index's too)."""
    for what, count in skipped.items():
        if count and what == "background_images":  # kept: YOLO trains on them
            logger.info("%s: %d background images (no box) kept", source, count)
        elif count:  # an empty or negative box is a flaw of the data: say so louder
            logger.log(logging.WARNING if what == "degenerate_boxes" else logging.INFO,
                       "%s: skipping %d %s", source, count,
                       "boxes of zero or negative width or height (under "
                       f"{MIN_BOX_SIDE} px)" if what == "degenerate_boxes"
                       else what.replace("_", " "))


def assemble(source: str, images: AcceptedImages, targets: Targets, category_ids, category_names,
             problems: List[str], strict: bool, keep_background: bool = False) -> DatasetIndex:
    """The index of the images with a training target (keep_background: of every accepted
    image, YOLO's background images among them): each image's targets in file order."""
    if problems and strict:
        raise DatasetError(source, problems)
    chunks = targets.chunks or [(np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0, np.int32),
                                 np.zeros(0, np.int64), np.zeros(0, np.int64),
                                 np.zeros((0, 2), np.float32))]
    image, boxes, labels, poly_counts, poly_lengths, vertices = (
        np.concatenate(column) for column in zip(*chunks))
    targets.chunks = []
    if (np.diff(image) < 0).any():  # by image, each image's in file order
        order = np.argsort(image, kind="stable")
        image, boxes, labels = image[order], boxes[order], labels[order]
        vertex_start = offsets_of(poly_lengths)[:-1]
        polygon = ranges(offsets_of(poly_counts)[:-1][order], poly_counts[order])
        vertices = vertices[ranges(vertex_start[polygon], poly_lengths[polygon])]
        poly_lengths, poly_counts = poly_lengths[polygon], poly_counts[order]
    m = len(images.ids)
    box_counts = np.bincount(image, minlength=m)
    owner = np.repeat(image, poly_counts)                    # each polygon's image
    box_of = np.repeat(np.arange(len(image)), poly_counts)   # each polygon's annotation
    box_offsets = offsets_of(box_counts)
    vertex_offsets = offsets_of(np.bincount(owner, weights=poly_lengths, minlength=m)
                                .astype(np.int64))
    first = offsets_of(poly_lengths)[:-1] - vertex_offsets[owner]
    polygons = np.stack([box_of - box_offsets[owner], first, first + poly_lengths], 1)
    usable = box_counts > 0
    if keep_background:
        targets.skipped["background_images"] = int((~usable).sum())
        usable = np.ones(m, bool)
    else:
        targets.skipped["images_without_annotations"] = int((~usable).sum())
    if not usable.any() or not box_counts.any():
        raise DatasetError(source, ["no image has a usable (non-crowd, non-degenerate) "
                                    "annotation"])
    log_skips(source, targets.skipped)
    keep = np.flatnonzero(usable).tolist()
    poly_image_counts = np.bincount(owner, minlength=m)[usable]
    return DatasetIndex(
        source=source, category_ids=list(category_ids), category_names=list(category_names),
        image_ids=ImageIds.of([images.ids[p] for p in keep]),
        file_paths=Paths(images.root, Strings.of([images.names[p] for p in keep])),
        sizes=images.sizes[usable],
        boxes=Ragged(boxes.astype(np.float32), offsets_of(box_counts[usable])),
        labels=Ragged(labels, offsets_of(box_counts[usable])),
        polygons=Ragged(polygons.astype(np.int32), offsets_of(poly_image_counts)),
        vertices=Ragged(vertices,
                        offsets_of(np.diff(vertex_offsets)[usable])),
        skipped=targets.skipped, rle_annotations=targets.rle,
        polygons_read=targets.with_polygons)


def concatenate(indices: List[DatasetIndex], source: str) -> DatasetIndex:
    """Several datasets' indices as one (detectron2's several DATASETS.TRAIN), of the same
    classes; an image id in two of them is an error, as within one."""
    ids = [i for index in indices for i in index.image_ids]
    if len(set(ids)) < len(ids):
        seen: set = set()
        twice = [i for i in ids if i in seen or seen.add(i)]
        raise DatasetError(source, [f"image {i!r}: listed in two datasets" for i in twice])
    arrays = {}
    for name in ("boxes", "labels", "polygons", "vertices"):
        columns = [getattr(index, name) for index in indices]
        arrays[name] = np.concatenate([c.values for c in columns])
        arrays[f"{name}_offsets"] = offsets_of(np.concatenate([c.counts() for c in columns]))
    arrays["sizes"] = np.concatenate([index.sizes for index in indices])
    arrays["category_ids"] = np.asarray(indices[0].category_ids, np.int64)
    arrays.update(ImageIds.of(ids).arrays("image_ids"))
    arrays.update(Strings.of([p for index in indices for p in index.file_paths])
                  .arrays("file_names"))
    skipped = {what: sum(index.skipped.get(what, 0) for index in indices) for what in SKIPS}
    meta = {"source": source, "category_names": indices[0].category_names, "skipped": skipped,
            "rle_annotations": [w for index in indices for w in index.rle_annotations]}
    meta["polygons_read"] = all(index.polygons_read for index in indices)
    return DatasetIndex.from_arrays(arrays, meta, "")
