"""A model's logits over a split of uint8 images, and their accuracy (what every stage that
scores a classifier calls)."""

from __future__ import annotations

import torch
from torch import nn

from gandistill.data.dataset import as_float


@torch.no_grad()
def predict_logits(model: nn.Module, x_uint8: torch.Tensor, batch_size: int = 1000,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    model.eval()
    outs = []
    for start in range(0, len(x_uint8), batch_size):
        outs.append(model(as_float(x_uint8[start : start + batch_size].to(device))).float().cpu())
    return torch.cat(outs) if outs else torch.empty(0)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean()) if len(labels) else float("nan")
