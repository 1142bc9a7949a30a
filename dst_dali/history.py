"""A run's feedback record: per rank and iteration, r (the small-object share the controller
saw), the shares of small, medium and large objects, the kind trained and the next one, and the
images read. DSTHook writes it as JSON beside the run's checkpoints; the plots and the tau
calibration read it."""
import glob
import json
import os
from typing import Dict, List


def history_path(output_dir: str, rank: int = 0) -> str:
    return os.path.join(output_dir, "dst_history", f"rank{rank}.json")


def write_history(output_dir: str, rank: int, record: dict) -> str:
    path = history_path(output_dir, rank)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(record, f)
    os.replace(path + ".tmp", path)
    return path


def read_histories(output_dir: str) -> Dict[int, dict]:
    """rank -> {"decision", "signal", "tau", "history": [...]} of a run's output folder."""
    paths = sorted(glob.glob(os.path.join(output_dir, "dst_history", "rank*.json")))
    if not paths:
        raise FileNotFoundError(f"{output_dir}: no dst_history/rank*.json (the feedback record "
                                "train_dali.py writes at each checkpoint)")
    out = {}
    for path in paths:
        with open(path) as f:
            out[int(os.path.basename(path)[4:-5])] = json.load(f)
    return out


def shares_of(histories: Dict[int, dict]) -> List[float]:
    """Every rank's measured r values (iterations without positives left out)."""
    return [h["share"] for run in histories.values() for h in run["history"]
            if h["share"] is not None]
