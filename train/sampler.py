"""An endless, epoch-shuffled, rank-sharded index sampler that resumes at any sample position.

Each epoch is a permutation of the dataset seeded by (seed, epoch), padded by wrapping around to a
multiple of the number of processes and dealt out round-robin, as DistributedSampler does. The
sampler yields `epoch * len(dataset) + index`; `EpochIndexed` decodes that, sets the dataset's epoch
(so map-style datasets draw fresh views each epoch) and returns the item. Because every index carries
its epoch, this works unchanged in DataLoader worker processes, and because the stream is a pure
function of (seed, rank, world size, position), resuming at the saved position continues exactly
where the interrupted run would have gone.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, Sampler


class ResumableSampler(Sampler[int]):
    def __init__(self, length: int, rank: int = 0, world_size: int = 1, seed: int = 0, start: int = 0,
                 shuffle: bool = True):
        if length < 1:
            raise ValueError("cannot sample from an empty dataset")
        self.length, self.rank, self.world_size = length, rank, world_size
        self.seed, self.start, self.shuffle = seed, start, shuffle

    @property
    def per_rank(self) -> int:
        """Samples each process sees per epoch."""
        return math.ceil(self.length / self.world_size)

    def epoch_indices(self, epoch: int) -> list[int]:
        """This rank's dataset indices in epoch `epoch`."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.length, generator=generator).tolist()
        else:
            order = list(range(self.length))
        total = self.per_rank * self.world_size
        order = (order * math.ceil(total / self.length))[:total]
        return order[self.rank::self.world_size]

    def __iter__(self) -> Iterator[int]:
        epoch, offset = divmod(self.start, self.per_rank)
        while True:
            for index in self.epoch_indices(epoch)[offset:]:
                yield epoch * self.length + index
            epoch, offset = epoch + 1, 0


class EpochIndexed(Dataset):
    """Wraps a map-style dataset with `set_epoch`: item `epoch * len + i` is item i of that epoch."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int):
        epoch, index = divmod(key, len(self.dataset))
        self.dataset.set_epoch(epoch)
        return self.dataset[index]
