"""The images a run does not read, and why: found when met (the feed's flags from
dst_dali.data.image_files; a decoded size other than the entry's; a batch DALI fails on, whose files
are then decoded again one by one), and replaced in every later group, as detectron2's loader
replaces an image its mapper fails on."""
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..data.checks import decode_sizes
from ..data.index import DatasetIndex
from .rng import REPLACE, generator

BAD_IMAGES = ("stop", "skip")  # what a bad image does when met: raise, or log and go on


class BadImages:
    """`set_aside`: dataset position -> why its image is not read, for the rest of the run."""

    def __init__(self, index: DatasetIndex):
        self.index = index
        self.set_aside: Dict[int, str] = {}
        self._pools: Dict[object, np.ndarray] = {}

    def _pool(self, orientation) -> np.ndarray:
        """The positions a replacement is drawn from: those of `orientation` (None: all)."""
        if orientation not in self._pools:
            n = len(self.index)
            self._pools[orientation] = (np.arange(n) if orientation is None else
                                        np.flatnonzero(self.index.landscape == orientation))
        return self._pools[orientation]

    def replaced(self, positions: List[int], by_orientation: bool, key: Sequence[int],
                 stream: str) -> List[int]:
        """The group with each set-aside image replaced by another of the dataset (of the same
        orientation where the stream groups by it) that is neither set aside nor in the group:
        the first acceptable one of a sequence drawn from `key` (the seed, then the group's
        place: stream, rank, number), so a resumed run, which knows of at least as many bad
        images, replaces alike. A few draws find one unless nearly all are set aside (then one
        pass over all)."""
        if not self.set_aside or not self.set_aside.keys() & set(positions):
            return positions
        out = list(positions)
        for slot, p in enumerate(positions):
            if p not in self.set_aside:
                continue
            pool = self._pool(bool(self.index.landscape[p]) if by_orientation else None)
            rng = generator(key[0], REPLACE, *key[1:], slot)
            out[slot] = self._first_free(pool[rng.integers(0, len(pool), 64)], out)
            if out[slot] is None:  # nearly all are set aside: one pass over all
                out[slot] = self._first_free(rng.permutation(pool), out)
            if out[slot] is None:
                raise RuntimeError(f"DSTLoader: {stream} batches: no image of "
                                   f"{self.index.source} (of that orientation) is left to "
                                   f"replace the {len(self.set_aside)} set aside")
        return out

    def _first_free(self, draws: np.ndarray, group: List[int]) -> Optional[int]:
        return next((q for q in draws.tolist() if q not in self.set_aside and q not in group),
                    None)

    def record(self, bad: Dict[int, str]) -> str:
        """Sets `bad` (position -> why) aside; returns the message naming each file."""
        self.set_aside.update(bad)
        named = "; ".join(f"{self.index.file_paths[p]} {why}" for p, why in bad.items())
        return (f"{named} ({len(self.set_aside)} image(s) set aside so far; its batch comes "
                "again with another image in its place)")

    def wrong_size(self, p: int, found) -> Optional[str]:
        """Why image p's decoded (height, width) is not its entry's, or None. Boxes are in the
        entry's pixels: such an image would train on misplaced boxes (detectron2 raises
        SizeMismatchError)."""
        (fh, fw), (eh, ew) = (int(v) for v in found[:2]), self.index.sizes[p]
        if (fh, fw) == (eh, ew):
            return None
        return (f"decodes to {fw}x{fh} (width x height), but {self.index.source} gives image "
                f"{self.index.image_ids[p]!r} {ew}x{eh}")

    def size_mismatches(self, positions: List[int], decoded: np.ndarray) -> Dict[int, str]:
        """{position: why} of the images whose decoded (height, width) (one row each, in
        `positions`' order) differs from their entry's."""
        reasons = {p: self.wrong_size(p, hw) for p, hw in zip(positions, decoded)}
        return {p: why for p, why in reasons.items() if why is not None}

    def header_mismatches(self, positions: List[int], decoded: np.ndarray,
                          planned: np.ndarray) -> Dict[int, str]:
        """{position: why} of the images whose header gives another (height, width) than their
        pixels: their boxes were planned for the header's size and would be misplaced."""
        return {p: (f"has a header giving {pw}x{ph} (width x height), but decodes to {dw}x{dh}: "
                    "its boxes would be placed for the header's size")
                for p, (dh, dw), (ph, pw) in zip(positions, decoded.tolist(), planned.tolist())
                if (dh, dw) != (ph, pw)}

    def diagnose(self, positions: List[int], flagged: Dict[int, str],
                 header=None) -> Dict[int, str]:
        """{position: why} of a group's bad images after DALI failed on its batch: those the feed
        flagged, and of the others those that do not decode or decode to another size than
        their entry's (the collage operator refuses boxes beyond a smaller image's pixels), or,
        where the boxes were planned from the files' headers (`header`: how the graph reads
        one), another size than their header's."""
        bad = dict(flagged)
        rest = [p for p in positions if p not in bad]
        results = decode_sizes([self.index.file_paths[p] for p in rest], batch=1,
                               header=header)
        for p, (status, found, *planned) in zip(rest, results):
            why = f"does not decode ({found})" if status == "error" else \
                self.wrong_size(p, found) or (planned and self.header_mismatches(
                    [p], np.array([found]), np.array(planned)).get(p))
            if why:
                bad[p] = why
        return bad
