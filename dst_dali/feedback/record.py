"""The feedback record a loader keeps of every iteration its controller saw, whatever loop
drives it: the batch's kind, r as fed, the kind chosen next and what decided it, the loss
shares by object size and the batch's ground-truth boxes by size. With `record_dir` set it is
written as it grows, one CSV a rank (`record_dir/dst_history/rank{R}.csv`), the form
`python -m dst_dali.diagnose_feedback` and `python -m dst_dali.plots` read; the loader's state
keeps it, so a resumed run's record is the uninterrupted run's.

    delivered batch (its box counts) -> forward -> r fed -> decision -> one row
"""
import csv
import math
import os
from typing import List, Optional

from .sizes import GROUPS

COUNT_COLUMNS = tuple(f"n_{group}" for group in GROUPS)
# decided_by: "r" (the feedback), "warmup" (regular whatever r, the tau warm-up), "exploration"
# (drawn at random, FeedbackController(explore=...)), "control" (a static or replayed control)
COLUMNS = ("iteration", "kind", "next", "decided_by", "r") + GROUPS + COUNT_COLUMNS
TEXT_COLUMNS = ("kind", "next", "decided_by")
R_BLIND = ("warmup", "exploration", "control")  # decisions that did not look at r


def record_path(record_dir: str, rank: int) -> str:
    return os.path.join(record_dir, "dst_history", f"rank{rank}.csv")


class FeedbackRecord:
    """Rows of COLUMNS (None where a figure was not measured), appended to the rank's CSV as
    they come when `record_dir` is given; a row is on disk once add() returns."""

    def __init__(self, record_dir: Optional[str] = None, rank: int = 0):
        self.path = None if record_dir is None else record_path(
            os.path.expandvars(os.path.expanduser(record_dir)), rank)
        self.rows: List[dict] = []
        self._file = None  # opened at the first row: a resumed state may bring earlier rows

    def add(self, row: dict) -> None:
        unknown = set(row) - set(COLUMNS)
        if unknown:
            raise ValueError(f"feedback record: unknown columns {sorted(unknown)}")
        row = {column: row.get(column) for column in COLUMNS}
        self.rows.append(row)
        if self.path is None:
            return
        if self._file is None:  # the whole record so far, then one line a row
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self._file = open(self.path, "w", newline="")
            self._writer = csv.writer(self._file)
            self._writer.writerow(COLUMNS)
            for earlier in self.rows[:-1]:
                self._writer.writerow(_cells(earlier))
        self._writer.writerow(_cells(row))
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def state_dict(self) -> dict:
        """The rows as one list a column (plain numbers, strings and None)."""
        return {column: [row[column] for row in self.rows] for column in COLUMNS}

    def load_state_dict(self, state: dict) -> None:
        """Rows from state_dict() (check_record_state first); the file is written anew, from
        them, at the next row."""
        self.close()
        n = len(state["iteration"])
        self.rows = [{column: state[column][i] for column in COLUMNS} for i in range(n)]


def check_record_state(state, pending) -> None:
    """A ValueError when a loader state's record (state_dict()'s columns) or its pending row
    (the last delivered batch's part of a row) cannot be one."""
    if not isinstance(state, dict) or set(state) != set(COLUMNS) or \
            any(not isinstance(v, list) for v in state.values()) or \
            len({len(v) for v in state.values()}) != 1:
        raise ValueError("loader state: record is not a feedback record's columns "
                         f"{list(COLUMNS)}, lists of equal length")
    if pending is not None and (not isinstance(pending, dict) or not set(pending) <= set(COLUMNS)):
        raise ValueError(f"loader state: record_pending {pending!r} is not a row of "
                         f"{list(COLUMNS)}")


def _cells(row: dict) -> list:
    return ["" if v is None else f"{v:.6g}" if isinstance(v, float) and math.isfinite(v)
            else v for v in (row[c] for c in COLUMNS)]
