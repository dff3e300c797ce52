"""Deterministic, resumable, world-size-independent batching for training.

The data order is a pure function of ``(seed, iteration)``:

1. epoch ``e`` walks ``randperm(n)`` drawn from a generator seeded with ``(seed, e)``;
2. aspect-ratio grouping is done on that global walk: each image goes to its bucket (landscape or
   portrait) and a bucket that reaches ``ims_per_batch`` images becomes the next global batch;
3. at the end of the walk the images left in the buckets are chained (bucket 0 first) and cut into
   batches too, the last one completed with images from the start of the epoch's permutation. So every
   image is used once per epoch, the epoch has exactly ``ceil(n / ims_per_batch)`` batches, and at most
   ``num_groups`` batches per epoch mix orientations;
4. rank ``r`` of ``W`` takes the slice ``[r * B / W, (r + 1) * B / W)`` of each global batch.

So iteration ``k`` is the same global batch whether 1 or N processes train, and resuming is starting
at ``k``. Each sample's augmentation is seeded by ``(seed, epoch, index)`` in the dataset; the sampler
yields ``(index, epoch)`` pairs so that the epoch travels with the index into DataLoader workers.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from oanet.errors import ConfigError


def aspect_ratio_groups(aspect_ratios: Sequence[float]) -> list[int]:
    """Group id per image: 0 = landscape or square (width >= height), 1 = portrait.

    ``aspect_ratios`` are width / height. Two buckets, as in Detectron's training: padding a batch to its
    largest image wastes little memory when all images share an orientation.
    """
    return [0 if ratio >= 1.0 else 1 for ratio in aspect_ratios]


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    # A distinct, reproducible stream per (seed, epoch): SeedSequence hashes the pair, so nearby seeds
    # and epochs do not share streams.
    state = np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state >> 1))


def epoch_batches(group_ids: Sequence[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The global batches of one epoch (see the module docstring), ``ceil(n / batch_size)`` of them."""
    n = len(group_ids)
    if n == 0:
        raise ConfigError("the training set is empty")
    order = torch.randperm(n, generator=epoch_generator(seed, epoch)).tolist()
    buckets: dict[int, list[int]] = {}
    batches = []
    for index in order:
        bucket = buckets.setdefault(group_ids[index], [])
        bucket.append(index)
        if len(bucket) == batch_size:
            batches.append(bucket[:])
            bucket.clear()
    leftovers = [index for group in sorted(buckets) for index in buckets[group]]
    for start in range(0, len(leftovers), batch_size):
        batch = leftovers[start : start + batch_size]
        fill = 0
        while len(batch) < batch_size:  # complete the last batch cyclically from the epoch's start
            batch.append(order[fill % n])
            fill += 1
        batches.append(batch)
    assert len(batches) == math.ceil(n / batch_size)
    return batches


def batches_per_epoch(num_images: int, batch_size: int) -> int:
    return math.ceil(num_images / batch_size)


def rank_slice(global_batch: Sequence[int], rank: int, world_size: int) -> list[int]:
    """This rank's contiguous share of a global batch (``len(global_batch)`` divisible by world size)."""
    share = len(global_batch) // world_size
    return list(global_batch[rank * share : (rank + 1) * share])


class GlobalBatchSampler(Sampler):
    """Yields, for iterations ``start_iter .. max_iter - 1``, this rank's ``(index, epoch)`` pairs.

    ``group_ids`` = ``aspect_ratio_groups(dataset.aspect_ratios())`` or all zeros (no grouping).
    """

    def __init__(
        self,
        group_ids: Sequence[int],
        ims_per_batch: int,
        seed: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        start_iter: int = 0,
        max_iter: int,
    ):
        if ims_per_batch < 1:
            raise ConfigError(f"solver.ims_per_batch must be >= 1, got {ims_per_batch}")
        if ims_per_batch % world_size:
            raise ConfigError(
                f"solver.ims_per_batch={ims_per_batch} is the global batch and must be divisible by the "
                f"number of processes ({world_size})"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.group_ids = list(group_ids)
        self.ims_per_batch = ims_per_batch
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start_iter = start_iter
        self.max_iter = max_iter
        self.per_epoch = batches_per_epoch(len(self.group_ids), ims_per_batch)
        self._cached_epoch: tuple[int, list[list[int]]] | None = None

    def epoch_of(self, iteration: int) -> int:
        return iteration // self.per_epoch

    def global_batch(self, iteration: int) -> list[int]:
        """The image indices of iteration ``iteration`` over all ranks."""
        epoch, position = divmod(iteration, self.per_epoch)
        if self._cached_epoch is None or self._cached_epoch[0] != epoch:
            self._cached_epoch = (epoch, epoch_batches(self.group_ids, self.ims_per_batch, self.seed, epoch))
        return self._cached_epoch[1][position]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for iteration in range(self.start_iter, self.max_iter):
            epoch = self.epoch_of(iteration)
            mine = rank_slice(self.global_batch(iteration), self.rank, self.world_size)
            yield [(index, epoch) for index in mine]

    def __len__(self) -> int:
        return max(0, self.max_iter - self.start_iter)


def split_chunks(items: Sequence, chunk_size: int) -> list[list]:
    """Consecutive chunks of ``chunk_size`` (the last may be shorter): the gradient-accumulation steps."""
    return [list(items[i : i + chunk_size]) for i in range(0, len(items), chunk_size)]


def num_accumulation_chunks(ims_per_batch: int, world_size: int, ims_per_device: int) -> int:
    """How many forward/backward passes each rank makes per iteration (1 = no accumulation)."""
    share = ims_per_batch // world_size
    if ims_per_device <= 0 or ims_per_device >= share:
        return 1
    return math.ceil(share / ims_per_device)

