"""Image priors read from the teacher: what real data looks like inside it.

DeepInversion (Yin et al., CVPR 2020, eq. 4) observed that a trained network's BatchNorm layers
store the per-channel mean and variance of their inputs over the training data, and made the
statistics of a synthesised batch match them:

    R_feature(x̂) = Σ_l ‖μ_l(x̂) − E[μ_l(x) | X]‖₂ + ‖σ²_l(x̂) − E[σ²_l(x) | X]‖₂

(the running mean / variance of BN layer l). CMI, Fast-Datafree and NAYER use the same prior on
CIFAR. It needs no data at all — only a teacher with BatchNorm.

Where real training images are at hand (the conditional GAN's stage) the statistics are measured
on them instead — at the inputs of the teacher's BatchNorm layers, or at the outputs of its
convolutions for a teacher without BatchNorm (LeNet-5) — and, given labels, **per class**:

    R_class(x̂, y) = mean_c Σ_l ‖μ_lc(x̂_c) − μ_lc‖₂ + ‖σ²_lc(x̂_c) − σ²_lc‖₂     (x̂_c: samples conditioned on c)

Unlike teacher guidance (CE(teacher(G(z, y)), y), which rewards every sample of class c for
sitting at the teacher's most confident point and so collapses a class to one image), the
class-conditional prior asks the samples of class c to *spread* like the real images of class c
inside every layer of the teacher: it matches a distribution's first two moments, not a label.
"""

from __future__ import annotations

import torch
from torch import nn

from gandistill.errors import ConfigError


class FeatureStatisticsPrior:
    """R_feature (or R_class) of a generated batch, through forward hooks on the (frozen) teacher.

    `reference` ([0, 1] float images) and optional `reference_labels`: measure the statistics on
    real images, per class when labelled; without them the teacher's BatchNorm running statistics
    are the reference (data-free). Call it with images (and their conditioning labels for the
    class-conditional form); it returns (teacher logits, prior) — one teacher pass for both.
    """

    def __init__(self, teacher: nn.Module, reference: torch.Tensor | None = None,
                 reference_labels: torch.Tensor | None = None, num_classes: int | None = None,
                 batch_size: int = 500):
        self.teacher = teacher
        norms = [m for m in teacher.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self._seen: list[torch.Tensor] = []
        self._armed = False  # hooks record only inside this object's own teacher passes
        self.per_class = reference_labels is not None
        if reference is None:
            if not norms or any(m.running_mean is None or m.running_var is None for m in norms):
                raise ConfigError("the feature-statistics prior needs a teacher with BatchNorm layers when no real "
                                  "images are available (data-free); this teacher has none — set its weight to 0")
            self.source = "batchnorm"
            self.means = [m.running_mean.detach().clone()[None] for m in norms]  # type: ignore[union-attr]
            self.vars = [m.running_var.detach().clone()[None] for m in norms]  # type: ignore[union-attr]
            self._hooks = [m.register_forward_pre_hook(self._capture_input) for m in norms]
            return
        convs = [m for m in teacher.modules() if isinstance(m, nn.Conv2d)]
        if norms:
            self.source = "real_images_at_batchnorm"
            self._hooks = [m.register_forward_pre_hook(self._capture_input) for m in norms]
        elif convs:
            self.source = "real_images_at_convolutions"
            self._hooks = [m.register_forward_hook(self._capture_output) for m in convs]
        else:
            raise ConfigError("the feature-statistics prior needs a teacher with BatchNorm or convolution layers "
                              "(an imported TorchScript teacher exposes neither); set its weight to 0")
        labels = reference_labels if reference_labels is not None else torch.zeros(len(reference), dtype=torch.long)
        groups = num_classes if self.per_class and num_classes else int(labels.max()) + 1
        self.means, self.vars = self._measure(reference, labels.to(reference.device), groups, batch_size)

    def _capture_input(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        if self._armed:
            self._seen.append(inputs[0])

    def _capture_output(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if self._armed:
            self._seen.append(output)

    def _teacher_pass(self, images: torch.Tensor) -> torch.Tensor:
        self._seen, self._armed = [], True
        try:
            return self.teacher(images)
        finally:
            self._armed = False

    @staticmethod
    def _group_moments(h: torch.Tensor, labels: torch.Tensor, groups: int) -> tuple[torch.Tensor, torch.Tensor,
                                                                                   torch.Tensor]:
        """Per group (G×C): sums of per-sample channel means and of channel second moments, and counts."""
        flat = h.flatten(2)
        first, second = flat.mean(dim=2), flat.pow(2).mean(dim=2)  # N×C
        sums = torch.zeros(groups, h.shape[1], dtype=first.dtype, device=h.device).index_add(0, labels, first)
        squares = torch.zeros_like(sums).index_add(0, labels, second)
        counts = torch.zeros(groups, dtype=first.dtype, device=h.device).index_add(
            0, labels, torch.ones_like(labels, dtype=first.dtype))
        return sums, squares, counts

    @torch.no_grad()
    def _measure(self, images: torch.Tensor, labels: torch.Tensor, groups: int,
                 batch_size: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per group and channel: mean and variance of each hooked layer over `images`."""
        totals: list[list[torch.Tensor]] = []
        for start in range(0, len(images), batch_size):
            self._teacher_pass(images[start : start + batch_size])
            for i, h in enumerate(self._seen):
                moments = self._group_moments(h.double(), labels[start : start + batch_size], groups)
                if i == len(totals):
                    totals.append(list(moments))
                else:
                    totals[i] = [a + b for a, b in zip(totals[i], moments, strict=True)]
        self._seen = []
        means, variances = [], []
        for sums, squares, counts in totals:
            n = counts.clamp_min(1)[:, None]
            mean = sums / n
            means.append(mean.float())
            variances.append((squares / n - mean.pow(2)).clamp_min(0).float())
        return means, variances

    def __call__(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self._teacher_pass(images)
        if self.per_class:
            if labels is None:
                raise ValueError("a class-conditional feature prior needs the samples' conditioning labels")
            groups = self.means[0].shape[0]
        else:
            labels, groups = torch.zeros(len(images), dtype=torch.long, device=images.device), 1
        present = torch.bincount(labels, minlength=groups) > 0
        loss = images.new_zeros(())
        for h, mean, var in zip(self._seen, self.means, self.vars, strict=True):
            sums, squares, counts = self._group_moments(h.float(), labels, groups)
            n = counts.clamp_min(1)[:, None]
            m = sums / n
            v = squares / n - m.pow(2)
            distance = torch.linalg.vector_norm(m - mean, dim=1) + torch.linalg.vector_norm(v - var, dim=1)
            loss = loss + distance[present].mean()
        self._seen = []
        return logits, loss

    def remove(self) -> None:
        """Detach the hooks (the teacher is then as before)."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
