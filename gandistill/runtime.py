"""Device placement, threads, seeding, mixed precision and data parallelism in one place.

Minimal intrusion in the spirit of huggingface/accelerate: stages ask the Runtime for the
device, wrap trainable modules with `prepare`, run forward passes under `autocast()`, and
take their slice of a global batch with `shard`; the same code then runs on CPU, one GPU,
or several processes started by torchrun (WORLD_SIZE/RANK/LOCAL_RANK; see
gandistill.distributed for why N processes compute what one process computes).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from gandistill import distributed
from gandistill.config import RuntimeParams
from gandistill.distributed import World


def fused(optimizer: type[torch.optim.Optimizer], params: Any, **settings: Any) -> torch.optim.Optimizer:
    """`optimizer(params, **settings)` with its fused kernel (Adam, AdamW, SGD on CPU and CUDA):
    one pass over every parameter per step instead of a chain of small ops per tensor — on CPU
    that chain is ~10 % of a LeNet-sized training step (bench/results/limits.md)."""
    return optimizer(params, fused=True, **settings)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Runtime:
    device: torch.device
    precision: str = "fp32"
    world: World = field(default_factory=World)
    # How long a training loop waits for another live run that holds its checkpoints (None: while
    # that run lives), then trains apart (gandistill.lease).
    checkpoint_wait_s: float | None = None

    @classmethod
    def from_params(cls, params: RuntimeParams) -> Runtime:
        if params.threads:
            torch.set_num_threads(params.threads)
        if params.device == "cuda" and not torch.cuda.is_available():
            from gandistill.errors import ConfigError

            raise ConfigError("runtime.device=cuda but no CUDA device is visible; use runtime.device=auto or cpu")
        use_cuda = params.device == "cuda" or (params.device == "auto" and torch.cuda.is_available())
        world = World.from_env()
        if use_cuda:
            torch.cuda.set_device(world.local_rank)  # before the group: NCCL binds to the current device
            device = torch.device("cuda", world.local_rank)
        else:
            device = torch.device("cpu")
        distributed.init_process_group(world, "nccl" if use_cuda else "gloo", params.collective_timeout_s)
        # Mixed precision only where it pays: CPU autocast is slower than fp32 for these nets.
        precision = params.precision if device.type == "cuda" else "fp32"
        return cls(device=device, precision=precision, world=world, checkpoint_wait_s=params.checkpoint_wait_s)

    @property
    def world_size(self) -> int:
        return self.world.size

    @property
    def rank(self) -> int:
        return self.world.rank

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes checkpoints, outputs and MLflow records."""
        return self.world.is_main

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        if self.precision == "fp32":
            yield
            return
        with torch.autocast(self.device.type, dtype=torch.bfloat16):
            yield

    def prepare(self, module: nn.Module) -> nn.Module:
        """Move to the device; when distributed, BatchNorm over the global batch and DDP.

        Every training forward must go through the returned module (DDP averages the
        gradients of what passed through it); evaluation uses `unwrap(module)`.
        Buffers are synced from rank 0 once, not before every forward: global BatchNorm
        statistics and identical weights keep them equal on every rank.
        """
        module = module.to(self.device)
        if self.world.active and any(p.requires_grad for p in module.parameters()):
            module = distributed.sync_batchnorm(module, self.device)
            module = nn.parallel.DistributedDataParallel(
                _Forward(module), device_ids=[self.device.index] if self.device.type == "cuda" else None,
                forward_sync_buffers=False)
        return module

    def forward_features(self, module: nn.Module, x: torch.Tensor) -> Any:
        """`module.forward_features(x)` — through DDP's forward when `module` is wrapped, so
        the gradients of a feature loss (hint, RKD) are averaged like the logits'."""
        if isinstance(module, nn.parallel.DistributedDataParallel):
            return module(x, features=True)
        return module.forward_features(x)

    def shard(self, t: torch.Tensor, what: str = "batch") -> torch.Tensor:
        """This rank's slice of a global batch (the tensor itself on one process)."""
        return distributed.shard(t, self.world, what)

    def gather(self, local: torch.Tensor, total: int | None = None) -> torch.Tensor:
        """The global batch from every rank's shard (differentiable; itself on one process).
        The collective runs on the runtime's device (NCCL needs CUDA tensors); the result
        comes back on `local`'s device."""
        if not self.world.active:
            return local
        if local.device != self.device:
            return distributed.gather(local.to(self.device), self.world, total).to(local.device)
        return distributed.gather(local, self.world, total)

    def eval_slice(self, t: torch.Tensor) -> torch.Tensor:
        """This rank's part of an evaluation split (shards may differ by one sample; pair
        with `gather(..., total=len(t))`)."""
        return t[self.world.rank :: self.world.size] if self.world.active else t

    def mean_over_ranks(self, values: list[float]) -> list[float]:
        return distributed.mean_over_ranks(values, self.world, self.device)

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's object on every rank."""
        return distributed.broadcast_object(obj, self.world)


class _Forward(nn.Module):
    """What DDP wraps: the module's forward, or with features=True its forward_features
    (DDP averages the gradients of what passes through its own forward only)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, *args: Any, features: bool = False, **kwargs: Any) -> Any:
        return self.inner.forward_features(*args, **kwargs) if features else self.inner(*args, **kwargs)


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
    """`module` with its parameters out of autograd for the forward passes made inside: the
    graph then carries gradients *through* it (to its inputs) but computes none for its own
    weights — e.g. the discriminator in the generator's step, whose weight gradients would be
    thrown away by its optimizer's zero_grad. Pass the plain module (`unwrap`), not a DDP
    wrapper: DDP would wait for gradients that never come."""
    trainable = [p for p in module.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p in trainable:
            p.requires_grad_(True)


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module inside a DDP wrapper (the module itself otherwise)."""
    if isinstance(module, nn.parallel.DistributedDataParallel):
        module = module.module
    return module.inner if isinstance(module, _Forward) else module
