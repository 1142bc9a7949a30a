"""Which images make each batch of a stream (regular or collage), on each rank.

The order is detectron2's TrainingSampler's: every epoch a fresh permutation of the whole
dataset, drawn from the seed alone (the same on every rank), of which rank r takes every R-th
image from the r-th: ranks never share an image within an epoch, and each reads its share once.
A rank cuts its share into groups of `group_size` distinct images of one orientation
(detectron2's aspect-ratio grouping; for collages, k * batch_size images, so the components of
a collage share an orientation and no batch repeats an image).

A group that straddles two epochs could meet an image twice; the second one waits for the next
group of its orientation. The sequence depends on the seed and the position alone, so resuming
is replaying to a position.
"""
from collections import deque
from typing import Iterator, List, Optional

import numpy as np


class GroupSampler:
    """An endless iterator of groups (lists of dataset positions) for one rank.

    Args:
        orientation: (n,) one key (0 or 1) per image, e.g. landscape or not; groups never mix
            keys. None: one key for all.
        n: images in the dataset.
        group_size: images a group.
        seed: the permutations' seed, the same on every rank.
        shard_id, num_shards: this rank and the number of ranks.
    An orientation with fewer than group_size images a rank can form no group: its images are
    left out (see `left_out`). `position` counts the groups handed out.
    """

    def __init__(self, orientation: Optional[np.ndarray], n: int, group_size: int, seed: int,
                 shard_id: int = 0, num_shards: int = 1):
        self.n, self.group_size, self.seed = n, group_size, seed
        self.shard_id, self.num_shards = shard_id, num_shards
        keys = np.zeros(n, np.int64) if orientation is None else np.asarray(orientation, np.int64)
        counts = np.bincount(keys, minlength=2)
        self._keys = keys
        self._usable = counts >= group_size * num_shards
        self.left_out = int(counts[~self._usable].sum())
        if not self._usable.any():
            raise ValueError(f"groups of {group_size} distinct images of one orientation on "
                             f"each of {num_shards} rank(s) need {group_size * num_shards} "
                             f"images of one orientation; the dataset has {counts.tolist()} "
                             "(portrait, landscape)" if orientation is not None else
                             f"groups of {group_size} on each of {num_shards} rank(s) need "
                             f"{group_size * num_shards} images; the dataset has {n}")
        self.seek(0)

    def _shard_order(self, epoch: int) -> np.ndarray:
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return perm[self.shard_id::self.num_shards]

    def _all_groups(self) -> Iterator[List[int]]:
        buckets = {key: [] for key in range(len(self._usable))}
        waiting = {key: deque() for key in buckets}
        epoch = 0
        while True:
            for pos in self._shard_order(epoch).tolist():
                key = int(self._keys[pos])
                if not self._usable[key]:
                    continue
                bucket = buckets[key]
                if pos in bucket:  # the group straddles two epochs: wait for the next one
                    waiting[key].append(pos)
                    continue
                bucket.append(pos)
                while len(bucket) == self.group_size:
                    yield list(bucket)
                    bucket.clear()
                    for _ in range(len(waiting[key])):
                        p = waiting[key].popleft()
                        (waiting[key] if p in bucket else bucket).append(p)
                        if len(bucket) == self.group_size:
                            break
            epoch += 1

    def __iter__(self):
        return self

    def __next__(self) -> List[int]:
        self.position += 1
        return next(self._groups)

    def seek(self, position: int) -> None:
        """Restarts the sequence at group `position` (replaying the order)."""
        self._groups = self._all_groups()
        self.position = 0
        for _ in range(position):
            next(self)
