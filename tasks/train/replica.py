"""One process's place in a data-parallel job (Replica) and what makes N processes train as one:
the global-batch slice, sums over ranks, BatchNorm over the global batch (on CPU:
tasks.train.sync_batchnorm), and the process-group backend. `tasks.train.loop.fit` takes a
Replica (the default: a job of one process); `tasks.train.worker` runs the workers that pass theirs.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from tasks.train.sync_batchnorm import convert_to_cpu_sync_bn

# --- one process's place in the job ---------------------------------------------------

@dataclass
class Replica:
    """This process's place in a data-parallel job; the default is a job of one process."""

    rank: int = 0
    world: int = 1
    leader_rank: int = 0  # the one rank that reads the job and writes checkpoints and results
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    sync_batchnorm: bool = False
    amp: bool = False  # bf16 autocast (GPU unless train.precision is fp32)
    channels_last: bool = False

    def part(self, n: int) -> slice:
        """This rank's contiguous slice of a global batch of n samples."""
        return slice(n * self.rank // self.world, n * (self.rank + 1) // self.world)

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over all ranks."""
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def share(self, obj):
        """The leader's `obj`, on every rank: JSON and tensors, never a pickle (tasks.train.exchange)."""
        if self.world == 1:
            return obj
        from tasks.train.exchange import broadcast_value

        return broadcast_value(obj, self.leader_rank, self.device, self.leader)

    @property
    def leader(self) -> bool:
        """Whether this rank reads the job and writes checkpoints and results."""
        return self.rank == self.leader_rank

    def seed_epoch(self, seed: int, epoch: int) -> None:
        """Per-rank dropout RNG, a function of (seed, epoch, rank) so a restart repeats it."""
        if self.world > 1:
            torch.manual_seed(int(np.random.SeedSequence([seed, epoch, self.rank]).generate_state(1)[0]))

    def to_device(self, t: torch.Tensor) -> torch.Tensor:
        """Whole in-memory splits go to the GPU once, through pinned memory."""
        if self.device.type != "cuda":
            return t
        return t.pin_memory().to(self.device, non_blocking=True)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """A batch in the memory layout the prepared model expects."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def prepare(self, model: nn.Module) -> nn.Module:
        """Global-batch BatchNorm when distributed; move to the device (channels_last on GPU)."""
        if self.world > 1 and self.sync_batchnorm:
            model = (nn.SyncBatchNorm.convert_sync_batchnorm(model) if self.device.type == "cuda"
                     else convert_to_cpu_sync_bn(model))
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def wrap(self, model: nn.Module) -> nn.Module:
        """DDP around the prepared model (gradients averaged over ranks in backward)."""
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def autocast(self, bf16: bool = False):
        """bf16 autocast on a GPU replica, or where asked (a CPU with native bf16)."""
        if self.amp or bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def batch_loss(self, loss_fn, logits, y, x, n_global: int) -> torch.Tensor:
        """This rank's loss, weighted so DDP's average over ranks is the global batch's mean."""
        if self.world == 1:
            return loss_fn(logits, y, x)
        if len(x) == 0:  # a last global batch smaller than the world: join the all-reduce
            return logits.sum() * 0.0
        return loss_fn(logits, y, x) * (len(x) * self.world / n_global)


# --- the process group's backend -------------------------------------------------------

def resolve_backend(backend: str) -> str:
    """train.distributed.backend made concrete: auto is nccl with a GPU, else gloo."""
    if backend == "auto":
        return "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl" and not torch.cuda.is_available():
        from evergreen.errors import ConfigError

        raise ConfigError("train.distributed.backend: 'nccl' needs CUDA, and torch sees no GPU "
                          "(use 'gloo' or 'auto')")
    return backend
