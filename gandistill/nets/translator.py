"""Unpaired image translators between a source domain A and a target domain B (CycleGAN).

Generators follow Zhu et al. 2017 (Appendix 7.2: c7s1-k, two stride-2 downsamplings, residual
blocks, two fractionally-strided upsamplings, instance norm), scaled down for a 2-core CPU:
width `ngf` (64 in the paper), `n_blocks` residual blocks (6–9 in the paper), sigmoid output in
[0, 1] pixels. Discriminators are PatchGANs (Isola et al. 2017): a grid of real/fake scores, each
seeing one patch, so D judges local texture — what separates MNIST from MNIST-M.

A and B may differ in channels and size: a generator first brings its input to the output
domain's size (bilinear, antialiased when shrinking: `resize`), and `ShapeAdapter` converts pixels
between shapes without learning (luminance for RGB → grey, repetition for grey → RGB). The adapter is also what lets the
source-only teacher read raw target images, the baseline the translator must beat.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

Shape = tuple[int, int, int]  # (channels, height, width)

# ITU-R BT.601 luma weights, as Pillow's convert("L").
LUMA = (0.299, 0.587, 0.114)


def resize(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Bilinear resize of N×C×H×W images to `size` (H, W), antialiased when either side shrinks: a
    plain bilinear shrink samples 2×2 pixels per output pixel and drops the rest, so a 28×28 digit
    brought to 8×8 loses strokes (the source-only teacher reads MNIST brought down to 8×8 and back at
    77.6 % without the filter, 85.5 % with it; notes/issue-22.md). Identity when the sizes agree."""
    h, w = size
    if tuple(x.shape[-2:]) == (h, w):
        return x
    shrinking = x.shape[-2] > h or x.shape[-1] > w
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=shrinking)


class ShapeAdapter(nn.Module):
    """Fixed pixel conversion N×C_in×H_in×W_in → N×C_out×H_out×W_out, values stay in [0, 1].

    grey ← RGB: y = 0.299 R + 0.587 G + 0.114 B; RGB ← grey: the grey plane three times;
    size: bilinear resize (antialiased when shrinking). Identity when the shapes agree.
    """

    def __init__(self, in_shape: Shape, out_shape: Shape):
        super().__init__()
        for shape in (in_shape, out_shape):
            if shape[0] not in (1, 3):
                raise ValueError(f"ShapeAdapter converts 1- or 3-channel images, got {shape}")
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
        self.register_buffer("luma", torch.tensor(LUMA).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c_in, c_out = self.in_shape[0], self.out_shape[0]
        if c_in == 3 and c_out == 1:
            x = (x * self.luma).sum(dim=1, keepdim=True)
        elif c_in == 1 and c_out == 3:
            x = x.expand(-1, 3, -1, -1)
        return resize(x, self.out_shape[1:])


class AdaptedClassifier(nn.Module):
    """A classifier for shape `adapter.in_shape`: the adapter, then a classifier of another shape
    (the source-only teacher reading target images)."""

    def __init__(self, adapter: ShapeAdapter, classifier: nn.Module):
        super().__init__()
        self.adapter, self.classifier = adapter, classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.adapter(x))


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1), nn.InstanceNorm2d(channels, affine=True), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, 1, 1), nn.InstanceNorm2d(channels, affine=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class TranslatorGenerator(nn.Module):
    """G: images of `in_shape` → images of `out_shape` (CycleGAN's ResNet generator, small)."""

    def __init__(self, in_shape: Shape, out_shape: Shape, ngf: int = 16, n_blocks: int = 3):
        super().__init__()
        self.in_shape, self.out_shape, self.ngf, self.n_blocks = tuple(in_shape), tuple(out_shape), ngf, n_blocks
        c_in, c_out = in_shape[0], out_shape[0]

        def norm_relu(ch: int) -> list[nn.Module]:
            return [nn.InstanceNorm2d(ch, affine=True), nn.ReLU(inplace=True)]

        self.net = nn.Sequential(
            nn.Conv2d(c_in, ngf, 5, 1, 2), *norm_relu(ngf),
            nn.Conv2d(ngf, ngf * 2, 4, 2, 1), *norm_relu(ngf * 2),
            nn.Conv2d(ngf * 2, ngf * 4, 4, 2, 1), *norm_relu(ngf * 4),
            *[_ResidualBlock(ngf * 4) for _ in range(n_blocks)],
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1), *norm_relu(ngf * 2),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1), *norm_relu(ngf),
            nn.Conv2d(ngf, c_out, 5, 1, 2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.out_shape[1:]
        x = resize(x, (h, w))
        pad_h, pad_w = (-h) % 4, (-w) % 4  # two stride-2 stages: work on a multiple of 4, crop back
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        return torch.sigmoid(self.net(x))[..., :h, :w]


class PatchDiscriminator(nn.Module):
    """PatchGAN D (Isola et al. 2017; CycleGAN's 70×70 D scaled to small images): three convs,
    one score per patch (N×1×h×w); spectral norm (Miyato et al. 2018) for stable CPU-sized runs."""

    def __init__(self, in_channels: int, ndf: int = 32, use_spectral_norm: bool = True):
        super().__init__()
        sn = spectral_norm if use_spectral_norm else (lambda m: m)
        self.net = nn.Sequential(
            sn(nn.Conv2d(in_channels, ndf, 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True),
            sn(nn.Conv2d(ndf, ndf * 2, 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True),
            sn(nn.Conv2d(ndf * 2, 1, 3, 1, 1)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2 - 1)


class CycleTranslator(nn.Module):
    """The pair the transfer stages use: g_ab (A → B) and g_ba (B → A)."""

    def __init__(self, shape_a: Shape, shape_b: Shape, ngf: int = 16, n_blocks: int = 3):
        super().__init__()
        self.shape_a, self.shape_b = tuple(shape_a), tuple(shape_b)
        self.g_ab = TranslatorGenerator(shape_a, shape_b, ngf, n_blocks)
        self.g_ba = TranslatorGenerator(shape_b, shape_a, ngf, n_blocks)
