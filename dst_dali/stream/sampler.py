"""Which images make each batch of a stream (regular or collage), on each rank.

Every epoch, drawn from the seed, the stream and the epoch alone (the same on every rank), each
orientation's images are permuted and dealt to the ranks in turn, as detectron2's
TrainingSampler deals one permutation of the dataset: ranks never share an image within an
epoch, and each reads its share once. Dealing each orientation on its own gives every rank the
same number of images of each orientation every epoch. A rank reads its share in a random order
(the orientations interleaved at random) and cuts it into groups of `group_size` distinct
images of one orientation (detectron2's aspect-ratio grouping; for collages k * batch_size
images, so the components of a collage share an orientation and no batch repeats an image).

A group that straddles two epochs could meet an image twice; that image waits for the next
group of its orientation. Since a rank gets at least a group's worth of each orientation it
uses every epoch, an image waits only within its epoch, and each orientation fills the same
number of groups over the same epochs whatever the draws: resuming at any position costs about
an epoch's work (`seek`).
"""
from typing import List, Optional

import numpy as np

from .rng import DEAL, generator

INTERLEAVE = 2  # the random stream, beside the orientations' 0 and 1, that interleaves them


class GroupSampler:
    """An endless iterator of groups (lists of dataset positions) for one rank.

    Args:
        orientation: (n,) one key (0 or 1) per image, e.g. landscape or not; groups never mix
            keys. None: one key for all.
        n: images in the dataset.
        group_size: images a group.
        seed: the permutations' seed, the same on every rank.
        stream: which of a loader's streams (its permutations are its own).
        shard_id, num_shards: this rank and the number of ranks.
    An orientation with fewer than group_size images a rank can form no group: its images are
    left out (see `left_out`). `position` counts the groups handed out.
    """

    def __init__(self, orientation: Optional[np.ndarray], n: int, group_size: int, seed: int,
                 stream: int = 0, shard_id: int = 0, num_shards: int = 1):
        self.n, self.group_size, self.seed, self.stream = n, group_size, seed, stream
        self.shard_id, self.num_shards = shard_id, num_shards
        keys = np.zeros(n, np.int64) if orientation is None else np.asarray(orientation, np.int64)
        counts = np.bincount(keys, minlength=2)
        self._keys = keys
        self._usable = np.flatnonzero(counts >= group_size * num_shards)
        self._members = {key: np.flatnonzero(keys == key) for key in self._usable.tolist()}
        # images of each usable key this rank reads an epoch: at least group_size
        self._share = {key: len(m[shard_id::num_shards]) for key, m in self._members.items()}
        self.left_out = n - sum(len(m) for m in self._members.values())
        self._last_epoch = None  # (epoch and what it carried in, its groups, what it carries on)
        if not len(self._usable):
            raise ValueError(f"groups of {group_size} distinct images of one orientation on "
                             f"each of {num_shards} rank(s) need {group_size * num_shards} "
                             f"images of one orientation; the dataset has {counts.tolist()} "
                             "(portrait, landscape)" if orientation is not None else
                             f"groups of {group_size} on each of {num_shards} rank(s) need "
                             f"{group_size * num_shards} images; the dataset has {n}")
        self.seek(0)

    def _rng(self, epoch: int, what: int) -> np.random.Generator:
        return generator(self.seed, DEAL, self.stream, epoch, what)

    def _key_order(self, epoch: int, key: int) -> np.ndarray:
        """This rank's images of `key` in the epoch, in the order it reads them."""
        members = self._members[key]
        return self._rng(epoch, key).permutation(members)[self.shard_id::self.num_shards]

    def _shard_order(self, epoch: int) -> np.ndarray:
        """This rank's share of the epoch (the images of usable keys), in reading order."""
        keys = list(self._members)
        if len(keys) == 1:
            return self._key_order(epoch, keys[0])
        labels = self._rng(epoch, INTERLEAVE).permutation(
            np.repeat(keys, [self._share[key] for key in keys]))
        order = np.empty(len(labels), np.int64)
        for key in keys:
            order[labels == key] = self._key_order(epoch, key)
        return order

    def _epoch(self, epoch: int, carried: dict) -> np.ndarray:
        """The epoch's groups, (m, group_size), in the order they fill as this rank reads its
        share; `carried`: each key's partial group, updated for the next epoch. The last epoch
        made is kept: a restart at the same place (the loader's first start, a bad image's
        replacement) costs no permutation of a large set again."""
        memo = (epoch, tuple((key, tuple(bucket)) for key, bucket in sorted(carried.items())))
        if self._last_epoch is not None and self._last_epoch[0] == memo:
            groups, after = self._last_epoch[1:]
        else:
            groups = self._make_epoch(epoch, carried)
            after = {key: list(bucket) for key, bucket in carried.items()}
            self._last_epoch = (memo, groups, after)
        carried.clear()
        carried.update({key: list(bucket) for key, bucket in after.items()})
        return groups

    def _make_epoch(self, epoch: int, carried: dict) -> np.ndarray:
        """_epoch's groups, made: each key fills its groups on its own, so they are made key
        by key and merged by when each filled."""
        order = self._shard_order(epoch)
        groups, filled = [np.zeros((0, self.group_size), np.int64)], [np.zeros(0, np.int64)]
        for key in self._members:
            at = np.flatnonzero(self._keys[order] == key)  # when each image of the key comes
            g, f, carried[key] = self._fill(order[at], at, carried.get(key, []))
            groups.append(g)
            filled.append(f)
        rank = np.argsort(np.concatenate(filled), kind="stable")
        return np.concatenate(groups)[rank]

    def _fill(self, seq: np.ndarray, at: np.ndarray, bucket: list):
        """One key's groups from its images `seq` arriving at times `at`, after the partial
        group `bucket` of the last epoch: (groups, when each filled, the partial group left).
        `seq` holds at least group_size images, so the straddling group completes within
        the first group_size of them, and what its repeated images wait for is in the
        epoch."""
        size = self.group_size
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
        return groups, filled, rest[m * size:].tolist()

    def __iter__(self):
        return self

    def __next__(self) -> List[int]:
        while self._at == len(self._groups):
            self._groups, self._at = self._epoch(self._next_epoch, self._carried), 0
            self._next_epoch += 1
        self._at += 1
        self.position += 1
        return self._groups[self._at - 1].tolist()

    def _filled_by(self, epochs: int) -> int:
        """Groups filled in the first `epochs` epochs: each key carries on what does not make
        a group, so it fills (images so far) // group_size."""
        return sum(epochs * count // self.group_size for count in self._share.values())

    def _carried_after(self, epoch: int, key: int) -> list:
        """The key's partial group at the end of `epoch` (-1: before the first). It holds the
        last of the key's images so far; those are the epoch's own last ones unless some of
        the straddling group's waited images are among them, and then the epoch before
        decides which, and so on."""
        size, count = self.group_size, self._share[key]
        start = epoch
        while start >= 0 and (start + 1) * count % size > count - size:
            start -= 1  # this epoch's partial group may hold images that waited in it
        bucket = [] if start < 0 else \
            self._key_order(start, key)[count - (start + 1) * count % size:].tolist()
        for e in range(start + 1, epoch + 1):
            seq = self._key_order(e, key)
            bucket = self._fill(seq, np.arange(len(seq)), bucket)[2]
        return bucket

    def seek(self, position: int) -> None:
        """Restarts the sequence at group `position`: the epoch holding it is found by
        counting, and only it and the partial groups carried into it are made."""
        low, high = 0, position // max(1, self._filled_by(1)) + 1
        while low < high:  # the most epochs whose groups all come before `position`
            mid = (low + high + 1) // 2
            low, high = (mid, high) if self._filled_by(mid) <= position else (low, mid - 1)
        self._carried = {key: self._carried_after(low - 1, key) for key in self._members}
        self._next_epoch, self.position = low, self._filled_by(low)
        self._groups, self._at = np.zeros((0, self.group_size), np.int64), 0
        while self.position + len(self._groups) - self._at <= position:
            self.position += len(self._groups) - self._at
            self._groups, self._at = self._epoch(self._next_epoch, self._carried), 0
            self._next_epoch += 1
        self._at += position - self.position
        self.position = position
