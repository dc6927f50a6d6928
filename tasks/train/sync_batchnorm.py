"""BatchNorm over the global batch on CPU, where torch's nn.SyncBatchNorm refuses to run.

A DDP job with train.distributed.sync_batchnorm normalizes with the statistics of all ranks'
inputs (tasks.train.replica.Replica.prepare swaps these layers in on CPU).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


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
        """BatchNorm with the global batch's statistics while training in a job; plain otherwise."""
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
        """Running mean and unbiased variance, updated as BatchNorm does, from global statistics."""
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
