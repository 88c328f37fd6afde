"""A BigGAN-style conditional ResNet generator and a projection ResNet discriminator, sized for a CPU.

Generator (Brock et al. 2019, "Large Scale GAN Training…", §3 and appendix B, scaled down):
z → linear → a (4·ngf)-channel map at a quarter of the resolution, then up-sampling residual
blocks whose batch norms are class-conditional through a *shared* class embedding: each
conditional BN's gain and bias are linear functions of [z, embed(y)] (BigGAN's "shared
embedding" with skip-z), so one small embedding serves every layer. Channels halve as the
resolution doubles, from 2·ngf, so the full-resolution convs stay narrow (ngf/2 channels: the
generator's forward dominates GAN-KD's distillation cost on a CPU; at ngf = ndf = 32 one G+D step
costs ~2× the conv pair's). Output: BN → ReLU → 3×3 conv → sigmoid, pixels in [0, 1] like every
gandistill generator.

Discriminator (Miyato & Koyama 2018, "cGANs with Projection Discriminator"; SNGAN's ResNet D,
Miyato et al. 2018): down-sampling residual blocks with spectral norm on every weight, global
sum pooling to φ(x), and D(x, y) = ψ(φ(x)) + ⟨embed(y), φ(x)⟩. A minibatch-stddev map before
the last block (Karras et al. 2018) lets D see a batch that lacks variety. φ(x) is also what
feature matching compares.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from gandistill.nets.layers import minibatch_stddev, sample_conditional


def up_blocks_for(image_size: tuple[int, int]) -> int:
    """Number of ×2 up-sampling blocks: two up to 32 px per side (7×7 → 28×28, 8×8 → 32×32),
    one more per doubling beyond, so the first map is at most 8 px per side."""
    side = max(image_size)
    return 2 if side <= 32 else math.ceil(math.log2(side / 8))


class SharedConditionalBatchNorm(nn.Module):
    """BatchNorm without affine parameters, then gain 1 + γ(c) and bias β(c), both linear in the
    conditioning vector c = [z, embed(y)] (BigGAN's conditional BN with a shared embedding)."""

    def __init__(self, channels: int, cond_dim: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Linear(cond_dim, channels, bias=False)
        self.bias = nn.Linear(cond_dim, channels, bias=False)
        nn.init.zeros_(self.gain.weight)  # starts as plain BN: gain 1, bias 0
        nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.bn(x) * (1 + self.gain(cond))[:, :, None, None] + self.bias(cond)[:, :, None, None]


class GeneratorBlock(nn.Module):
    """CBN → ReLU → ×2 transposed conv → CBN → ReLU → 3×3 conv, plus a ×2 nearest + 1×1 conv
    shortcut. A 4×4 stride-2 transposed conv up-samples and convolves in one op (nearest
    up-sampling + conv cost ~2× as much on CPU, see nets/gan.py)."""

    def __init__(self, cin: int, cout: int, cond_dim: int):
        super().__init__()
        self.bn1 = SharedConditionalBatchNorm(cin, cond_dim)
        self.up = nn.ConvTranspose2d(cin, cout, 4, 2, 1)
        self.bn2 = SharedConditionalBatchNorm(cout, cond_dim)
        self.conv = nn.Conv2d(cout, cout, 3, 1, 1)
        self.shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.up(F.relu(self.bn1(x, cond)))
        h = self.conv(F.relu(self.bn2(h, cond)))
        return h + self.shortcut(F.interpolate(x, scale_factor=2, mode="nearest"))


class ResNetGenerator(nn.Module):
    def __init__(self, nz: int, num_classes: int, out_channels: int, image_size: tuple[int, int],
                 ngf: int = 32, embed_dim: int = 32):
        super().__init__()
        self.nz, self.num_classes, self.image_size, self.ngf = nz, num_classes, image_size, ngf
        self.out_channels = out_channels
        n_up = up_blocks_for(image_size)
        self.base = tuple(max(2, math.ceil(s / 2**n_up)) for s in image_size)
        # Sized for a CPU: 2·ngf at the first map, halving per doubling (ngf 32: 64, 32, 16 channels).
        widths = [max(1, ngf * 2 ** (n_up - i) // 2) for i in range(n_up + 1)]
        self.embed = nn.Embedding(num_classes, embed_dim)  # the shared class embedding
        cond_dim = nz + embed_dim
        self.fc = nn.Linear(cond_dim, widths[0] * self.base[0] * self.base[1])
        self.blocks = nn.ModuleList(GeneratorBlock(a, b, cond_dim) for a, b in zip(widths, widths[1:], strict=False))
        self.out_bn = nn.BatchNorm2d(widths[-1])
        self.out = nn.Conv2d(widths[-1], out_channels, 3, 1, 1)
        self.first_width = widths[0]

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        cond = torch.cat([z, self.embed(y)], dim=1)
        h = self.fc(cond).view(-1, self.first_width, *self.base)
        for block in self.blocks:
            h = block(h, cond)
        img = torch.sigmoid(self.out(F.relu(self.out_bn(h))))
        if img.shape[-2:] != torch.Size(self.image_size):
            img = F.interpolate(img, size=self.image_size, mode="bilinear", align_corners=False)
        return img

    sample = sample_conditional


class DiscriminatorBlock(nn.Module):
    """(ReLU →) 3×3 conv → ReLU → 3×3 conv (→ 2×2 average pool), with a 1×1 conv (+ pool)
    shortcut; spectral norm on every conv. The first block skips the leading ReLU (SNGAN's
    "optimized" first block: it reads pixels)."""

    def __init__(self, cin: int, cout: int, downsample: bool, first: bool = False, sn=spectral_norm):
        super().__init__()
        self.conv1 = sn(nn.Conv2d(cin, cout, 3, 1, 1))
        self.conv2 = sn(nn.Conv2d(cout, cout, 3, 1, 1))
        self.shortcut = sn(nn.Conv2d(cin, cout, 1))
        self.downsample, self.first = downsample, first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(x if self.first else F.relu(x))
        h = self.conv2(F.relu(h))
        skip = self.shortcut(x)
        if self.downsample:
            h, skip = F.avg_pool2d(h, 2, ceil_mode=True), F.avg_pool2d(skip, 2, ceil_mode=True)
        return h + skip


class ProjectionDiscriminator(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, image_size: tuple[int, int], ndf: int = 32,
                 use_spectral_norm: bool = True):
        super().__init__()
        sn = spectral_norm if use_spectral_norm else (lambda m: m)
        n_down = up_blocks_for(image_size)
        widths = [max(1, ndf * 2 ** min(i, 1) // 2) for i in range(n_down)]  # ndf/2 at full size, ndf below
        blocks: list[nn.Module] = []
        cin = in_channels
        for i, cout in enumerate(widths):
            blocks.append(DiscriminatorBlock(cin, cout, downsample=True, first=i == 0, sn=sn))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        # +1 input channel: the minibatch-stddev map (diversity becomes visible to D).
        self.last = DiscriminatorBlock(cin + 1, cin, downsample=False, sn=sn)
        self.linear = sn(nn.Linear(cin, 1))
        self.embed = sn(nn.Embedding(num_classes, cin))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """φ(x): ReLU then global sum pooling of the last block (N×D)."""
        h = self.blocks(x * 2 - 1)
        h = self.last(torch.cat([h, minibatch_stddev(h)], dim=1))
        return F.relu(h).sum(dim=(2, 3))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (logit N, features N×D)."""
        phi = self.features(x)
        return self.linear(phi).squeeze(1) + (self.embed(y) * phi).sum(dim=1), phi
