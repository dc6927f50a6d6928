"""What the fit loop trains on: each epoch's global batches in the sampler's order (tasks.data),
this rank's samples of each, read (and on a GPU pinned) by DataLoader workers, normalized on
the replica's device; and validation inputs walked block by block.

Only the samples a rank trains on are read, by that rank, from the shards: nothing travels
between ranks, and memory holds a few batches whatever the size of the split.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from nets.inputs import normalize
from tasks.data import Images, chunks, epoch_order, rank_mask, streams_for
from tasks.train.replica import Replica

log = logging.getLogger("evergreen.data")


def run_lengths(x) -> list[int]:
    """The runs of samples stored together (a shard's), for the block shuffle."""
    return x.run_lengths() if isinstance(x, Images) else [len(x)]


@dataclass
class EpochPlan:
    """One epoch's global order, and which of its positions are this rank's."""

    order: np.ndarray
    mine: np.ndarray  # bool per position

    def batches(self, batch_size: int, start: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(position after the batch, the global batch's size, this rank's positions in it as
        a bool mask over the global batch), from global position `start` on."""
        for i in range(start, len(self.order), batch_size):
            yield min(i + batch_size, len(self.order)), self.order[i:i + batch_size], \
                self.mine[i:i + batch_size]


def plan_epoch(x, seed: int, epoch: int, window: int, streams: int, replica: Replica) -> EpochPlan:
    """The epoch's order over `x` (the same on every rank) and this rank's share of it."""
    streams = streams_for(streams, replica.world)
    order, stream = epoch_order(run_lengths(x), seed, epoch, window, streams)
    plan = EpochPlan(order, rank_mask(stream, replica.rank, replica.world))
    if replica.world > 1 and isinstance(x, Images):
        log.info("rank %d of %d, epoch %d: %d samples from shards %s", replica.rank, replica.world,
                 epoch, int(plan.mine.sum()), " ".join(x.shards(order[plan.mine])))
    return plan


class Samples(Dataset):
    """Batches by positions: uint8 images and labels, read when the loader asks."""

    def __init__(self, x, y: np.ndarray):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, positions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(np.asarray(self.x[positions])), torch.from_numpy(self.y[positions])


def loader_workers(setting: int | str) -> int:
    """DataLoader workers: auto is none on a machine of 2 cores or fewer (a worker would take a
    core from the math), else a quarter of the cores, at most 4."""
    if setting != "auto":
        return int(setting)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return 0 if (cores or 1) <= 2 else min(4, (cores or 1) // 4)


def read_batches(x, y: np.ndarray, positions: list[np.ndarray], workers: int,
                 replica: Replica) -> DataLoader:
    """A loader of the batches at these positions, in order; pinned when feeding a GPU."""
    # its own generator: creating the iterator draws a seed, which must not move the global RNG
    # (dropout's) or a run resumed mid-epoch would differ from an unbroken one
    return DataLoader(Samples(x, y), batch_size=None, sampler=positions, num_workers=workers,
                      pin_memory=replica.device.type == "cuda", generator=torch.Generator(),
                      prefetch_factor=4 if workers else None)


def to_inputs(xb: torch.Tensor, norm: tuple[list[float], list[float]], replica: Replica) -> torch.Tensor:
    """uint8 images to the device (non-blocking from pinned memory), then normalized there."""
    if replica.device.type == "cuda":
        xb = xb.to(replica.device, non_blocking=True)
    return normalize(xb, *norm)


class Inputs:
    """Images normalized on the replica's device, block by block (validation and scoring)."""

    def __init__(self, x, norm: tuple[list[float], list[float]], replica: Replica):
        self.x, self.norm, self.replica = x, norm, replica

    def __len__(self) -> int:
        return len(self.x)

    def blocks(self, size: int) -> Iterator[torch.Tensor]:
        for block in chunks(self.x, size):
            yield self.replica.inputs(to_inputs(torch.from_numpy(np.asarray(block)), self.norm,
                                                self.replica))
