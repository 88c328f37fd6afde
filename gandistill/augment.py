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


def random_colour(x: torch.Tensor, max_gain: float = 0.5, max_offset: float = 0.15, invert_p: float = 0.5,
                  world: World | None = None) -> torch.Tensor:
    """Per-sample colour/intensity augmentation of x (N×C×H×W float in [0, 1]): a random channel
    order (colour images), a per-channel gain in [1 − max_gain, 1 + max_gain] and offset in
    [−max_offset, max_offset], and with probability invert_p the negative 1 − x.

    Photometric, label-preserving for tasks where colour and polarity do not carry the class
    (digits, shapes, most objects); the point is a student that does not rely on the source
    domain's colours when it must work on another domain's (domain randomisation, Tobin et al.
    2017; AutoAugment's Invert / Color ops). Parameters are drawn for the global batch and
    sharded like `random_affine`.
    """
    world = world or World()
    n, c = x.shape[0] * world.size, x.shape[1]
    if c > 1:
        order = shard(torch.rand(n, c, device=x.device).argsort(dim=1), world)
        x = torch.gather(x, 1, order[:, :, None, None].expand_as(x))
    gain = 1 + shard((torch.rand(n, c, 1, 1, device=x.device) * 2 - 1) * max_gain, world)
    offset = shard((torch.rand(n, c, 1, 1, device=x.device) * 2 - 1) * max_offset, world)
    x = (x * gain + offset).clamp(0, 1)
    invert = shard((torch.rand(n, 1, 1, 1, device=x.device) < invert_p).to(x.dtype), world)
    return invert * (1 - x) + (1 - invert) * x
