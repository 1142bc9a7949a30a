"""The index of datasets registered in detectron2's DatasetCatalog: a COCO registration read
from its file (dst_dali.data.coco_index, cached), any other (PASCAL VOC, a list of dicts) from the
dicts detectron2's own loader gives, checked by the same rules."""
import os
from typing import List, Optional

from .coco_index import load_coco_index
from .index import (
    AcceptedImages,
    DatasetIndex,
    Targets,
    assemble,
    concatenate,
    is_number,
)


def index_of_dataset_dicts(name: str, dicts: List[dict], category_ids: List[int],
                           category_names: List[str]) -> DatasetIndex:
    """The index of a detectron2 dataset: `dicts` as DatasetCatalog.get(name) gives them
    (file_name, height, width, image_id, annotations with bbox, bbox_mode, category_id as a
    contiguous id, optional segmentation and iscrowd). category_ids: the dataset's id of each
    contiguous class (what labels="coco" reports). Checked like a COCO file."""
    from detectron2.structures import BoxMode
    problems: List[str] = []
    images, targets, known, rows = AcceptedImages(""), Targets(len(category_ids)), {}, []
    for n, d in enumerate(dicts):
        missing = [key for key in ("file_name", "height", "width") if key not in d]
        if missing:
            problems.append(f"{name}[{n}]: no {', '.join(missing)}")
            continue
        p = len(images.ids)
        images.add(d.get("image_id", n), d["file_name"], d["file_name"], d["height"],
                   d["width"], problems, known)
        if len(images.ids) == p:
            continue
        height, width = images.sizes[p]
        for m, a in enumerate(d.get("annotations", [])):
            mode, bbox = a.get("bbox_mode", BoxMode.XYWH_ABS), a.get("bbox")
            if isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(map(is_number, bbox)):
                a = dict(a, bbox=list(BoxMode.convert(list(bbox), mode, BoxMode.XYWH_ABS)))
            category = a.get("category_id")
            checked = targets.check(a, f"{name}[{n}] annotation {m} ({d['file_name']})",
                                    category if category in range(len(category_ids)) else None,
                                    height, width, problems)
            if checked is not None:
                rows.append((p, checked))
    images.done()
    targets.add_checked(rows)
    return assemble(name, images, targets, category_ids, category_names, problems,
                    strict=True)


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


def _coco_registration(catalog, name: str, meta) -> Optional[tuple]:
    """(images, annotations) of a dataset registered by register_coco_instances (the builtin
    COCO sets among them): its loader is detectron2's load_coco_json of the file its metadata
    names. Else None (a list of dicts, VOC, a loader of the user's)."""
    json_file, image_root = getattr(meta, "json_file", None), getattr(meta, "image_root", None)
    loader = catalog[name]
    code = getattr(loader, "__code__", None)
    cells = [c.cell_contents for c in getattr(loader, "__closure__", None) or ()]
    if code is None or "load_coco_json" not in code.co_names or json_file not in cells or \
            image_root not in cells:
        return None
    return image_root, json_file


def detectron2_dataset_index(names, cache_dir: Optional[str] = None,
                             polygons: bool = True) -> DatasetIndex:
    """The index of datasets registered in detectron2's DatasetCatalog (register_coco_instances,
    the builtin COCO and PASCAL VOC sets, DatasetCatalog.register(name, fn) of a list of dicts),
    concatenated as detectron2 does for several DATASETS.TRAIN, with their MetadataCatalog's
    classes. A COCO registration is read from its file and cached (load_coco_index); others
    through detectron2's own loaders."""
    from detectron2.data import DatasetCatalog, MetadataCatalog
    names = [names] if isinstance(names, str) else list(names)
    for name in names:
        if name not in DatasetCatalog.list():
            raise ValueError(f"dataset {name!r} is not registered in detectron2's DatasetCatalog "
                             "(register it with register_coco_instances, register_pascal_voc "
                             "or DatasetCatalog.register)")
    meta = MetadataCatalog.get(names[0])
    classes = list(getattr(meta, "thing_classes", []))
    for name in names[1:]:
        other = list(getattr(MetadataCatalog.get(name), "thing_classes", []))
        if other != classes:
            raise ValueError(f"datasets {names[0]!r} and {name!r} have different classes")
    files = [_coco_registration(DatasetCatalog, name, MetadataCatalog.get(name))
             for name in names]
    if all(files):
        for name, (images, annotations) in zip(names, files):
            if not os.path.isfile(annotations):
                _catalog_dicts(DatasetCatalog, name)  # detectron2's message, and ours
        indices = [load_coco_index(images, annotations, cache_dir=cache_dir, polygons=polygons)
                   for images, annotations in files]
        if classes and len(classes) != indices[0].num_classes:
            raise ValueError(f"dataset {names[0]!r}: its metadata names {len(classes)} classes, "
                             f"its file {len(indices[0].category_ids)}")
        return indices[0] if len(indices) == 1 else concatenate(indices, "+".join(names))
    dicts = [d for name in names for d in _catalog_dicts(DatasetCatalog, name)]
    if not classes:
        found = [a.get("category_id") for d in dicts for a in d.get("annotations", [])]
        classes = [str(i) for i in range(max([c for c in found if isinstance(c, int)],
                                             default=-1) + 1)]
    to_contiguous = getattr(meta, "thing_dataset_id_to_contiguous_id", None)
    ids = (sorted(to_contiguous, key=to_contiguous.get) if to_contiguous
           else list(range(len(classes))))
    return index_of_dataset_dicts("+".join(names), dicts, ids, classes)
