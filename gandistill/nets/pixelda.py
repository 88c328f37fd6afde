"""PixelDA's networks (Bousmalis et al. 2017, "Unsupervised Pixel-Level Domain Adaptation with
Generative Adversarial Networks"), sized for a 2-core CPU.

- `PixelDAGenerator` G(x_a, z): a noise vector z → FC + BatchNorm + ReLU → one image-sized
  channel, concatenated with the source image brought to the target's size and channels; then a
  stride-1 ResNet (conv, `n_blocks` residual blocks of two 3×3 convs with BatchNorm, 1×1 conv out)
  at the target's full resolution. No down-sampling: every output pixel is computed from its own
  neighbourhood of the source image, so the digit's shape stays where it was and only its
  rendering changes; the noise channel lets G paint a different background per sample instead
  of one. The paper: 6 blocks × 64 filters, tanh output; here `width` × `n_blocks` (defaults in
  config.TranslatorParams) and a sigmoid output in [0, 1] pixels.
- `NoisyDiscriminator` D(x): real target image or translated source? Gaussian noise on its input
  and dropout after every conv (the paper: σ 0.2, keep 0.9) keep D from winning outright on a
  small target set; strided 3×3 convs with BatchNorm and LeakyReLU down to ≤ 4×4, one logit.

The task classifier (a classifier by name, `gandistill.nets.build_classifier`) and the losses
live with the stage that trains them.
"""

from __future__ import annotations

import torch
from torch import nn

from gandistill.nets.translator import Shape, ShapeAdapter


class _Block(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(width, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class PixelDAGenerator(nn.Module):
    """G(x_a, z): source images (shape_a) → target-style images (shape_b)."""

    def __init__(self, shape_a: Shape, shape_b: Shape, width: int = 16, n_blocks: int = 2, nz: int = 10):
        super().__init__()
        self.shape_a, self.shape_b = tuple(shape_a), tuple(shape_b)
        self.width, self.n_blocks, self.nz = width, n_blocks, nz
        c_b, h_b, w_b = shape_b
        # Fixed: the source image at the target's size (antialiased when shrinking) and channels.
        self.adapt = ShapeAdapter(shape_a, shape_b)
        self.noise = nn.Sequential(nn.Linear(nz, h_b * w_b), nn.BatchNorm1d(h_b * w_b), nn.ReLU(inplace=True))
        self.net = nn.Sequential(
            nn.Conv2d(c_b + 1, width, 3, 1, 1), nn.ReLU(inplace=True),
            *[_Block(width) for _ in range(n_blocks)],
            nn.Conv2d(width, c_b, 1),
        )

    def sample_noise(self, n: int, device: torch.device | str, generator: torch.Generator | None = None
                     ) -> torch.Tensor:
        """z ~ U(−1, 1)^nz, as the paper draws it."""
        return torch.rand(n, self.nz, device=device, generator=generator) * 2 - 1

    def forward(self, x_a: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        if z is None:
            z = self.sample_noise(len(x_a), x_a.device)
        x = self.adapt(x_a)
        noise = self.noise(z).view(len(x), 1, *self.shape_b[1:])
        return torch.sigmoid(self.net(torch.cat([x * 2 - 1, noise], dim=1)))


class NoisyDiscriminator(nn.Module):
    """D(x) → one real/fake logit per image; input noise σ and dropout p only in training mode."""

    def __init__(self, shape: Shape, width: int = 32, noise_std: float = 0.2, dropout: float = 0.1):
        super().__init__()
        self.noise_std = noise_std
        channels, h, w = shape
        layers: list[nn.Module] = []
        c_in, c_out, first = channels, width, True
        while True:  # stride-2 convs down to ≤ 4 px per side, at least two
            layers += [nn.Conv2d(c_in, c_out, 3, 2, 1)]
            layers += [] if first else [nn.BatchNorm2d(c_out)]  # no BN on the first layer (DCGAN)
            layers += [nn.LeakyReLU(0.2, inplace=True), nn.Dropout(dropout)]
            h, w, c_in, first = (h + 1) // 2, (w + 1) // 2, c_out, False
            if max(h, w) <= 4 and len(layers) > 4:
                break
            c_out = min(c_out * 2, width * 4)
        self.features = nn.Sequential(*layers)
        self.logit = nn.Linear(c_in * h * w, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * 2 - 1
        if self.training and self.noise_std > 0:
            x = x + torch.randn_like(x) * self.noise_std
        return self.logit(self.features(x).flatten(1)).squeeze(1)
