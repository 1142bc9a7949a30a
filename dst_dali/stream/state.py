"""The loader's state, as DSTLoader.state_dict() writes it and load_state_dict() reads it: its
version, the settings that decide the sequence of batches, and the check that a state is one
before anything is changed by it."""
from ..data.index import is_integer
from ..data.index_cache import digest
from .kinds import KINDS

STATE_VERSION = 4
# Settings that decide the sequence of batches: a saved state resumes only under the same ones
# (paths, threads and prefetch depth may change, e.g. on another node).
SEQUENCE_KEYS = ("batch_size", "k", "min_size", "max_size", "flip_prob", "seed", "shard_id",
                 "num_shards", "image_format", "aspect_ratio_grouping", "pad_value")


def dataset_identity(index) -> dict:
    """What identifies a loader's dataset in its state: the number of usable images and a
    digest of their ids and of their file names (relative to the image folder), in index
    order. Read off the index's arrays, it is the same after a cache rebuild or a move of the
    image folder, and another for any image added, removed, renamed or reordered."""
    def of(arrays: dict) -> str:
        return digest({name: digest(array) for name, array in arrays.items()})
    return {"images": len(index), "ids": of(index.image_ids.arrays("ids")),
            "files": of(index.file_paths.names.arrays("files"))}


def check_same_dataset(saved, now: dict) -> None:
    """A ValueError naming what differs when a state was saved over another dataset than
    `now` (dataset_identity's): its count, its image ids, its file names."""
    if not isinstance(saved, dict) or set(saved) != set(now):
        raise ValueError(f"loader state: dataset {saved!r} is not a dataset's identity")
    differs = [f"{key} ({saved[key]} saved, {now[key]} now)" if key == "images" else
               f"image {'ids' if key == 'ids' else 'file names'}"
               for key in ("images", "ids", "files") if saved[key] != now[key]]
    if differs:
        raise ValueError("loader state: it was saved over another dataset; these differ: "
                         + ", ".join(differs) + ". Resume on the dataset it was saved on")


def check_loader_state(state, image_ids) -> None:
    """A ValueError naming the first field of a DSTLoader state that cannot be one (its
    image ids: the loader's dataset); quick, whatever the counts claim."""
    def fail(field, why):
        raise ValueError(f"loader state: {field} {why}")
    if not isinstance(state, dict):
        fail("(the whole)", f"is a {type(state).__name__}, not a dict")
    if state.get("version") != STATE_VERSION:
        fail("version", f"{state.get('version')!r}: this DSTLoader reads version "
                        f"{STATE_VERSION}")
    for field in ("config", "delivered"):
        if not isinstance(state.get(field), dict):
            fail(field, f"{state.get(field)!r} is not a dict")
    unknown = set(state["config"]) - set(SEQUENCE_KEYS)
    if unknown:
        fail("config", f"has unknown settings {sorted(unknown)}")
    if not _count(state["config"].get("seed")):
        fail("config['seed']", f"{state['config'].get('seed')!r} is not an integer >= 0")
    iteration = state.get("iteration")
    if not _count(iteration) or iteration < 0:
        fail("iteration", f"{iteration!r} is not a count (an integer >= 0)")
    if state.get("last_kind") not in KINDS + (None,):
        fail("last_kind", f"{state.get('last_kind')!r} is not one of {KINDS} or None")
    if set(state["delivered"]) != set(KINDS):
        fail("delivered", f"has kinds {sorted(state['delivered'])}, not {list(KINDS)}")
    for kind, count in state["delivered"].items():
        # each iteration delivers one batch (a resume past the iterations: one of each kind)
        if not _count(count) or not 0 <= count <= iteration:
            fail(f"delivered[{kind!r}]", f"{count!r} is not a count within the state's "
                                         f"{iteration} iterations")
    set_aside = state.get("set_aside", [])
    known = set(image_ids)
    if not isinstance(set_aside, list) or not all(
            isinstance(x, (list, tuple)) and len(x) == 2 and isinstance(x[1], str)
            for x in set_aside):
        fail("set_aside", "is not a list of [image id, reason] pairs")
    strangers = [x[0] for x in set_aside if x[0] not in known]
    if strangers:
        fail("set_aside", f"names images not in this dataset: {strangers[:3]}")
    due = state.get("feedback_due")
    if due is not None and (not isinstance(due, list) or len(due) != 4 or
                            not all(isinstance(v, (int, float)) for v in due)):
        fail("feedback_due", f"{due!r} is not 4 numbers (small, medium, large, total)")


def sequence_config(settings) -> dict:
    """The settings a state is saved under (plain numbers and lists) of a loader's settings."""
    return {key: list(value) if isinstance(value, tuple) else value
            for key, value in ((key, getattr(settings, key)) for key in SEQUENCE_KEYS)}


def _count(value) -> bool:
    return is_integer(value) and value >= 0
