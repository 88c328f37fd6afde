"""Methods whose student learns from real training images: `scratch` (CE on labels, the baseline;
also `target_supervised` on the target split), `kd` (Hinton et al. 2015) and `adversarial` (kd
plus a conditional output discriminator, Xu et al. 2017)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gandistill import losses
from gandistill.runtime import fused
from gandistill.stages.distill.addons import AddOns
from gandistill.stages.distill.context import Context, StepFactory, StepFn, distill_step, forward_pair, optimise


def _scratch(ctx: Context, addons: AddOns) -> StepFn:
    def step(i: int) -> dict[str, Any]:
        x, y = ctx.real_batch(i)
        with ctx.runtime.autocast():
            loss = F.cross_entropy(ctx.student(x), y)
        optimise(ctx, loss)
        return {"loss": loss.detach()}

    return step


def _kd(ctx: Context, addons: AddOns) -> StepFn:
    return lambda i: distill_step(ctx, addons, *ctx.real_batch(i))


def _adversarial(ctx: Context, addons: AddOns) -> StepFn:
    """Xu et al. 2017: a discriminator on (softmax outputs, one-hot label) tells teacher from
    student; the student minimises kd plus the non-saturating fool-D term."""
    dp = ctx.params.distill
    k = ctx.meta.num_classes
    disc = ctx.runtime.prepare(nn.Sequential(nn.Linear(2 * k, 128), nn.LeakyReLU(0.2), nn.Linear(128, 64),
                                             nn.LeakyReLU(0.2), nn.Linear(64, 1)))
    opt_d = fused(torch.optim.Adam, disc.parameters(), lr=dp.lr, betas=(0.5, 0.999))
    ctx.extra_modules["output_discriminator"] = disc
    ctx.extra_optimizers["output_discriminator"] = opt_d

    def score(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return disc(torch.cat([F.softmax(logits / dp.temperature, 1), F.one_hot(y, k).float()], 1)).squeeze(1)

    def step(i: int) -> dict[str, Any]:
        x, y = ctx.real_batch(i)
        with ctx.runtime.autocast():
            s, t, extra = forward_pair(ctx, addons, x)
            loss_d = losses.output_discriminator_loss(score(t, y), score(s.detach(), y))
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        with ctx.runtime.autocast():
            kd = losses.kd_objective(s, t, y, dp.temperature, dp.alpha)
            fool = losses.g_loss_bce(score(s, y))
            loss = kd + dp.adversarial_weight * fool + sum(extra.values(), torch.zeros((), device=ctx.device))
        optimise(ctx, loss)
        return {"loss": loss.detach(), "kd": kd.detach(), "loss_d": loss_d.detach(), "fool": fool.detach()}

    return step


STEPS: dict[str, StepFactory] = {"scratch": _scratch, "kd": _kd, "adversarial": _adversarial}
