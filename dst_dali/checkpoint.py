"""What a checkpoint needs beside the model and the optimizer for an exact resume: the loader's
state (what it holds, and the check that a state is one) and the process's random generators
(the R-CNN heads sample proposals with torch's global RNG, which a model checkpoint leaves
out). No detectron2: a plain torchvision loop uses them as DSTHook does.

    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "loader": loader.state_dict(), "rng": rng_states()}, path)
    ...
    state = torch.load(path, weights_only=True)
    model.load_state_dict(state["model"]); optimizer.load_state_dict(state["optimizer"])
    loader.load_state_dict(state["loader"]); set_rng_states(state["rng"])
"""
import random

import numpy as np
import torch

from .controller import KINDS

STATE_VERSION = 3
# Settings that decide the sequence of batches: a saved state resumes only under the same ones
# (paths, threads and prefetch depth may change, e.g. on another node).
SEQUENCE_KEYS = ("batch_size", "k", "min_size", "max_size", "flip_prob", "seed", "shard_id",
                 "num_shards", "image_format", "aspect_ratio_grouping", "pad_value")


def rng_states() -> dict:
    """The process's random generators, as tensors and plain numbers (loadable with
    torch.load(weights_only=True))."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    states = {"torch": torch.get_rng_state(),
              "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
              "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


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


def _count(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 0
