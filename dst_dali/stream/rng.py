"""The loader's random streams, each its own generator from the run's seed and what it is for,
so that no stream's draws repeat another's (numpy's SeedSequence, with a spawn key naming the
stream: the seed s collage stream and the seed s + 1 regular stream are unrelated)."""
import numpy as np

# what a generator is for: the epochs' deal of images to ranks, each image's short side and
# flip, the stand-in for a set-aside image
DEAL, DRAW, REPLACE = 0, 1, 2


def generator(seed: int, purpose: int, *key: int) -> np.random.Generator:
    """The generator of `purpose` at `key` (e.g. stream, epoch, orientation) for `seed`."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(purpose, *key)))
