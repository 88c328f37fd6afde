"""Cheap, batched data augmentation on tensors (no per-sample Python work).

Random affine per sample — rotation, isotropic scale, translation — through one
`affine_grid`/`grid_sample` call. Mild by design (no flips: digits and many small-image
classes are not mirror-symmetric).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from gandistill.distributed import World, shard


def random_affine(x: torch.Tensor, max_rotate_deg: float = 10.0, max_scale: float = 0.1,
                  max_shift: float = 0.1, world: World | None = None) -> torch.Tensor:
    """x: N×C×H×W float in [0, 1]; shift is a fraction of the image size.

    With a distributed `world`, x is this rank's shard of a global batch: the parameters are
    drawn for the whole batch (same RNG on every rank) and sharded like the samples, so each
    sample gets the transform one process would have given it.
    """
    world = world or World()
    n = x.shape[0] * world.size
    angle = shard((torch.rand(n, device=x.device) * 2 - 1) * math.radians(max_rotate_deg), world)
    scale = 1 + shard((torch.rand(n, device=x.device) * 2 - 1) * max_scale, world)
    shift = shard((torch.rand(n, 2, device=x.device) * 2 - 1) * max_shift * 2, world)  # grid coords span [-1, 1]
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
