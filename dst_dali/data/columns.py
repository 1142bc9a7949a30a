"""The columns a dataset index is made of: per-image lists (of boxes, of strings) held as one
flat array of values and one of offsets, so that a whole index is a handful of arrays that can
be saved as .npy files and memory-mapped (dst_dali.data.index_cache) instead of millions of Python
objects."""
import json
import os
from collections.abc import Sequence
from typing import Dict, List

import numpy as np


def offsets_of(counts) -> np.ndarray:
    """(n + 1,) int64: where each of n runs of `counts` items starts, and the end."""
    out = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=out[1:])
    return out


def ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The concatenation of arange(s, s + l) for each (s, l), without a Python loop."""
    lengths = np.asarray(lengths, np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    run_of = np.repeat(np.arange(len(lengths)), lengths)
    return np.asarray(starts, np.int64)[run_of] + np.arange(total) - offsets_of(lengths)[run_of]


def _position(p, n: int) -> int:
    p = int(p)
    if p < 0:
        p += n
    if not 0 <= p < n:
        raise IndexError(f"position {p} of {n}")
    return p


class Ragged(Sequence):
    """Item p is values[offsets[p]:offsets[p + 1]]: a view, never a copy."""

    def __init__(self, values: np.ndarray, offsets: np.ndarray):
        self.values, self.offsets = values, offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, p) -> np.ndarray:
        if isinstance(p, slice):
            return [self[i] for i in range(*p.indices(len(self)))]
        p = _position(p, len(self))
        return np.asarray(self.values[self.offsets[p]:self.offsets[p + 1]])

    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    def arrays(self, name: str) -> Dict[str, np.ndarray]:
        return {name: self.values, f"{name}_offsets": self.offsets}

    @classmethod
    def from_arrays(cls, arrays: Dict[str, np.ndarray], name: str) -> "Ragged":
        return cls(arrays[name], arrays[f"{name}_offsets"])


class Strings(Sequence):
    """Strings as one UTF-8 blob and offsets."""

    def __init__(self, blob: np.ndarray, offsets: np.ndarray):
        self.blob, self.offsets = blob, offsets

    @classmethod
    def of(cls, strings: List[str]) -> "Strings":
        encoded = [s.encode() for s in strings]
        blob = np.frombuffer(b"".join(encoded), np.uint8)
        return cls(blob, offsets_of(np.fromiter(map(len, encoded), np.int64, len(encoded))))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, p) -> str:
        if isinstance(p, slice):
            return [self[i] for i in range(*p.indices(len(self)))]
        p = _position(p, len(self))
        return self.blob[self.offsets[p]:self.offsets[p + 1]].tobytes().decode()

    def __iter__(self):
        data, offsets = self.blob.tobytes(), self.offsets.tolist()
        for a, b in zip(offsets, offsets[1:]):
            yield data[a:b].decode()

    def arrays(self, name: str) -> Dict[str, np.ndarray]:
        return {f"{name}_blob": self.blob, f"{name}_offsets": self.offsets}

    @classmethod
    def from_arrays(cls, arrays: Dict[str, np.ndarray], name: str) -> "Strings":
        return cls(arrays[f"{name}_blob"], arrays[f"{name}_offsets"])


class ImageIds(Sequence):
    """A dataset's image ids, as its file gives them: integers (one int64 array) or, when any
    is a string, each id's JSON text."""

    def __init__(self, ints: np.ndarray = None, texts: Strings = None):
        self.ints, self.texts = ints, texts

    @classmethod
    def of(cls, ids: list) -> "ImageIds":
        if all(type(i) is int for i in ids):
            try:
                return cls(ints=np.array(ids, np.int64).reshape(-1))
            except OverflowError:
                pass
        return cls(texts=Strings.of([json.dumps(i) for i in ids]))

    def __len__(self) -> int:
        return len(self.ints) if self.ints is not None else len(self.texts)

    def __getitem__(self, p):
        if isinstance(p, slice):
            return [self[i] for i in range(*p.indices(len(self)))]
        if self.ints is not None:
            return int(self.ints[_position(p, len(self))])
        return json.loads(self.texts[p])

    def __iter__(self):
        if self.ints is not None:
            return iter(self.ints.tolist())
        return map(json.loads, self.texts)

    def arrays(self, name: str) -> Dict[str, np.ndarray]:
        return ({name: self.ints} if self.ints is not None
                else self.texts.arrays(f"{name}_json"))

    @classmethod
    def from_arrays(cls, arrays: Dict[str, np.ndarray], name: str) -> "ImageIds":
        if name in arrays:
            return cls(ints=arrays[name])
        return cls(texts=Strings.from_arrays(arrays, f"{name}_json"))


class Paths(Sequence):
    """Image files: names joined to the image folder they are relative to."""

    def __init__(self, root: str, names: Strings):
        self.root, self.names = root, names

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, p) -> str:
        if isinstance(p, slice):
            return [self[i] for i in range(*p.indices(len(self)))]
        return os.path.join(self.root, self.names[p])

    def __iter__(self):
        return (os.path.join(self.root, name) for name in self.names)
