"""One process's place in a data-parallel job (Replica) and what makes N processes train as one:
the global-batch slice, sums over ranks, BatchNorm over the global batch on CPU, and the
process-group backend. `tasks.train.fit` takes a Replica (the default: a job of one process);
`tasks.distributed` starts the workers that pass theirs.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

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
        """The leader's `obj`, on every rank: JSON and tensors, never a pickle (tasks.exchange)."""
        if self.world == 1:
            return obj
        from tasks.exchange import broadcast_value

        return broadcast_value(obj, self.leader_rank, self.device, self.leader)

    @property
    def leader(self) -> bool:
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


# --- BatchNorm over the global batch on CPU -------------------------------------------

class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the gradient of a sum is the sum of the gradients."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        dist.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics span all ranks' inputs, like nn.SyncBatchNorm.

    torch's SyncBatchNorm runs only on GPU. This one sums (x, x^2, count) over ranks in one
    autograd all-reduce (float64, so E[x^2] - E[x]^2 loses nothing), one more in backward:
    forward, gradients and running stats equal one process's BatchNorm over the global
    batch. Same parameters and buffers as BatchNorm, so state dicts load either way.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, ...) -> same
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        dims, c = [0, *range(2, x.dim())], x.size(1)
        shape = [1, -1] + [1] * (x.dim() - 2)
        xd = x.double()
        count = torch.full((1,), x.numel() / max(c, 1), dtype=torch.float64)
        stats = _AllReduceSum.apply(torch.cat([xd.sum(dims), (xd * xd).sum(dims), count]))  # (2C + 1,)
        n = stats[-1].detach()
        mean = stats[:c] / n
        var = (stats[c:2 * c] / n - mean * mean).clamp_min(0)  # biased, as BN normalizes
        scale = torch.rsqrt(var + self.eps)
        out = ((xd - mean.view(shape)) * scale.view(shape)).to(x.dtype)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            self._update_running_stats(mean.detach().to(x.dtype), var.detach().to(x.dtype), n.item())
        return out

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, n: float) -> None:
        self.num_batches_tracked.add_(1)
        momentum = (1.0 / self.num_batches_tracked.item() if self.momentum is None
                    else self.momentum)
        unbiased = var * (n / max(n - 1, 1))
        self.running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
        self.running_var.mul_(1 - momentum).add_(unbiased, alpha=momentum)


def convert_to_cpu_sync_bn(module: nn.Module) -> nn.Module:
    """Swap every BatchNorm layer for a CpuSyncBatchNorm holding the same tensors."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, CpuSyncBatchNorm):
        synced = CpuSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                  module.track_running_stats)
        synced.load_state_dict(module.state_dict())
        synced.train(module.training)
        return synced
    for name, child in module.named_children():
        module.add_module(name, convert_to_cpu_sync_bn(child))
    return module


# --- the launcher side (the train stage) ----------------------------------------------

def resolve_backend(backend: str) -> str:
    if backend == "auto":
        return "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl" and not torch.cuda.is_available():
        from evergreen.errors import ConfigError

        raise ConfigError("train.distributed.backend: 'nccl' needs CUDA, and torch sees no GPU "
                          "(use 'gloo' or 'auto')")
    return backend
