"""Which images make each batch of a stream (regular or collage), on each rank.

The order is detectron2's TrainingSampler's: every epoch a fresh permutation of the whole
dataset, drawn from the seed alone (the same on every rank), of which rank r takes every R-th
image from the r-th: ranks never share an image within an epoch, and each reads its share once.
A rank cuts its share into groups of `group_size` distinct images of one orientation
(detectron2's aspect-ratio grouping; for collages, k * batch_size images, so the components of
a collage share an orientation and no batch repeats an image).

A group that straddles two epochs could meet an image twice; the second one waits for the next
group of its orientation. The sequence depends on the seed and the position alone, so resuming
is seeking a position: an epoch's groups are made at once with numpy (each orientation fills
its groups on its own; they are merged in the order they fill), a skipped epoch costs one pass.
"""
from collections import deque
from typing import List, Optional

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

    def _epoch(self, epoch: int, state: dict) -> np.ndarray:
        """The epoch's groups, (m, group_size), in the order they fill as this rank reads its
        share; `state`: each key's partial group and waiting images, carried to the next
        epoch. Each key fills its groups on its own, so they are made key by key with numpy
        and merged by when each filled."""
        order = self._shard_order(epoch)
        groups, filled = [np.zeros((0, self.group_size), np.int64)], [np.zeros(0, np.int64)]
        for key in np.flatnonzero(self._usable).tolist():
            at = np.flatnonzero(self._keys[order] == key)  # when each image of the key comes
            g, f, state[key] = self._fill(order[at], at, *state.get(key, ([], [])))
            groups.append(g)
            filled.append(f)
        rank = np.argsort(np.concatenate(filled), kind="stable")
        return np.concatenate(groups)[rank]

    def _fill(self, seq: np.ndarray, at: np.ndarray, bucket: list, waiting: list):
        """One key's groups from its images `seq` arriving at times `at`, after the partial
        group `bucket` and the `waiting` images of the last epoch: (groups, when each filled,
        (bucket, waiting) left)."""
        size = self.group_size
        if waiting or (bucket and np.count_nonzero(~np.isin(seq, bucket)) < size - len(bucket)):
            return self._fill_one_by_one(seq, at, bucket, waiting)
        head, head_at, rest, rest_at = [], [], seq, at
        if bucket:  # the group that straddles two epochs: its images seen again wait
            again = np.isin(seq, bucket)
            cut = np.flatnonzero(~again)[size - len(bucket) - 1]
            head = [np.concatenate([bucket, seq[:cut + 1][~again[:cut + 1]]])]
            head_at = [at[cut]]
            waited = seq[:cut + 1][again[:cut + 1]]
            rest = np.concatenate([waited, seq[cut + 1:]])
            rest_at = np.concatenate([np.full(len(waited), at[cut]), at[cut + 1:]])
        m = len(rest) // size
        groups = np.concatenate([np.asarray(head, np.int64).reshape(-1, size),
                                 rest[:m * size].reshape(m, size)])
        filled = np.concatenate([np.asarray(head_at, np.int64),
                                 rest_at[size - 1:m * size:size]])
        return groups, filled, (rest[m * size:].tolist(), [])

    def _fill_one_by_one(self, seq, at, bucket: list, waiting: list):
        """_fill for a key whose partial group this epoch cannot complete at once (a rank's
        share of a key can be smaller than a group): the same rules, an image at a time."""
        bucket, waiting = list(bucket), deque(waiting)
        groups, filled = [], []
        for pos, t in zip(seq.tolist(), at.tolist()):
            if pos in bucket:  # the group straddles two epochs: wait for the next one
                waiting.append(pos)
                continue
            bucket.append(pos)
            while len(bucket) == self.group_size:
                groups.append(bucket)
                filled.append(t)
                bucket = []
                for _ in range(len(waiting)):
                    p = waiting.popleft()
                    (waiting if p in bucket else bucket).append(p)
                    if len(bucket) == self.group_size:
                        break
        return (np.asarray(groups, np.int64).reshape(-1, self.group_size),
                np.asarray(filled, np.int64), (bucket, list(waiting)))

    def __iter__(self):
        return self

    def __next__(self) -> List[int]:
        while self._at == len(self._groups):
            self._groups, self._at = self._epoch(self._next_epoch, self._state), 0
            self._next_epoch += 1
        self._at += 1
        self.position += 1
        return self._groups[self._at - 1].tolist()

    def seek(self, position: int) -> None:
        """Restarts the sequence at group `position` (whole epochs skipped a numpy pass each)."""
        self._state, self._next_epoch = {}, 0
        self._groups, self._at = np.zeros((0, self.group_size), np.int64), 0
        self.position = 0
        while self.position + len(self._groups) - self._at <= position:
            self.position += len(self._groups) - self._at
            self._groups, self._at = self._epoch(self._next_epoch, self._state), 0
            self._next_epoch += 1
        self._at += position - self.position
        self.position = position
