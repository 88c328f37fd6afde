"""Device placement, threads, seeding, mixed precision and (optional) DDP in one place.

Minimal intrusion in the spirit of huggingface/accelerate: stages ask the Runtime for the
device, wrap trainable modules with `prepare`, and run forward passes under `autocast()`;
the same code then runs on CPU, one GPU, or several (torchrun sets WORLD_SIZE/RANK).
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from gandistill.config import RuntimeParams


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Runtime:
    device: torch.device
    precision: str = "fp32"
    world_size: int = 1
    rank: int = 0

    @classmethod
    def from_params(cls, params: RuntimeParams) -> Runtime:
        if params.threads:
            torch.set_num_threads(params.threads)
        if params.device == "cuda" and not torch.cuda.is_available():
            from gandistill.errors import ConfigError

            raise ConfigError("runtime.device=cuda but no CUDA device is visible; use runtime.device=auto or cpu")
        use_cuda = params.device == "cuda" or (params.device == "auto" and torch.cuda.is_available())
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        if world_size > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if use_cuda else "gloo")
        if use_cuda:
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local_rank)
            device = torch.device("cuda", local_rank)
        else:
            device = torch.device("cpu")
        # Mixed precision only where it pays: CPU autocast is slower than fp32 for these nets.
        precision = params.precision if device.type == "cuda" else "fp32"
        return cls(device=device, precision=precision, world_size=world_size, rank=rank)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        if self.precision == "fp32":
            yield
            return
        with torch.autocast(self.device.type, dtype=torch.bfloat16):
            yield

    def prepare(self, module: nn.Module) -> nn.Module:
        """Move to the device; wrap in DDP when running distributed."""
        module = module.to(self.device)
        if self.world_size > 1 and any(p.requires_grad for p in module.parameters()):
            module = nn.parallel.DistributedDataParallel(
                module, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        return module


def unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module
