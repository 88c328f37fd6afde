"""Image classifiers by name, shaped by the data (channels, size, classes).

Every classifier takes raw pixels in [0, 1] (N×C×H×W) and normalises them with the train
split's statistics held as buffers — so the normalisation travels inside TorchScript and
ONNX exports and a deployed model takes raw images. `forward_features` also returns the
intermediate activations that feature / relation KD losses need.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gandistill.errors import ConfigError
from gandistill.nets.conv import Conv2d
from gandistill.nets.pool import max_pool2x2


class ArchitectureError(ConfigError, ValueError):
    """An architecture name or size that cannot fit the data (a ConfigError the CLI reports
    cleanly; also a ValueError, as build_classifier raised before)."""


class ImageClassifier(nn.Module):
    """Base: normalisation buffers + `features -> head` split."""

    def __init__(self, in_channels: int, num_classes: int, mean: Sequence[float] | None,
                 std: Sequence[float] | None):
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes
        mean_t = torch.tensor(list(mean) if mean is not None else [0.0] * in_channels)
        std_t = torch.tensor(list(std) if std is not None else [1.0] * in_channels)
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1))
        self.register_buffer("std", std_t.view(1, -1, 1, 1))

    # Subclasses define the architecture: `body` returns intermediate features (the last is
    # the penultimate vector, N×D) and `head` maps that vector to logits.
    body: Callable[[torch.Tensor], list[torch.Tensor]]
    head: Callable[[torch.Tensor], torch.Tensor]

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        feats = self.body((x - self.mean) / self.std)
        return self.head(feats[-1]), feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]


class LeNet5(ImageClassifier):
    """LeNet-5 (LeCun et al., 1998) with ReLU and max-pooling; `width` scales every layer.

    width=1: conv 6, 16 → fc 120, 84 (61,706 params at 28×28, pad 2 on conv1).
    width=0.5: conv 3, 8 → fc 60, 42 — the "LeNet-5-half" student of DAFL/DFAD (15,738).
    """

    def __init__(self, in_channels: int, image_size: tuple[int, int], num_classes: int,
                 width: float = 1.0, mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        super().__init__(in_channels, num_classes, mean, std)
        c1, c2, f1, f2 = (max(1, round(v * width)) for v in (6, 16, 120, 84))
        self.conv1 = Conv2d(in_channels, c1, 5, padding=2)  # reads images: see nets.conv
        self.conv2 = nn.Conv2d(c1, c2, 5)
        h, w = image_size
        h2, w2 = (h // 2 - 4) // 2, (w // 2 - 4) // 2
        if h2 < 1 or w2 < 1:
            raise ArchitectureError(f"LeNet-5 needs images of at least 12×12, got {h}×{w}; use a resnet "
                                    "(teacher.arch=auto and distill.student_arch=auto pick one for the data, "
                                    "or e.g. resnet8 / resnet8_w8) or set data.resize=12 or more")
        self.fc1 = nn.Linear(c2 * h2 * w2, f1)
        self.fc2 = nn.Linear(f1, f2)
        self.fc3 = nn.Linear(f2, num_classes)

    def body(self, x: torch.Tensor) -> list[torch.Tensor]:
        a1 = max_pool2x2(F.relu(self.conv1(x)))
        a2 = max_pool2x2(F.relu(self.conv2(a1)))
        h1 = F.relu(self.fc1(a2.flatten(1)))
        h2 = F.relu(self.fc2(h1))
        return [a2, h2]

    def head(self, penultimate: torch.Tensor) -> torch.Tensor:
        return self.fc3(penultimate)


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(ImageClassifier):
    """ResNet for small images (He et al., 2016, §4.2): depth = 6n+2, three stages of n blocks.

    resnet20 (n=3) is the usual teacher, resnet8 (n=1) the student; `width` is the first
    stage's channel count (16 in the paper), doubled at each later stage.
    """

    def __init__(self, in_channels: int, image_size: tuple[int, int], num_classes: int, depth: int = 20,
                 width: int = 16, mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        super().__init__(in_channels, num_classes, mean, std)
        if (depth - 2) % 6 != 0:
            raise ArchitectureError(f"ResNet depth must be 6n+2 (8, 14, 20, 32, …), got {depth}")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU())
        stages: list[nn.Module] = []
        cin = width
        for i, cout in enumerate((width, width * 2, width * 4)):
            blocks = [_BasicBlock(cin if j == 0 else cout, cout, 2 if (i > 0 and j == 0) else 1)
                      for j in range(n)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.fc = nn.Linear(cin, num_classes)

    def body(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = self.stem(x)
        for stage in self.stages:
            out = stage(out)
        return [out, F.adaptive_avg_pool2d(out, 1).flatten(1)]

    def head(self, penultimate: torch.Tensor) -> torch.Tensor:
        return self.fc(penultimate)


Builder = Callable[..., ImageClassifier]

CLASSIFIERS: dict[str, Builder] = {
    "lenet5": lambda c, size, k, **kw: LeNet5(c, size, k, width=1.0, **kw),
    "lenet5_half": lambda c, size, k, **kw: LeNet5(c, size, k, width=0.5, **kw),
    "resnet8": lambda c, size, k, **kw: CifarResNet(c, size, k, depth=8, **kw),
    "resnet14": lambda c, size, k, **kw: CifarResNet(c, size, k, depth=14, **kw),
    "resnet20": lambda c, size, k, **kw: CifarResNet(c, size, k, depth=20, **kw),
    "resnet32": lambda c, size, k, **kw: CifarResNet(c, size, k, depth=32, **kw),
}


# Any CIFAR ResNet by name: resnet<depth>[_w<width>], depth = 6n+2, width = first-stage channels
# (default 16): e.g. resnet20_w32 (a wider teacher), resnet8_w8 (a slimmer student).
RESNET_NAME = re.compile(r"^resnet(\d+)(?:_w(\d+))?$")


def build_classifier(name: str, in_channels: int, image_size: tuple[int, int], num_classes: int,
                     mean: Sequence[float] | None = None,
                     std: Sequence[float] | None = None) -> ImageClassifier:
    """Instantiate a classifier by registered name with shapes derived from the data."""
    if name in CLASSIFIERS:
        return CLASSIFIERS[name](in_channels, image_size, num_classes, mean=mean, std=std)
    match = RESNET_NAME.match(name)
    if match and 4 <= int(match.group(2) or 16) <= 512:
        return CifarResNet(in_channels, image_size, num_classes, depth=int(match.group(1)),
                           width=int(match.group(2) or 16), mean=mean, std=std)
    raise ArchitectureError(f"unknown architecture '{name}'; known: {', '.join(CLASSIFIERS)}, or "
                            "resnet<depth>[_w<width>] with depth 6n+2 and width 4..512 (e.g. resnet20_w32)")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
