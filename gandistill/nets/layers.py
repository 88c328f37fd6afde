"""Layers the generator/discriminator families share."""

from __future__ import annotations

import torch
from torch import nn


def minibatch_stddev(h: torch.Tensor, group: int = 4) -> torch.Tensor:
    """One feature map holding the mean std of features across groups of `group` samples."""
    n, _, height, width = h.shape
    g = group if n % group == 0 else 1
    if g == 1:
        g = n  # odd batch: one group over the whole batch
    y = h.reshape(g, -1, *h.shape[1:])
    y = (y - y.mean(dim=0)).pow(2).mean(dim=0).add(1e-8).sqrt().mean(dim=(1, 2, 3))
    return y.view(-1, 1, 1, 1).repeat(g, 1, height, width)


def sample_conditional(self: nn.Module, n: int, device: torch.device | str = "cpu", labels: torch.Tensor | None = None,
                       generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw n images with uniformly random (or given) labels: the `sample` method of every
    class-conditional generator G(z, y) (one with `nz` and `num_classes`)."""
    if labels is None:
        labels = torch.randint(0, self.num_classes, (n,), device=device, generator=generator)
    z = torch.randn(n, self.nz, device=device, generator=generator)
    return self(z, labels), labels
