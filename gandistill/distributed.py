"""Data parallelism across the processes torchrun starts: who this process is, its slice of a
global batch, and the few collectives the training code needs.

The rule that keeps N processes equal to one process at the same global batch:

- every rank draws the *global* batch's randomness (sample indices, noise z, labels,
  augmentation parameters) from the same seeded RNG and keeps its slice (`shard`), so the
  RNG states stay identical on every rank and a batch is still a pure function of
  (seed, step) — exact resume works as on one process;
- a rank's slice is every world_size-th sample starting at its rank (interleaved, not
  contiguous): ops that group samples by stride across a batch — minibatch-stddev groups in
  the discriminator, mode-seeking pairs (i, i + N/2) — then find the same partners locally;
- gradients of per-sample-mean losses are averaged by DDP; losses over the whole batch
  (feature matching, class balance, RKD relations) see the global batch through `gather`,
  whose backward sums every rank's gradient — with DDP's average that is exactly the
  one-process gradient; BatchNorm uses global batch statistics (`sync_batchnorm`).

Torchrun sets WORLD_SIZE / RANK / LOCAL_RANK; without them everything here is a no-op.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from gandistill.errors import ConfigError


@dataclass(frozen=True)
class World:
    """This process's place among the torchrun workers (1 process: rank 0 of 1)."""

    size: int = 1
    rank: int = 0
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> World:
        return cls(int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0")),
                   int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


def init_process_group(world: World, backend: str, timeout_s: float) -> None:
    """Join the torchrun group. `timeout_s` bounds every collective: a rank that stops
    answering (hung, not dead — a dead rank's closed sockets fail its peers at once) makes
    the others raise instead of waiting forever, and torchrun then stops the stage."""
    if world.active and not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))


def shard(t: torch.Tensor, world: World, what: str = "batch") -> torch.Tensor:
    """This rank's slice of a global batch: samples rank, rank + W, rank + 2W, …"""
    if not world.active:
        return t
    if len(t) % world.size:
        raise ConfigError(f"{what}: {len(t)} samples per step cannot be split evenly over {world.size} processes; "
                          f"use a batch size divisible by {world.size} (or change the number of processes)")
    return t[world.rank :: world.size]


class _Gather(torch.autograd.Function):
    """all_gather in global (interleaved) order; backward sums every rank's gradient of the
    gathered tensor and keeps this rank's slice (each rank computed the same global loss)."""

    @staticmethod
    def forward(ctx: Any, local: torch.Tensor, size: int, rank: int, total: int) -> torch.Tensor:
        longest = -(-total // size)
        padded = local.new_zeros((longest, *local.shape[1:]))
        padded[: len(local)] = local
        parts = [torch.empty_like(padded) for _ in range(size)]
        dist.all_gather(parts, padded.contiguous())
        ctx.size, ctx.rank, ctx.n_local, ctx.longest = size, rank, len(local), longest
        return torch.stack(parts, 1).reshape(longest * size, *local.shape[1:])[:total]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        full = grad.new_zeros((ctx.longest * ctx.size, *grad.shape[1:]))
        full[: len(grad)] = grad
        dist.all_reduce(full)
        return full[ctx.rank :: ctx.size][: ctx.n_local], None, None, None


def gather(local: torch.Tensor, world: World, total: int | None = None) -> torch.Tensor:
    """The global batch from every rank's `shard` (differentiable). `total`: the global
    length when shards may differ by one (evaluation splits); default: equal shards."""
    if not world.active:
        return local
    return _Gather.apply(local, world.size, world.rank, total if total is not None else len(local) * world.size)


class _AllReduceSum(torch.autograd.Function):
    """Σ over ranks, differentiable (the gradient is summed back the same way): sync BatchNorm's statistics."""

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor) -> torch.Tensor:
        out = t.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        out = grad.clone()
        dist.all_reduce(out)
        return out


def mean_over_ranks(values: list[float], world: World, device: torch.device) -> list[float]:
    """Average scalars (a step's losses) over ranks: every rank then sees the global value."""
    if not world.active or not values:
        return values
    t = torch.tensor(values, dtype=torch.float64 if device.type == "cpu" else torch.float32, device=device)
    dist.all_reduce(t)
    return (t / world.size).tolist()


def global_range(x: torch.Tensor, world: World) -> tuple[float, float]:
    """(min, max) of the global batch, from this rank's shard `x` (one all-reduce)."""
    t = torch.stack([x.detach().min(), -x.detach().max()])
    if world.active:
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return float(t[0]), -float(t[1])


def broadcast_object(obj: Any, world: World) -> Any:
    """Rank 0's `obj` on every rank (pickled): one decision, taken once, seen by all."""
    if not world.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class GlooSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the global batch for CPU process groups (torch's SyncBatchNorm is
    GPU-only). Training: per-channel Σx and Σx² are summed over ranks (differentiably), so
    the normalisation, its gradient and the running statistics equal one process's over the
    whole batch. Eval: plain BatchNorm on the running statistics. Same state_dict keys."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input (N×C…), got {x.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        self._check_input_dim(x)
        channels = x.shape[1]
        dims = [0, *range(2, x.dim())]
        count = torch.tensor([x.numel() / channels], dtype=x.dtype, device=x.device)
        stats = _AllReduceSum.apply(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
        n = stats[-1]
        mean = stats[:channels] / n
        var = (stats[channels : 2 * channels] / n - mean * mean).clamp_min(0)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)  # type: ignore[union-attr]
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(var.detach() * n / (n - 1).clamp_min(1), momentum)
        shape = [1, channels] + [1] * (x.dim() - 2)
        out = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm layer of `module` normalised over the global batch (in place where
    possible; returns the module). CUDA: torch's SyncBatchNorm; CPU: `GlooSyncBatchNorm`."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
            module, GlooSyncBatchNorm | nn.SyncBatchNorm):
        synced = GlooSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                   module.track_running_stats, device=device)
        synced.load_state_dict(module.state_dict())
        synced.train(module.training)
        return synced
    for name, child in module.named_children():
        setattr(module, name, sync_batchnorm(child, device))
    return module
