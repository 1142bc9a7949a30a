"""Reading a COCO instances file without holding it as Python objects: msgspec splits the
file into its entries' raw JSON text, and the annotations are decoded a chunk at a time into
typed structs (a few machine values each) that dst_dali.data.index checks with numpy. A chunk
that does not fit the types (a missing key, a string where a number belongs) is decoded
loosely instead, into plain dicts, and checked entry by entry, so every problem is still
listed, naming its entry. A file msgspec cannot parse (NaN, which Python's json writes) is
read with Python's json and checked loosely throughout."""
import array
import json
from typing import Any, Iterator, List, NamedTuple, Optional, Tuple, Union

import msgspec
import numpy as np

CHUNK = 50_000  # annotations decoded at once: a few MB of structs


# gc=False: decoded JSON holds no reference cycle, and untracked structs decode 4x faster (the
# collector no longer walks millions of them).
class Image(msgspec.Struct, gc=False):
    id: Union[int, str]
    file_name: str
    height: Union[int, float]
    width: Union[int, float]


class Annotation(msgspec.Struct, gc=False):
    image_id: Union[int, str]
    category_id: int
    bbox: Tuple[float, float, float, float]
    iscrowd: int = 0
    segmentation: msgspec.Raw = msgspec.Raw(b"null")  # parsed only when polygons are wanted
    id: Any = None


class _Entries(msgspec.Struct):
    """The file's top level, its lists kept as raw text."""
    images: msgspec.Raw = msgspec.Raw(b"null")
    annotations: List[msgspec.Raw] = []
    categories: Any = None


class Chunk(NamedTuple):
    """Annotations first .. first + len - 1 of the file: typed structs, or None when some
    entry does not fit the types; `loose()` decodes them as plain dicts."""
    first: int
    typed: Optional[List[Annotation]]
    loose: Any


class CocoFile(NamedTuple):
    categories: Any
    images: Optional[List[Image]]        # None: decode them loosely
    loose_images: Any                    # () -> list of dicts (or what the file holds)
    chunks: Any                          # () -> Iterator[Chunk]
    num_annotations: int


class NotJSON(ValueError):
    """The file is not JSON (the message says where)."""


class NotCoco(ValueError):
    """The file is JSON but not shaped as a COCO file (the message says how)."""


TOO_DEEP = ("it nests deeper than a JSON reader can follow (Python's recursion limit); a COCO "
            "file nests a few levels")


def kind_of(value) -> str:
    """A JSON value's kind, as a message names it."""
    for kinds, name in (((dict,), "an object"), ((list,), "a list"), ((str,), "a string"),
                        ((bool,), "a boolean"), ((int, float), "a number")):
        if isinstance(value, kinds):
            return name
    return "null"


def read(path: str, force_loose: bool = False) -> CocoFile:
    """The file's categories, images and annotation chunks. Raises NotJSON for a file that is
    not JSON (a truncated one among them, or one nested too deep to read), NotCoco for JSON
    whose top level or lists are of another kind than COCO's."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        entries = msgspec.json.decode(data, type=_Entries)
    except msgspec.DecodeError as e:
        if "truncated" in str(e):
            raise NotJSON(f"{e}: the file ends before its JSON does (was it written in "
                          "full?)") from None
        return _read_with_python_json(data)
    except msgspec.ValidationError:  # not an object, or lists that are not lists
        return _read_with_python_json(data)
    except RecursionError:
        raise NotJSON(TOO_DEEP) from None
    images = None
    if not force_loose:
        try:
            images = msgspec.json.decode(entries.images, type=List[Image])
        except msgspec.ValidationError:  # not a list of typed images (null among them)
            pass

    def chunks() -> Iterator[Chunk]:
        raws = entries.annotations
        for first in range(0, len(raws), CHUNK):
            text = b"[" + _span(data, raws[first:first + CHUNK]) + b"]"
            typed = None
            if not force_loose:
                try:
                    typed = msgspec.json.decode(text, type=List[Annotation])
                except msgspec.ValidationError:
                    pass
            yield Chunk(first, typed, lambda text=text: msgspec.json.decode(text))

    return CocoFile(entries.categories, images, lambda: msgspec.json.decode(entries.images), chunks,
                    len(entries.annotations))


def _span(data: bytes, raws: List[msgspec.Raw]) -> bytes:
    """The file's text from the first of consecutive entries to the end of the last: the raw
    entries are views of the file's bytes, so this is one slice, not a join of many."""
    base = np.frombuffer(data, np.uint8).ctypes.data
    start = np.frombuffer(raws[0], np.uint8).ctypes.data - base
    last = np.frombuffer(raws[-1], np.uint8)
    stop = last.ctypes.data - base + len(last)
    if 0 <= start < stop <= len(data) and data[start:start + len(raws[0])] == bytes(raws[0]):
        return data[start:stop]
    return b",".join(raws)  # not views of it after all


_BRACKETS = bytes.maketrans(b"[]", b"  ")


def polygon_numbers(raws: List[msgspec.Raw]) -> Optional[tuple]:
    """The polygons of list segmentations, each [[x, y, ...], ...] as raw text: (polygons a
    segmentation, numbers a polygon, all numbers as float64). The numbers are decoded at once,
    brackets blanked out, into one flat list; the structure is read off the brackets' and
    commas' positions. None when some segmentation is not a list of non-empty lists of
    numbers (the caller then decodes them one by one)."""
    text = b",".join(raws)
    t = np.frombuffer(text, np.uint8)
    brackets = np.flatnonzero((t == ord("[")) | (t == ord("]")))
    step = np.where(t[brackets] == ord("["), 1, -1).astype(np.int32)
    depth = np.cumsum(step, dtype=np.int32)  # after each bracket
    if not len(raws) or depth.min(initial=0) < 0 or depth.max(initial=0) > 2:
        return None
    opened = depth[step == 1]
    segmentations = brackets[step == 1][opened == 1]
    polygons = brackets[step == 1][opened == 2]
    if len(segmentations) != len(raws):
        return None
    ends = brackets[step == -1][depth[step == -1] == 1]  # each polygon's "]", in order
    commas = np.flatnonzero(t == ord(","))
    per_polygon = np.searchsorted(commas, ends) - np.searchsorted(commas, polygons) + 1
    per_segmentation = np.bincount(np.searchsorted(segmentations, polygons) - 1,
                                   minlength=len(segmentations))
    try:
        numbers = msgspec.json.decode(b"[" + text.translate(_BRACKETS) + b"]", type=List[float])
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if len(numbers) != per_polygon.sum():  # an empty polygon, or numbers outside polygons
        return None
    return per_segmentation, per_polygon, np.frombuffer(array.array("d", numbers), np.float64)


def _read_with_python_json(data: bytes) -> CocoFile:
    try:
        top = json.loads(data)
    except ValueError as e:
        raise NotJSON(str(e)) from None
    except RecursionError:
        raise NotJSON(TOO_DEEP) from None
    if not isinstance(top, dict):
        raise NotCoco(f"the top level is {kind_of(top)}, not an object of images, annotations "
                      "and categories")
    for key in ("images", "annotations"):
        if top.get(key) is not None and not isinstance(top[key], list):
            raise NotCoco(f"{key} is {kind_of(top[key])}, not a list")
    anns = top.get("annotations") or []

    def chunks() -> Iterator[Chunk]:
        for first in range(0, len(anns), CHUNK):
            yield Chunk(first, None, lambda first=first: anns[first:first + CHUNK])
    return CocoFile(top.get("categories"), None, lambda: top.get("images"), chunks, len(anns))
