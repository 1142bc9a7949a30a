"""YOLO-format datasets (the layout Ultralytics reads) into the same checked, cached index as a
COCO file: a data yaml naming the root, the splits and the class names, and beside each image
folder a parallel `labels/` folder of text files, one line an object:

    class cx cy w h               a box, normalised to [0, 1] by the image's width and height
    class x1 y1 x2 y2 ... xn yn   a polygon (3 or more points), its box the points' extent

    path: datasets/coco128        # the root; the splits are relative to it
    train: images/train2017       # a folder of images, a list of them, or a .txt list of images
    val: images/val2017
    names: {0: person, 1: bicycle, ...}    # or a list

An image's labels are the file that has its path with the last `/images/` made `/labels/` and
its suffix `.txt`. An image without one (or with an empty one) is a background image: it stays
in the index, with no box. Every bad line is named with its file and line number: a class
outside `names`, a coordinate outside [0, 1] beyond YOLO's own 1% tolerance, a wrong field
count, a zero-size box, a file mixing boxes and polygons (YOLO refuses each too). Exact
duplicate lines are dropped and counted, as YOLO drops them.

The cache key covers every image's and label file's path, size and modification time (one
stat a file: a label file changed since the build is noticed at the next start), the yaml's
text, the index format and the rules.
"""
import hashlib
import os
from typing import Dict, List, Optional, Tuple

import numpy as np

from .index import (
    RULES,
    AcceptedImages,
    DatasetError,
    DatasetIndex,
    Targets,
    assemble,
    log_skips,
)

# the image suffixes a split's folder is searched for: those DALI decodes among YOLO's own
IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
COORDINATE_TOLERANCE = 0.01  # YOLO's: coordinates up to 1.01, and down to -0.01
RULES_YOLO = dict(RULES, coordinate_tolerance=COORDINATE_TOLERANCE, format="yolo", version=1)


def read_data_yaml(path: str) -> dict:
    """The yaml's root (absolute), splits as given and class names as a list."""
    import yaml
    with open(path) as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise DatasetError(path, [f"not valid YAML ({e})"]) from None
    if not isinstance(data, dict):
        raise DatasetError(path, ["not a mapping of path, train, val and names"])
    names = data.get("names")
    if isinstance(names, dict):
        keys = sorted(names)
        if keys != list(range(len(keys))):
            raise DatasetError(path, [f"names: the keys must be 0..{len(keys) - 1}, are "
                                      f"{keys[:10]}"])
        names = [names[k] for k in keys]
    if not isinstance(names, list) or not names:
        raise DatasetError(path, ["names: a list (or a mapping 0..C-1) of class names is "
                                  "needed"])
    root = data.get("path") or "."
    root = os.path.expanduser(str(root))
    if not os.path.isabs(root):
        root = os.path.join(os.path.dirname(os.path.abspath(path)), root)
    return {"root": os.path.normpath(root), "names": [str(n) for n in names],
            "splits": {k: data[k] for k in ("train", "val", "test") if data.get(k)}}


def split_images(data: dict, split: str, source: str) -> List[str]:
    """The absolute paths of a split's images, in a stable order (sorted within each folder)."""
    if split not in data["splits"]:
        raise DatasetError(source, [f"no split {split!r} (it has {sorted(data['splits'])})"])
    spec = data["splits"][split]
    out: List[str] = []
    for item in spec if isinstance(spec, list) else [spec]:
        path = os.path.join(data["root"], str(item))
        if os.path.isdir(path):
            found = []
            for folder, _, files in os.walk(path):
                found += [os.path.join(folder, f) for f in files
                          if os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES]
            out += sorted(found)
        elif os.path.isfile(path) and path.endswith(".txt"):
            parent = os.path.dirname(path)
            with open(path) as f:
                lines = [line.strip() for line in f if line.strip()]
            out += [line if os.path.isabs(line) else os.path.normpath(os.path.join(parent, line))
                    for line in lines]
        else:
            raise DatasetError(source, [f"{split}: {path} is neither a folder of images nor a "
                                        ".txt list of them"])
    return out


def label_path(image: str) -> str:
    """YOLO's rule: the last /images/ of the path made /labels/, the suffix .txt."""
    head, sep, tail = image.rpartition(f"{os.sep}images{os.sep}")
    base = head + f"{os.sep}labels{os.sep}" + tail if sep else image
    return os.path.splitext(base)[0] + ".txt"


def image_size(path: str) -> Optional[Tuple[int, int]]:
    """(height, width) as decoded: the header's, swapped where EXIF turns it a quarter."""
    from PIL import Image
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112) if image.format == "JPEG" else None
    except Exception:
        return None
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


def parse_labels(text: str, where: str, num_classes: int, problems: List[str]):
    """(classes, boxes as normalised xyxy, polygons as lists of normalised (x, y) arrays or
    None, duplicates dropped) of one label file's text; each bad line listed in problems."""
    rows, shapes = [], set()
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        at = f"{where}, line {number}"
        if len(fields) != 5 and (len(fields) < 7 or len(fields) % 2 == 0):
            problems.append(f"{at}: {len(fields)} fields; a box is 'class cx cy w h' (5), a "
                            "polygon 'class x1 y1 ... xn yn' (7 or more, odd)")
            continue
        try:
            values = [float(v) for v in fields]
        except ValueError:
            problems.append(f"{at}: {line.strip()!r} is not all numbers")
            continue
        if not all(np.isfinite(values)):
            problems.append(f"{at}: {line.strip()!r} is not all finite numbers")
            continue
        cls = values[0]
        if cls != int(cls) or not 0 <= cls < num_classes:
            problems.append(f"{at}: class {fields[0]} is outside names (0..{num_classes - 1})")
            continue
        coords = np.array(values[1:], np.float64)
        t = COORDINATE_TOLERANCE
        if coords.max() > 1 + t or coords.min() < -t:
            problems.append(f"{at}: coordinates {fields[1:]} lie outside [0, 1] by more than "
                            f"YOLO's tolerance of {t:g}")
            continue
        if len(coords) == 4:
            cx, cy, w, h = coords
            if w < 0 or h < 0:
                problems.append(f"{at}: a negative width or height ({fields[3]}, {fields[4]})")
                continue
            box, polygon = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]), None
        else:
            polygon = coords.reshape(-1, 2)
            box = np.concatenate([polygon.min(0), polygon.max(0)])
        if box[2] <= box[0] or box[3] <= box[1]:
            problems.append(f"{at}: a zero-size box")
            continue
        shapes.add("polygon" if polygon is not None else "box")
        rows.append((number, int(cls), box, polygon, tuple(values)))
    if len(shapes) > 1:
        problems.append(f"{where}: mixes boxes and polygons (lines "
                        f"{', '.join(str(r[0]) for r in rows)}); YOLO reads one or the other")
        return [], [], None, 0
    seen, kept = set(), []
    for row in rows:
        if row[4] not in seen:
            seen.add(row[4])
            kept.append(row)
    polygons = [r[3] for r in kept] if "polygon" in shapes else None
    return [r[1] for r in kept], [r[2] for r in kept], polygons, len(rows) - len(kept)


def yolo_key(source: str, split: str, images: List[str], names: List[str],
             rules: dict) -> dict:
    """What the cached index of a YOLO split depends on, in the fields of a COCO file's key
    (dst_dali.data.index_cache.coco_key): its source (the data yaml, or the image folder) and
    split are the dataset; the source's stat, the class names and a digest of every image's and
    label file's path, size and modification time (one stat each) its version."""
    from .index_cache import FORMAT
    st = os.stat(source)
    digest = hashlib.sha256("\0".join(names).encode())
    for path in images:
        for file in (path, label_path(path)):
            try:
                stat = os.stat(file)
                digest.update(f"{file}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
            except OSError:
                digest.update(f"{file}\0-\n".encode())
    return {"format": FORMAT, "rules": rules, "annotations": os.path.realpath(source),
            "images": f"split {split}", "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "inode": st.st_ino, "sample": digest.hexdigest()}


def build_yolo_index(data_yaml: str, split: str = "train", images: Optional[List[str]] = None,
                     problems: Optional[List[str]] = None, polygons: bool = True,
                     data: Optional[dict] = None) -> DatasetIndex:
    """Reads and checks a YOLO split (see the module). problems: given a list, bad lines and
    images are added to it and left out, else one DatasetError lists them all. data: the
    yaml as read_data_yaml gives it, if read already."""
    data = data or read_data_yaml(data_yaml)
    names = data["names"]
    source = f"{data_yaml} ({split})"
    images = split_images(data, split, data_yaml) if images is None else images
    strict = problems is None
    problems = [] if strict else problems
    accepted = AcceptedImages(data["root"])
    targets = Targets(len(names), polygons)
    known: Dict[int, str] = {}
    duplicates, rows = 0, []
    for n, path in enumerate(images):
        name = os.path.relpath(path, data["root"])
        if not os.path.isfile(path):
            problems.append(f"image {name}: {path} does not exist")
            continue
        size = image_size(path)
        if size is None:
            problems.append(f"image {name}: its header does not parse as an image")
            continue
        height, width = size
        before = len(accepted.ids)
        accepted.add(n, name, path, height, width, problems, known)
        if len(accepted.ids) == before:
            continue
        labels = label_path(path)
        if not os.path.isfile(labels):
            continue  # a background image
        with open(labels, encoding="utf-8-sig") as f:
            text = f.read()
        classes, boxes, polys, dropped = parse_labels(
            text, os.path.relpath(labels, data["root"]), len(names), problems)
        duplicates += dropped
        scale = np.array([width, height, width, height], np.float64)
        for i, (cls, box) in enumerate(zip(classes, boxes)):
            ltrb = np.clip(box * scale, 0, scale)  # YOLO's tolerance, clipped to the image
            segmentation = None
            if polys is not None and polygons:
                segmentation = [(np.clip(polys[i], 0, 1) * scale[:2]).ravel().tolist()]
            rows.append((before, (tuple(ltrb.tolist()), cls, segmentation)))
    accepted.done()
    targets.add_checked(rows)
    targets.skipped["duplicate_labels"] = duplicates
    return assemble(source, accepted, targets, list(range(len(names))), names, problems,
                    strict, keep_background=True)


def load_yolo_index(data_yaml: str, split: str = "train", problems: Optional[List[str]] = None,
                    cache_dir: Optional[str] = None, cache: bool = True,
                    polygons: bool = True) -> DatasetIndex:
    """A YOLO split's checked index, cached like a COCO file's (dst_dali.data.index_cache): a
    later start stats every image and label file to key it, then maps it."""
    if not os.path.isfile(data_yaml):
        raise FileNotFoundError(f"data={data_yaml!r}: no such file")
    data = read_data_yaml(data_yaml)
    images = split_images(data, split, data_yaml)
    return _load(data_yaml, split, data, images, problems, cache_dir, cache, polygons)


def load_yolo_images(images: str, names, root: Optional[str] = None,
                     cache_dir: Optional[str] = None, polygons: bool = True) -> DatasetIndex:
    """The checked, cached index of a folder of images (or a .txt list, or a list of either)
    with YOLO's labels beside them, and the class `names` (a list, or Ultralytics' {id: name}):
    what Ultralytics' trainer hands a data loader, its data yaml already resolved."""
    names = [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names)
    spec = images if isinstance(images, list) else [images]
    root = root or os.path.commonpath([os.path.dirname(os.path.abspath(str(p))) for p in spec])
    data = {"root": root, "names": [str(n) for n in names], "splits": {"train": spec}}
    source = os.path.abspath(str(spec[0]))
    return _load(source, "train", data, split_images(data, "train", source), None, cache_dir,
                 True, polygons)


def _load(source, split, data, images, problems, cache_dir, cache, polygons):
    found: List[str] = []

    def build():
        index = build_yolo_index(source, split, images, data=data,
                                 problems=found if problems is not None else None,
                                 polygons=polygons)
        return index, not found
    if not cache:
        index, _ = build()
    else:
        from . import index_cache
        key = yolo_key(source, split, images, data["names"], dict(RULES_YOLO, polygons=polygons))
        index = index_cache.load_or_build(key, build, data["root"], cache_dir)
        if not index.built and index.cache:
            log_skips(index.source, index.skipped)
    if problems is not None:
        problems.extend(found)
    return index
