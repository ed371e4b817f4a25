"""DataLoader helpers: a seeded sampler (DDP-aware) and a loader that knows its epoch.

The sampler yields `SampleKey`s: ints (the dataset index, usable wherever an index is) that also
carry the epoch. The dataset draws a sample's augmentation from (seed, epoch, index), so the
epoch reaches every worker with each sample, persistent workers included, and no worker holds
state of its own.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from deeplab_kit.data.transforms import keyed_generator, pad_collate

__all__ = ["EpochLoader", "KeyedSampler", "SampleKey", "make_loader"]


class SampleKey(int):
    """A dataset index that also carries the epoch it is drawn for: `SampleKey(7, epoch=2)`."""

    def __new__(cls, index: int, epoch: int = 0):
        key = super().__new__(cls, index)
        key.epoch = int(epoch)
        return key

    def __getnewargs__(self):  # pickled on its way to a worker process
        return int(self), self.epoch

    def __repr__(self) -> str:
        return f"SampleKey({int(self)}, epoch={self.epoch})"


class KeyedSampler(Sampler):
    """This rank's share of an epoch: the order comes from (seed, epoch) only.

    Every rank computes the same permutation of the dataset and takes every world_size-th
    element from its rank on, so shards are disjoint. With drop_last the permutation is cut to a
    multiple of world_size (equal shards, as training needs); without it every sample is used
    exactly once (shards may differ by one, as evaluation needs).

    Yields `SampleKey(index, epoch)`: to any dataset just the index; `VOCDataset` reads the epoch.
    """

    def __init__(
        self,
        size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in 0..{world_size - 1}, got {rank}")
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.epoch = 0
        self.skip = 0  # samples of this epoch to skip (a resumed epoch), until the next set_epoch

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = int(epoch), int(skip)

    def indices(self, epoch: int) -> list[int]:
        """This rank's full shard for an epoch, in order."""
        if self.shuffle:
            order = torch.randperm(self.size, generator=keyed_generator(self.seed, epoch)).tolist()
        else:
            order = list(range(self.size))
        if self.drop_last:
            order = order[: self.size - self.size % self.world_size]
        return order[self.rank :: self.world_size]

    def __iter__(self):
        for index in self.indices(self.epoch)[self.skip :]:
            yield SampleKey(index, self.epoch)

    def __len__(self) -> int:
        usable = self.size - self.size % self.world_size if self.drop_last else self.size
        return len(range(self.rank, usable, self.world_size))


class EpochLoader(DataLoader):
    """A DataLoader with `set_epoch(epoch, skip_batches=0)`; `len()` is a full epoch's batches."""

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Serve `epoch`, without its first `skip_batches` batches (to resume mid-epoch); every
        pass serves the same batches until the next `set_epoch`."""
        if not 0 <= skip_batches <= len(self):
            raise ValueError(f"skip_batches must be in 0..{len(self)}, got {skip_batches}")
        self.sampler.set_epoch(epoch, skip=skip_batches * self.batch_size)

    @property
    def epoch(self) -> int:
        return self.sampler.epoch


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int | None = None,
    drop_last: bool = False,
    num_workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool | None = None,
    collate_fn=None,
) -> EpochLoader:
    """A loader over `dataset` whose batches depend only on (seed, epoch) and the dataset; call
    `loader.set_epoch(epoch)` before each epoch (without it every pass repeats epoch 0's).

    Args:
        seed: of the sample order; None takes the dataset's `seed` (0 if it has none).
        drop_last: drop the last incomplete batch (and, across ranks, the samples that would make
            shards unequal). Training with BatchNorm needs True.
        num_workers: worker processes; they persist across epochs (the epoch travels in the keys).
        rank, world_size: this process's shard under DDP.
        pin_memory: None pins when CUDA is available.
        collate_fn: None uses the transforms' `collate` (padding to the largest image).
    """
    if seed is None:
        seed = getattr(dataset, "seed", 0)
    sampler = KeyedSampler(
        len(dataset),
        shuffle=shuffle,
        seed=seed,
        rank=rank,
        world_size=world_size,
        drop_last=drop_last,
    )
    if collate_fn is None:
        collate_fn = getattr(getattr(dataset, "transforms", None), "collate", pad_collate)
    return EpochLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=num_workers,
        collate_fn=collate_fn,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        persistent_workers=num_workers > 0,
        # The loader draws its workers' base seed from this generator, not from the global RNG.
        generator=torch.Generator().manual_seed(seed),
    )
