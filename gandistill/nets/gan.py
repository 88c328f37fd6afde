"""Conditional generator G(z, y) and discriminator D(x, y), sized from the data.

Generator: class-conditional batch norm (de Vries et al., 2017; used by SNGAN-projection
and BigGAN) in two transposed-conv (×2) stages at the data's native resolution, sigmoid
output in [0, 1] pixels. It is deliberately small: on a 2-core CPU the generator's
convolutions dominate GAN-KD's cost (see ENVIRONMENT.md), and MNIST-scale data needs no more.

Discriminator: spectral-normalised convs (Miyato et al., 2018) and projection conditioning
(Miyato & Koyama, 2018): D(x, y) = ψ(φ(x)) + ⟨embed(y), φ(x)⟩. φ(x) — the penultimate
feature vector — is also what the feature-matching term L_FM compares.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from gandistill.nets.conv import Conv2d
from gandistill.nets.layers import minibatch_stddev, sample_conditional
from gandistill.nets.resgan import ProjectionDiscriminator, ResNetGenerator


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm without affine params, then a per-class scale and shift."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gamma = nn.Embedding(num_classes, channels)
        self.beta = nn.Embedding(num_classes, channels)
        nn.init.ones_(self.gamma.weight)
        nn.init.zeros_(self.beta.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = self.bn(x)
        return out * self.gamma(y)[:, :, None, None] + self.beta(y)[:, :, None, None]


class PixelOutput(nn.Module):
    """The generator's last layer → pixels.

    sigmoid: [0, 1] pixels, for a GAN trained on real images.
    normalised: tanh, then BatchNorm without affine parameters, mapped back through the data's
    mean/std — DFAD's generator output (Fang et al. 2019). Every batch then reaches the
    classifiers (which normalise their inputs) with zero mean and unit variance per channel,
    so a generator trained against the student cannot inflate the discrepancy by saturating
    pixels; it has to move where the classifiers disagree.
    """

    def __init__(self, channels: int, mode: str = "sigmoid", mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None):
        super().__init__()
        if mode not in ("sigmoid", "normalised"):
            raise ValueError(f"generator output must be sigmoid or normalised, got {mode!r}")
        self.mode = mode
        if mode == "normalised":  # sigmoid mode adds no state: saved generators load unchanged
            self.bn = nn.BatchNorm2d(channels, affine=False)
            shape = (1, channels, 1, 1)
            self.register_buffer("mean", torch.tensor(mean or [0.0] * channels).view(shape))
            self.register_buffer("std", torch.tensor(std or [1.0] * channels).view(shape))

    def forward(self, pre_activation: torch.Tensor) -> torch.Tensor:
        if self.mode == "sigmoid":
            return torch.sigmoid(pre_activation)
        return self.bn(torch.tanh(pre_activation)) * self.std + self.mean


class ConditionalGenerator(nn.Module):
    def __init__(self, nz: int, num_classes: int, out_channels: int, image_size: tuple[int, int],
                 ngf: int = 32, output: str = "sigmoid", mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None):
        super().__init__()
        self.nz, self.num_classes, self.image_size = nz, num_classes, image_size
        h, w = image_size
        self.base = (max(2, math.ceil(h / 4)), max(2, math.ceil(w / 4)))
        self.embed = nn.Embedding(num_classes, nz)
        # Channels halve as resolution doubles, so each stage costs about the same and the
        # full-resolution convs stay narrow (the generator dominates GAN-KD's CPU cost).
        self.fc = nn.Linear(2 * nz, ngf * 2 * self.base[0] * self.base[1])
        self.bn0 = ConditionalBatchNorm2d(ngf * 2, num_classes)
        # Transposed convs upsample and convolve in one op; nearest-upsample + conv was 2× slower
        # on CPU (the upsample's memory copy dominated the profile).
        self.conv1 = nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1)
        self.bn1 = ConditionalBatchNorm2d(ngf, num_classes)
        self.conv2 = nn.ConvTranspose2d(ngf, max(8, ngf // 2), 4, 2, 1)
        self.bn2 = ConditionalBatchNorm2d(max(8, ngf // 2), num_classes)
        self.out = nn.Conv2d(max(8, ngf // 2), out_channels, 3, padding=1)
        self.to_pixels = PixelOutput(out_channels, output, mean, std)
        self.ngf = ngf
        self.out_channels = out_channels

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.fc(torch.cat([z, self.embed(y)], dim=1)).view(-1, self.ngf * 2, *self.base)
        h = F.relu(self.bn0(h, y))
        h = F.relu(self.bn1(self.conv1(h), y))
        h = F.relu(self.bn2(self.conv2(h), y))
        img = self.to_pixels(self.out(h))
        if img.shape[-2:] != torch.Size(self.image_size):
            img = F.interpolate(img, size=self.image_size, mode="bilinear", align_corners=False)
        return img

    sample = sample_conditional


class ConditionalDiscriminator(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, image_size: tuple[int, int], ndf: int = 32,
                 use_spectral_norm: bool = True):
        super().__init__()
        sn = spectral_norm if use_spectral_norm else (lambda m: m)
        self.conv1 = sn(Conv2d(in_channels, ndf, 4, 2, 1))  # reads images: see nets.conv
        self.conv2 = sn(nn.Conv2d(ndf, ndf * 2, 4, 2, 1))
        # +1 input channel: the minibatch-stddev feature (Karras et al., 2018, ProGAN §3) lets D
        # see sample diversity, so a generator that ignores z (intra-class collapse) is caught.
        self.conv3 = sn(nn.Conv2d(ndf * 2 + 1, ndf * 2, 3, 1, 1))
        self.linear = sn(nn.Linear(ndf * 2, 1))
        self.embed = sn(nn.Embedding(num_classes, ndf * 2))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """φ(x): global-sum-pooled last conv activations (N×2·ndf)."""
        h = F.leaky_relu(self.conv1(x * 2 - 1), 0.2)
        h = F.leaky_relu(self.conv2(h), 0.2)
        h = F.leaky_relu(self.conv3(torch.cat([h, minibatch_stddev(h)], dim=1)), 0.2)
        return h.sum(dim=(2, 3))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (logit N, features N×D)."""
        phi = self.features(x)
        logit = self.linear(phi).squeeze(1) + (self.embed(y) * phi).sum(dim=1)
        return logit, phi


class MLPGenerator(nn.Module):
    """Fully connected conditional generator, as in the cGAN paper's MNIST experiment
    (Mirza & Osindero, 2014, §4.1). On CPU a matmul-only GAN step is 2.5–5.7× cheaper than
    small convolutions, so it affords many more GAN steps for small grey images."""

    def __init__(self, nz: int, num_classes: int, out_channels: int, image_size: tuple[int, int], ngf: int = 256,
                 output: str = "sigmoid", mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        super().__init__()
        self.nz, self.num_classes, self.image_size, self.ngf = nz, num_classes, image_size, ngf
        self.out_channels = out_channels
        self.embed = nn.Embedding(num_classes, nz)
        self.fc1 = nn.Linear(2 * nz, ngf)
        self.bn1 = nn.BatchNorm1d(ngf)
        self.fc2 = nn.Linear(ngf, ngf * 2)
        self.bn2 = nn.BatchNorm1d(ngf * 2)
        self.fc3 = nn.Linear(ngf * 2, out_channels * image_size[0] * image_size[1])
        self.to_pixels = PixelOutput(out_channels, output, mean, std)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.fc1(torch.cat([z, self.embed(y)], dim=1))))
        h = F.relu(self.bn2(self.fc2(h)))
        return self.to_pixels(self.fc3(h).view(-1, self.out_channels, *self.image_size))

    sample = ConditionalGenerator.sample


class MLPDiscriminator(nn.Module):
    """Fully connected projection discriminator with spectral norm and a minibatch-stddev
    feature; φ(x) is the last hidden layer."""

    def __init__(self, num_classes: int, in_channels: int, image_size: tuple[int, int], ndf: int = 256,
                 use_spectral_norm: bool = True):
        super().__init__()
        sn = spectral_norm if use_spectral_norm else (lambda m: m)
        self.fc1 = sn(nn.Linear(in_channels * image_size[0] * image_size[1], ndf * 2))
        self.fc2 = sn(nn.Linear(ndf * 2 + 1, ndf))
        self.linear = sn(nn.Linear(ndf, 1))
        self.embed = sn(nn.Embedding(num_classes, ndf))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.fc1(x.flatten(1) * 2 - 1), 0.2)
        std = minibatch_stddev(h[:, :, None, None])[:, :, 0, 0]
        return F.leaky_relu(self.fc2(torch.cat([h, std], dim=1)), 0.2)

    forward = ConditionalDiscriminator.forward


class DFADGenerator(nn.Module):
    """DFAD's MNIST generator ("GeneratorA", Fang et al. 2019, official code): unconditional —
    z only — a linear projection to ngf·2 maps at a quarter of the resolution, two nearest
    upsamplings each followed by 3×3 convs (ngf·2, then ngf) with BatchNorm and LeakyReLU, and
    DFAD's normalised output. Kept for the faithful DFAD comparison: its full-resolution 3×3
    convs cost ~35× gandistill's conv generator per sample at ngf 64."""

    def __init__(self, nz: int, num_classes: int, out_channels: int, image_size: tuple[int, int], ngf: int = 64,
                 output: str = "normalised", mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        super().__init__()
        self.nz, self.num_classes, self.image_size, self.ngf = nz, num_classes, image_size, ngf
        self.out_channels = out_channels
        h, w = image_size
        self.base = (max(2, math.ceil(h / 4)), max(2, math.ceil(w / 4)))
        self.project = nn.Linear(nz, ngf * 2 * self.base[0] * self.base[1])
        self.bn0 = nn.BatchNorm2d(ngf * 2)
        self.block1 = nn.Sequential(nn.Conv2d(ngf * 2, ngf * 2, 3, 1, 1), nn.BatchNorm2d(ngf * 2),
                                    nn.LeakyReLU(0.2))
        self.block2 = nn.Sequential(nn.Conv2d(ngf * 2, ngf, 3, 1, 1), nn.BatchNorm2d(ngf), nn.LeakyReLU(0.2),
                                    nn.Conv2d(ngf, out_channels, 3, 1, 1))
        self.to_pixels = PixelOutput(out_channels, output, mean, std)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.bn0(self.project(z).view(-1, self.ngf * 2, *self.base))
        h = self.block1(F.interpolate(h, scale_factor=2))
        img = self.to_pixels(self.block2(F.interpolate(h, scale_factor=2)))
        if img.shape[-2:] != torch.Size(self.image_size):
            img = F.interpolate(img, size=self.image_size, mode="bilinear", align_corners=False)
        return img

    sample = ConditionalGenerator.sample  # labels are drawn but ignored: the generator is unconditional


def resolve_gan_arch(arch: str, channels: int, image_size: tuple[int, int], output: str = "sigmoid") -> str:
    """"auto" → mlp for grey images up to 32×32 (cheap and good there); resnet otherwise (colour,
    texture, larger images: the ResNet pair sized for a CPU, nets/resgan.py) — conv for a generator
    with another output than sigmoid pixels (the data-free generator), which the ResNet G lacks."""
    if arch != "auto":
        return arch
    if channels == 1 and image_size[0] * image_size[1] <= 32 * 32:
        return "mlp"
    return "resnet" if output == "sigmoid" else "conv"


def build_resnet_gan(nz: int, num_classes: int, channels: int, image_size: tuple[int, int], ngf: int, ndf: int,
                     use_spectral_norm: bool = True) -> tuple[nn.Module, nn.Module]:
    return (ResNetGenerator(nz, num_classes, channels, image_size, ngf),
            ProjectionDiscriminator(num_classes, channels, image_size, ndf, use_spectral_norm))


def build_gan(arch: str, nz: int, num_classes: int, channels: int, image_size: tuple[int, int], ngf: int, ndf: int,
              use_spectral_norm: bool = True, hidden: int = 256, output: str = "sigmoid",
              mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> tuple[nn.Module, nn.Module]:
    """(generator, discriminator) by architecture name: "conv", "mlp", "resnet" or "auto"; `output` as in
    `PixelOutput` (mean/std: the data's, for "normalised")."""
    arch = resolve_gan_arch(arch, channels, image_size, output)
    if arch == "resnet":
        if output != "sigmoid":
            raise ValueError("the resnet generator has a sigmoid output only")
        return build_resnet_gan(nz, num_classes, channels, image_size, ngf, ndf, use_spectral_norm)
    if arch == "dfad":  # a data-free generator only: there is no discriminator for it
        return DFADGenerator(nz, num_classes, channels, image_size, ngf, output, mean, std), nn.Identity()
    if arch == "mlp":
        return (MLPGenerator(nz, num_classes, channels, image_size, hidden, output, mean, std),
                MLPDiscriminator(num_classes, channels, image_size, hidden, use_spectral_norm))
    return (ConditionalGenerator(nz, num_classes, channels, image_size, ngf, output, mean, std),
            ConditionalDiscriminator(num_classes, channels, image_size, ndf, use_spectral_norm))
