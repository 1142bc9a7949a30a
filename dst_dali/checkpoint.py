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

# the loader's state schema, named here too for checkpoint code that checks a state
from .stream.state import SEQUENCE_KEYS, STATE_VERSION, check_loader_state  # noqa: F401


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
