"""A run's feedback record: per rank and iteration, r (the small-object share the controller
saw), the shares of small, medium and large objects, the kind trained and the next one and what
decided it, the batch's boxes by size, and with detectron2's DSTHook also the images read and
the losses (on the main process). DSTHook writes it as JSON beside the run's checkpoints, a
loader with record_dir as CSV (dst_dali.feedback.record); the plots, the tau calibration and
the diagnostics read either, or a compact CSV of it (e.g. a bench's committed runs)."""
import csv
import glob
import gzip
import json
import os
from typing import Dict, List, Optional, Sequence

from .record import COUNT_COLUMNS, TEXT_COLUMNS

INTEGER_COLUMNS = ("iteration", "images") + COUNT_COLUMNS


def history_path(output_dir: str, rank: int = 0) -> str:
    return os.path.join(output_dir, "dst_history", f"rank{rank}.json")


def write_history(output_dir: str, rank: int, record: dict) -> str:
    path = history_path(output_dir, rank)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(record, f)
    os.replace(path + ".tmp", path)
    return path


def write_history_csv(path: str, rows: Sequence[dict]) -> str:
    """rows (dicts of numbers, strings or None; "r" is the share) as a CSV, gzipped if path
    ends in .gz; None is an empty cell."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path + ".tmp", "wt", newline="") as f:
        out = csv.writer(f)
        out.writerow(columns)
        for row in rows:
            out.writerow(["" if row.get(k) is None else
                          f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]
                          for k in columns])
    os.replace(path + ".tmp", path)
    return path


def read_history_csv(path: str) -> dict:
    """A history CSV as read_histories gives one rank's record (no tau, decision or signal)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", newline="") as f:
        rows = list(csv.DictReader(f))
    history = []
    for line, row in enumerate(rows, start=2):
        try:
            h = {k: (None if v == "" else v if k in TEXT_COLUMNS else
                     int(v) if k in INTEGER_COLUMNS else float(v)) for k, v in row.items()}
        except ValueError as e:
            raise ValueError(f"{path}, line {line}: {e}") from None
        h["share"] = h.pop("r", None)
        history.append(h)
    return {"decision": None, "signal": None, "tau": None, "history": history}


def read_runs(paths: Sequence[str]) -> Dict[int, dict]:
    """Output folders and history CSVs (e.g. one run at several seeds), every rank of each, as
    one read_histories-like dict."""
    out = {}
    for path in paths:
        runs = (read_histories(path) if os.path.isdir(path) else {0: read_history_csv(path)})
        for run in runs.values():
            out[len(out)] = run
    return out


def read_histories(output_dir: str) -> Dict[int, dict]:
    """rank -> {"decision", "signal", "tau", "history": [...]} of a run's output folder: its
    DSTHook JSON, else the loader's record CSV (record_dir)."""
    folder = os.path.join(output_dir, "dst_history")
    paths = sorted(glob.glob(os.path.join(folder, "rank*.json"))) or \
        sorted(glob.glob(os.path.join(folder, "rank*.csv")))
    if not paths:
        raise FileNotFoundError(f"{output_dir}: no dst_history/rank*.json or rank*.csv (the "
                                "feedback record train_dali.py writes at each checkpoint, a "
                                "DSTLoader with record_dir as it goes)")
    out = {}
    for path in paths:
        rank = int(os.path.basename(path)[4:].split(".")[0])
        if path.endswith(".csv"):
            out[rank] = read_history_csv(path)
        else:
            with open(path) as f:
                out[rank] = json.load(f)
    return out


def decisions_of(output_dir: str, rank: int, needed: int) -> List[str]:
    """The kinds a finished run chose after each of its iterations on `rank` (at least
    `needed` of them), for a ReplayController."""
    runs = read_histories(output_dir)
    if rank not in runs:
        raise ValueError(f"{output_dir}: no feedback record of rank {rank} (it has ranks "
                         f"{sorted(runs)}): replay a run of as many processes")
    decisions = [h["next"] for h in runs[rank]["history"]]
    if len(decisions) < needed:
        raise ValueError(f"{history_path(output_dir, rank)}: {len(decisions)} iterations "
                         f"recorded; replaying needs {needed} (SOLVER.MAX_ITER)")
    return decisions


def shares_of(histories: Dict[int, dict], kind: Optional[str] = None) -> List[float]:
    """Every rank's measured r values (iterations without positives left out), of the
    iterations that trained on `kind` batches only if given."""
    return [h["share"] for run in histories.values() for h in run["history"]
            if h["share"] is not None and (kind is None or h["kind"] == kind)]
