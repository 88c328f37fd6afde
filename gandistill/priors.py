"""Image priors read from the teacher: what real data looks like inside it.

DeepInversion (Yin et al., CVPR 2020, eq. 4) observed that a trained network's BatchNorm layers
store the per-channel mean and variance of their inputs over the training data, and made the
statistics of a synthesised batch match them:

    R_feature(x̂) = Σ_l ‖μ_l(x̂) − E[μ_l(x) | X]‖₂ + ‖σ²_l(x̂) − E[σ²_l(x) | X]‖₂

(the running mean / variance of BN layer l). CMI, Fast-Datafree and NAYER use the same prior on
CIFAR. It needs no data at all — only a teacher with BatchNorm.

A teacher without BatchNorm (LeNet-5) stores nothing of the kind. Where real training images are
at hand (the conditional GAN's stage), the same statistics are measured once on them at the
output of each convolution instead: the prior then says "look like real data to every layer of
the teacher", not "look like class y to its last layer" — matching a distribution, not a label.
"""

from __future__ import annotations

import torch
from torch import nn

from gandistill.errors import ConfigError


class FeatureStatisticsPrior:
    """R_feature of a generated batch, through forward hooks on the (frozen) teacher.

    `reference`: real images ([0, 1] floats) to measure the statistics on when the teacher has no
    BatchNorm; ignored for a BatchNorm teacher (its running statistics are the reference).
    Call it with images; it returns (teacher logits, R_feature) — one teacher pass for both.
    """

    def __init__(self, teacher: nn.Module, reference: torch.Tensor | None = None, batch_size: int = 500):
        self.teacher = teacher
        norms = [m for m in teacher.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self._seen: list[torch.Tensor] = []
        self._armed = False  # hooks record only inside this object's own teacher passes
        if norms and all(m.running_mean is not None and m.running_var is not None for m in norms):
            self.source = "batchnorm"
            self.layers: list[nn.Module] = norms
            self.means = [m.running_mean.detach().clone() for m in norms]  # type: ignore[union-attr]
            self.vars = [m.running_var.detach().clone() for m in norms]  # type: ignore[union-attr]
            self._hooks = [m.register_forward_pre_hook(self._capture_input) for m in norms]
            return
        convs = [m for m in teacher.modules() if isinstance(m, nn.Conv2d)]
        if not convs:
            raise ConfigError("the feature-statistics prior needs a teacher with BatchNorm or convolution layers "
                              "(an imported TorchScript teacher exposes neither); set its weight to 0")
        if reference is None:
            raise ConfigError("the feature-statistics prior needs a teacher with BatchNorm layers when no real "
                              "images are available (data-free); this teacher has none — set its weight to 0")
        self.source = "real_images"
        self.layers = convs
        self._hooks = [m.register_forward_hook(self._capture_output) for m in convs]
        self.means, self.vars = self._measure(reference, batch_size)

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

    @torch.no_grad()
    def _measure(self, images: torch.Tensor, batch_size: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-channel mean and variance of each hooked layer over `images` (summed over batches)."""
        sums: list[torch.Tensor] = []
        squares: list[torch.Tensor] = []
        counts: list[int] = []
        for start in range(0, len(images), batch_size):
            self._teacher_pass(images[start : start + batch_size])
            for i, h in enumerate(self._seen):
                s, q, n = h.double().sum(dim=(0, 2, 3)), h.double().pow(2).sum(dim=(0, 2, 3)), h[:, 0].numel()
                if i == len(sums):
                    sums.append(s)
                    squares.append(q)
                    counts.append(n)
                else:
                    sums[i] += s
                    squares[i] += q
                    counts[i] += n
        self._seen = []
        means = [s / n for s, n in zip(sums, counts, strict=True)]
        variances = [(q / n - m.pow(2)).clamp_min(0) for q, n, m in zip(squares, counts, means, strict=True)]
        return [m.float() for m in means], [v.float() for v in variances]

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self._teacher_pass(images)
        loss = images.new_zeros(())
        for h, mean, var in zip(self._seen, self.means, self.vars, strict=True):
            h = h.float()
            loss = loss + torch.linalg.vector_norm(h.mean(dim=(0, 2, 3)) - mean) + \
                torch.linalg.vector_norm(h.var(dim=(0, 2, 3), unbiased=False) - var)
        self._seen = []
        return logits, loss

    def remove(self) -> None:
        """Detach the hooks (the teacher is then as before)."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

