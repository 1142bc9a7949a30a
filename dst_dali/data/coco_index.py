"""The index of a COCO instances file: read in typed chunks (dst_dali.data.coco_json), checked with
numpy by the rules of dst_dali.data.index, every chunk with a problem checked again entry by entry
to name it; cached and memory-mapped (dst_dali.data.index_cache)."""
import logging
import os
from typing import Dict, List, Optional

import msgspec
import numpy as np

from . import coco_json
from .index import (
    BOX_TOLERANCE,
    MAX_IMAGE_SIDE,
    MIN_BOX_SIDE,
    RULES,
    AcceptedImages,
    DatasetError,
    DatasetIndex,
    Targets,
    assemble,
    existing_files,
    log_skips,
)

logger = logging.getLogger("dst_dali.coco_index")  # the name users filter logs by


def _polygons_of_raw(targets: Targets, raws: list, first: List[int]):
    """targets.polygons() of segmentations as raw JSON text (`first`: each one's first byte),
    parsed in one go when they are plain lists of polygons (coco_json.polygon_numbers), else
    one by one."""
    if not targets.with_polygons:
        return np.zeros(len(raws), np.int64), (), ()
    lists = [i for i, (r, b) in enumerate(zip(raws, first)) if b == ord("[") and len(r) > 2]
    if not lists:
        return np.zeros(len(raws), np.int64), (), ()
    parsed = coco_json.polygon_numbers([raws[i] for i in lists])
    if parsed is None:
        return targets.polygons([msgspec.json.decode(r) for r in raws])
    counts, lengths, vertices = targets.valid_polygons(*parsed)
    every = np.zeros(len(raws), np.int64)
    every[lists] = counts
    return every, lengths, vertices


def _typed_chunk(chunk, images: AcceptedImages, targets: Targets,
                 category_ids: np.ndarray) -> bool:
    """Checks a chunk of typed annotations with numpy and adds its targets; False (nothing
    added) when some entry has a problem, which the loose check then names."""
    anns = chunk.typed
    n = len(anns)
    position = images.positions([a.image_id for a in anns], typed=True)
    if (position == -1).any():
        return False
    cat = np.fromiter((a.category_id for a in anns), np.int64, n)
    crowd = np.fromiter((a.iscrowd for a in anns), np.int64, n)
    bbox = np.array([a.bbox for a in anns], np.float64).reshape(-1, 4)
    at = np.minimum(np.searchsorted(category_ids, cat), len(category_ids) - 1)
    known = category_ids[at] == cat
    listed = position >= 0
    if (listed & ~known).any() or (listed & (crowd != 0) & (crowd != 1)).any():
        return False
    live = listed & (crowd == 0)
    if (live & ~np.isfinite(bbox).all(1)).any():
        return False
    x, y, w, h = bbox.T
    degenerate = live & ((w < MIN_BOX_SIDE) | (h < MIN_BOX_SIDE))
    live &= ~degenerate
    # no accepted image: no annotation is listed, and the sizes are never looked at
    size = images.sizes[np.maximum(position, 0)] if len(images.sizes) else np.zeros((n, 2))
    t = BOX_TOLERANCE
    if (live & ((x < -t) | (y < -t) | (x + w > size[:, 1] + t) | (y + h > size[:, 0] + t))).any():
        return False
    targets.skipped["crowd_annotations"] += int((listed & (crowd == 1)).sum())
    targets.skipped["degenerate_boxes"] += int(degenerate.sum())
    kept = np.flatnonzero(live)
    segmentations = [anns[i].segmentation for i in kept.tolist()]
    first = [memoryview(s)[0] for s in segmentations]
    for i in np.flatnonzero(~np.isin(first, (ord("["), ord("n")))).tolist():
        targets.skipped["rle_segmentations"] += 1
        if first[i] == ord("{"):
            j = int(kept[i])
            a = anns[j]
            where = (f"annotation {a.id if a.id is not None else f'[{chunk.first + j}]'} of "
                     f"image {a.image_id!r} ({images.names[position[j]]})")
            targets.rle.append(where)
    counts, lengths, vertices = _polygons_of_raw(targets, segmentations, first)
    ltrb = np.stack([x, y, x + w, y + h], 1)[kept]
    targets.add(position[kept], ltrb, at[kept], counts, lengths, vertices)
    return True


def _loose_chunk(chunk, images: AcceptedImages, contiguous: Dict[int, int], targets: Targets,
                 problems: List[str]) -> None:
    """Checks a chunk entry by entry, listing every problem with its entry."""
    anns = chunk.loose()
    ids = [a.get("image_id") if isinstance(a, dict) else None for a in anns]
    position = images.positions(ids)
    rows = []
    for n, (a, image_id, p) in enumerate(zip(anns, ids, position.tolist())):
        label = f"[{chunk.first + n}]"
        if not isinstance(a, dict):
            problems.append(f"annotation {label}: not an object")
            continue
        where = f"annotation {a.get('id', label)} of image {image_id!r}"
        if p == -1:
            problems.append(f"{where}: no such image")
            continue
        if p == -2:  # its image was reported
            continue
        height, width = images.sizes[p].tolist()
        checked = targets.check(a, f"{where} ({images.names[p]})",
                                contiguous.get(a.get("category_id")), height, width, problems)
        if checked is not None:
            rows.append((p, checked))
    targets.add_checked(rows)


def _coco_images(coco: coco_json.CocoFile, entries, images_dir: str,
                 problems: List[str]) -> AcceptedImages:
    """The accepted images: the typed ones at once when none has a problem, else the loose
    ones (`entries` when the file had no typed images) one by one."""
    images = AcceptedImages(images_dir)
    if coco.images is not None:
        ids = [im.id for im in coco.images]
        names = [im.file_name for im in coco.images]
        heights = np.array([im.height for im in coco.images], np.float64)
        widths = np.array([im.width for im in coco.images], np.float64)
        sides = np.stack([heights, widths])
        if ((sides >= 1) & (sides <= MAX_IMAGE_SIDE)).all() and len(set(ids)) == len(ids) and \
                existing_files([os.path.join(images_dir, n) for n in names]).all():
            images.accept_all(ids, names, heights, widths)
            images.done()
            return images
    entries = coco.loose_images() if coco.images is not None else entries
    known = {}
    for n, im in enumerate(entries if isinstance(entries, list) else []):
        if not isinstance(im, dict):
            problems.append(f"images[{n}]: not an object")
            continue
        missing = [key for key in ("id", "file_name", "height", "width") if key not in im]
        if missing:
            problems.append(f"images[{n}]: no {', '.join(missing)}")
            if isinstance(im.get("id"), (int, str)):  # its annotations go with it, unreported
                images.refused.add(im["id"])
            continue
        images.add(im["id"], im["file_name"], os.path.join(images_dir, str(im["file_name"])),
                   im["height"], im["width"], problems, known)
    images.done()
    return images


def _categories(source: str, categories) -> tuple:
    """(sorted ids, names) of a file's categories."""
    if not isinstance(categories, list) or not all(
            isinstance(c, dict) and type(c.get("id")) is int and "name" in c for c in categories):
        raise DatasetError(source, ["categories: a list of {id (an integer), name} is needed"])
    cats = sorted(categories, key=lambda c: c["id"])
    twice = sorted({a["id"] for a, b in zip(cats, cats[1:]) if a["id"] == b["id"]})
    if twice:
        raise DatasetError(source, [f"categories: id {i} is listed twice" for i in twice])
    return [c["id"] for c in cats], [str(c["name"]) for c in cats]


def build_coco_index(images_dir: str, annotations: str, problems: Optional[List[str]] = None,
                     force_loose: bool = False, progress: bool = True,
                     polygons: bool = True) -> DatasetIndex:
    """Reads and checks a COCO instances file (see load_coco_index, which caches what this
    builds). force_loose: check every entry one by one (the reference the typed path is
    tested against). polygons=False: leave segmentations unread (no masks trained)."""
    try:
        coco = coco_json.read(annotations, force_loose=force_loose)
    except coco_json.NotJSON as e:
        raise DatasetError(annotations, [f"not valid JSON ({e})"]) from None
    except coco_json.NotCoco as e:
        raise DatasetError(annotations, [str(e)]) from None
    entries = coco.images if coco.images is not None else coco.loose_images()
    if entries is not None and not isinstance(entries, list):
        raise DatasetError(annotations, [f"images is {coco_json.kind_of(entries)}, not a list "
                                         "of image entries"])
    if not entries or not coco.categories:
        raise DatasetError(annotations, ["no images or no categories: an empty annotation file"])
    category_ids, category_names = _categories(annotations, coco.categories)
    strict = problems is None
    problems = [] if strict else problems
    images = _coco_images(coco, entries, images_dir, problems)
    outside = [name for name in images.names if os.path.isabs(name) or
               os.path.normpath(name).split(os.sep)[0] == os.pardir]
    if outside:  # allowed (detectron2 reads them too), but never silently
        logger.warning("%s: %d file_name(s) lie outside images=%s, e.g. %r", annotations,
                       len(outside), images_dir, outside[0])
    contiguous = {c: i for i, c in enumerate(category_ids)}
    ids = np.asarray(category_ids, np.int64)
    targets = Targets(len(category_ids), polygons)
    from tqdm import tqdm
    with tqdm(total=coco.num_annotations, unit="annotation", desc=f"indexing {annotations}",
              delay=3, disable=not progress, leave=False) as bar:
        for chunk in coco.chunks():
            if chunk.typed is None or not _typed_chunk(chunk, images, targets, ids):
                _loose_chunk(chunk, images, contiguous, targets, problems)
            bar.update(len(chunk.typed) if chunk.typed is not None else coco_json.CHUNK)
    del coco  # the file's text: freed before the index is put together
    return assemble(annotations, images, targets, category_ids, category_names, problems,
                    strict)


def load_coco_index(images_dir: str, annotations: str, problems: Optional[List[str]] = None,
                    cache_dir: Optional[str] = None, cache: bool = True,
                    progress: bool = True, polygons: bool = True) -> DatasetIndex:
    """Reads and checks a COCO instances file. Every bad entry is reported in one DatasetError
    (a ValueError) naming the file and the entry; or, given a `problems` list, added to it and
    left out of the index. Crowd annotations are not training targets (as in detectron2); boxes
    with a side under MIN_BOX_SIDE px, malformed polygons and images left with no annotation are
    skipped and counted in `skipped`. polygons=False: segmentations are left unread (training
    without masks), which halves the cold build's time on COCO.

    The index of a file without problems is cached (dst_dali.data.index_cache, in `cache_dir` or
    its default): later calls, from any process of the node, map it in milliseconds, until the
    file, the image folder or the rules change. cache=False: build it here, cache nothing."""
    if not os.path.isdir(images_dir):
        raise FileNotFoundError(f"images={images_dir!r}: no such directory")
    if not os.path.isfile(annotations):
        raise FileNotFoundError(f"annotations={annotations!r}: no such file")
    found: List[str] = []

    def build():
        index = build_coco_index(images_dir, annotations,
                                 problems=found if problems is not None else None,
                                 progress=progress, polygons=polygons)
        return index, not found
    if not cache:
        index, _ = build()
    else:
        from . import index_cache
        key = index_cache.coco_key(images_dir, annotations, dict(RULES, polygons=polygons))
        index = None if polygons else index_cache.find(  # one with polygons serves too
            index_cache.coco_key(images_dir, annotations, dict(RULES, polygons=True)),
            images_dir, cache_dir)
        index = index or index_cache.load_or_build(key, build, images_dir, cache_dir)
        if not index.built and index.cache:
            log_skips(index.source, index.skipped)
    if problems is not None:
        problems.extend(found)
    return index
