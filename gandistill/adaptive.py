"""Student-adaptive generation: the trained cGAN follows what the student has not learned yet.

DFAD (Fang et al. 2019) trains a generator from scratch to maximise the teacher–student
discrepancy; with nothing to hold it, it drifts to images that fool both networks without
looking like data (gandistill's data_free needs a smoothness prior for that reason). Here the
adversary starts from the cGAN trained on the data and is held on the data's manifold by that
cGAN's own frozen discriminator — and, where configured, by the teacher's feature statistics:

    L_G' = − T²·KL(p^T(x) ‖ p^S(x))  +  λ_D · (−D(x, y))  +  λ_F · R_feature(x),   x = G'(z, y)

G' is a copy of the cGAN's (EMA) generator fine-tuned with a small learning rate every
`every` student steps; the student reads a mix of G' samples and samples of the untouched cGAN
(so classes and modes G' moves away from stay in its diet, as in MAD's momentum generator).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from gandistill import losses


class AdaptiveGenerator:
    def __init__(self, generator: nn.Module, discriminator: nn.Module, teacher: nn.Module, lr: float,
                 temperature: float, disc_weight: float,
                 prior: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
                 prior_weight: float = 0.0):
        self.generator = copy.deepcopy(generator).eval()  # eval: BatchNorm keeps the cGAN's statistics
        for p in self.generator.parameters():
            p.requires_grad_(True)
        self.discriminator = discriminator.eval()
        for p in self.discriminator.parameters():
            p.requires_grad_(False)
        self.teacher, self.prior = teacher, prior
        self.temperature, self.disc_weight, self.prior_weight = temperature, disc_weight, prior_weight
        self.optimizer = torch.optim.Adam(self.generator.parameters(), lr=lr, betas=(0.5, 0.999))

    def step(self, student: nn.Module, n: int, device: torch.device) -> dict[str, torch.Tensor]:
        """One update of G' on n fresh samples against the current student (its weights untouched)."""
        g = self.generator
        labels = torch.randint(0, g.num_classes, (n,), device=device)
        x = g(torch.randn(n, g.nz, device=device), labels)
        if self.prior is not None and self.prior_weight > 0:
            t, feature_prior = self.prior(x)
        else:
            t, feature_prior = self.teacher(x), x.new_zeros(())
        was_training = student.training
        student.eval()  # probing must not move the student's BatchNorm statistics
        gap = losses.kd_kl(student(x), t, self.temperature)
        student.train(was_training)
        realness = self.discriminator(x, labels)[0].mean()
        loss = -gap - self.disc_weight * realness + self.prior_weight * feature_prior
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        student.zero_grad(set_to_none=True)  # the probe's gradients are not the student's update
        return {"adaptive_gap": gap.detach(), "adaptive_realness": realness.detach(),
                "adaptive_feature_prior": feature_prior.detach()}
