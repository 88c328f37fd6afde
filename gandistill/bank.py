"""A pool of generated samples with the teacher's logits on them, reused a few times each.

In `gan` distillation the generator and the teacher are frozen, so a generated sample and its
teacher logits are as good at step 9,000 as at step 10: what a fresh batch per step buys is
only variety. Drawing them (generator, augmentation, teacher forward) is about half the CPU
cost of a distillation step (bench/results/limits.md). `SampleBank` keeps `size` samples,
replaces the oldest `fresh_per_step` of them every step and draws each step's candidates
uniformly from the pool, so each sample is used `reuse` = candidates / fresh_per_step times on
average and the fresh-sample cost falls by that factor.

Data-parallel: fresh samples are drawn for the global batch (each rank generates its shard and
every rank gathers the rest, as `generated_batch` gathers its candidates), so every rank holds
the same pool and picks the same global candidates with the shared RNG — N processes compute
what one process computes. The pool is module state (buffers): the training loop checkpoints
it, so a resumed run continues with the very pool it stopped with.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from gandistill.runtime import Runtime

# fresh n (global count) -> this rank's shard of n fresh samples: images, labels, teacher logits
Draw = Callable[[int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def bank_sizes(candidates: int, reuse: float, world_size: int = 1, pool_steps: int = 4) -> tuple[int, int]:
    """(pool size, fresh samples per step) for `candidates` drawn per step, each sample used
    `reuse` times on average; the pool holds `pool_steps` steps' worth of candidates. Both are
    multiples of the number of processes (each draws its shard)."""
    fresh = max(world_size, math.ceil(candidates / reuse / world_size) * world_size)
    size = max(candidates, pool_steps * candidates)
    return math.ceil(size / fresh) * fresh, fresh


class SampleBank(nn.Module):
    def __init__(self, draw: Draw, candidates: int, reuse: float, runtime: Runtime):
        super().__init__()
        self.draw, self.runtime, self.candidates = draw, runtime, candidates
        self.size, self.fresh_per_step = bank_sizes(candidates, reuse, runtime.world_size)
        x, y, t = self._fresh(self.size)
        self.register_buffer("images", x)
        self.register_buffer("labels", y)
        self.register_buffer("teacher_logits", t)
        self.register_buffer("oldest", torch.zeros((), dtype=torch.long))  # ring position of the oldest sample

    @property
    def reuse(self) -> float:
        return self.candidates / self.fresh_per_step

    def _fresh(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, y, t = self.draw(n)
        return self.runtime.gather(x), self.runtime.gather(y), self.runtime.gather(t)

    @torch.no_grad()
    def refresh(self) -> None:
        """Replace the oldest `fresh_per_step` samples with fresh ones."""
        start = int(self.oldest)
        slots = (torch.arange(self.fresh_per_step, device=self.images.device) + start) % self.size
        x, y, t = self._fresh(self.fresh_per_step)
        self.images[slots], self.labels[slots], self.teacher_logits[slots] = x, y, t
        self.oldest.fill_((start + self.fresh_per_step) % self.size)

    @torch.no_grad()
    def candidates_shard(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Refresh, then this rank's shard of `candidates` samples drawn from the pool without
        replacement (global draw: the same on every rank)."""
        self.refresh()
        chosen = torch.randperm(self.size, device=self.images.device)[: self.candidates]
        mine = self.runtime.shard(chosen, "distill.batch_size × (1 + distill.hard_fraction) (candidates per step)")
        return self.images[mine], self.labels[mine], self.teacher_logits[mine]
