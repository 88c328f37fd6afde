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


# -- DiffAugment -----------------------------------------------------------------------------

DIFF_AUGMENT_OPS = ("color", "translation", "cutout")


def diff_augment(x: torch.Tensor, policy: tuple[str, ...] | list[str] = DIFF_AUGMENT_OPS) -> torch.Tensor:
    """Zhao et al., "Differentiable Augmentation for Data-Efficient GAN Training", NeurIPS 2020
    (official DiffAugment-pytorch, ops and ranges unchanged): the same random, differentiable
    transforms on real and generated images before D — in the D step and the G step — so D cannot
    memorise the training images and G's gradients pass through the transforms.

    x: N×C×H×W float pixels in [0, 1] (the paper's ops act on [−1, 1]; x is mapped there and back,
    so "zero" fill is mid-grey as in the paper). Each sample draws its own parameters:

    - color: brightness + U(−0.5, 0.5); saturation (x − mean_c)·U(0, 2) + mean_c (colour images);
      contrast (x − mean)·U(0.5, 1.5) + mean;
    - translation: an integer shift of up to 1/8 of the side in each direction, zero-filled;
    - cutout: one square of half the side, at a random place, set to zero.
    """
    unknown = sorted(set(policy) - set(DIFF_AUGMENT_OPS))
    if unknown:
        raise ValueError(f"unknown DiffAugment op(s) {unknown}; known: {', '.join(DIFF_AUGMENT_OPS)}")
    x = x * 2 - 1
    if "color" in policy:
        x = _brightness(x)
        if x.shape[1] > 1:
            x = _saturation(x)
        x = _contrast(x)
    if "translation" in policy:
        x = _translation(x)
    if "cutout" in policy:
        x = _cutout(x)
    return (x + 1) / 2


def _brightness(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device) - 0.5)


def _saturation(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device) * 2) + mean


def _contrast(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device) + 0.5) + mean


def _translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, (n, 1, 1), device=x.device)
    dx = torch.randint(-sw, sw + 1, (n, 1, 1), device=x.device)
    grid_b, grid_y, grid_x = torch.meshgrid(torch.arange(n, device=x.device), torch.arange(h, device=x.device),
                                            torch.arange(w, device=x.device), indexing="ij")
    grid_y = torch.clamp(grid_y + dy + 1, 0, h + 1)
    grid_x = torch.clamp(grid_x + dx + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])  # a one-pixel zero frame: shifted-in pixels read it
    return padded.permute(0, 2, 3, 1)[grid_b, grid_y, grid_x].permute(0, 3, 1, 2)


def _cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), device=x.device)
    ox = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), device=x.device)
    grid_b, grid_y, grid_x = torch.meshgrid(torch.arange(n, device=x.device), torch.arange(ch, device=x.device),
                                            torch.arange(cw, device=x.device), indexing="ij")
    grid_y = torch.clamp(grid_y + oy - ch // 2, 0, h - 1)
    grid_x = torch.clamp(grid_x + ox - cw // 2, 0, w - 1)
    mask = torch.ones(n, h, w, dtype=x.dtype, device=x.device)
    mask[grid_b, grid_y, grid_x] = 0
    return x * mask.unsqueeze(1)
