"""Methods that train their own generator inside the stage, never on data: `data_free` (DFAD,
Fang et al. 2019, with DAFL's class-balance term) and `dafl` (Chen et al. 2019). The generator the
student learned from is saved next to it (export calibrates INT8 on its samples)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from gandistill import losses
from gandistill.nets import build_gan
from gandistill.priors import FeatureStatisticsPrior
from gandistill.runtime import fused
from gandistill.stages.distill.addons import AddOns
from gandistill.stages.distill.context import (
    Context,
    StepFactory,
    StepFn,
    build_schedule,
    forward_pair,
    optimise,
    sample_shard,
)


def _new_free_generator(ctx: Context) -> tuple[nn.Module, torch.optim.Optimizer, Any]:
    """A generator trained inside this stage, never on data, with DFAD's normalised output."""
    dp = ctx.params.distill
    meta = ctx.meta
    width = dp.generator_width
    generator, _ = build_gan(dp.generator_arch, dp.generator_nz, meta.num_classes, meta.channels,
                             (meta.height, meta.width), width, width, hidden=width, output="normalised",
                             mean=meta.mean, std=meta.std)
    generator = ctx.runtime.prepare(generator)
    opt_g = fused(torch.optim.Adam, generator.parameters(), lr=dp.generator_lr, betas=(dp.generator_beta1, 0.999))
    # Matched schedules: the generator's lr decays with the student's, or it out-runs a
    # student that can no longer follow and accuracy drifts down late in training.
    n_gen_steps = max(1, dp.steps // dp.student_steps_per_generator_step)
    sched_g = build_schedule(opt_g, dp.schedule, n_gen_steps, final_fraction=0.05)
    ctx.generator = generator
    ctx.extra_modules["generator"] = generator
    ctx.extra_optimizers["generator"] = opt_g
    ctx.extra_schedulers["generator"] = sched_g
    return generator, opt_g, sched_g


def _step_generator(optimizer: torch.optim.Optimizer, scheduler: Any, loss: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()


@torch.no_grad()
def _free_batch(ctx: Context, generator: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """A student batch for the data-free schedule: fresh generator samples (no augmentation —
    the generator is the only source of variety, as in DFAD/DAFL) with the teacher's logits.
    Data-parallel: this rank's shard of the global batch (z and labels drawn for all of it).
    (A replay pool of past batches and a momentum copy of the generator were measured and
    dropped: both lowered accuracy, bench/README.md.)"""
    x, _ = sample_shard(ctx.runtime, generator, ctx.params.distill.batch_size)
    with ctx.runtime.autocast():
        t = ctx.teacher(x).to(x.dtype)  # out of autocast's bf16
    return x, t


GeneratorLoss = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]
StudentLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _with_free_generator(ctx: Context, addons: AddOns, generator_loss: GeneratorLoss,
                         student_loss: StudentLoss) -> StepFn:
    """The data-free schedule shared by data_free and dafl: every
    `student_steps_per_generator_step` steps the in-stage generator takes one step on
    generator_loss(G(z, y), y); the student takes one step on student_loss(s, t) at every
    step, each on a fresh generated batch (as DFAD and DAFL do)."""
    dp = ctx.params.distill
    generator, opt_g, sched_g = _new_free_generator(ctx)

    def step(i: int) -> dict[str, Any]:
        terms: dict[str, Any] = {}
        if i % dp.student_steps_per_generator_step == 0:
            generator.train()
            ctx.student.eval()  # a BatchNorm student: the generator's probe must not move its statistics
            x, y = sample_shard(ctx.runtime, generator, dp.batch_size)
            with ctx.runtime.autocast():
                loss_g, g_terms = generator_loss(x, y)
            _step_generator(opt_g, sched_g, loss_g)
            ctx.student.train()
            terms |= {"loss_g": loss_g.detach(), **{k: v.detach() for k, v in g_terms.items()}}
        x, t = _free_batch(ctx, generator)
        with ctx.runtime.autocast():
            s, t, extra = forward_pair(ctx, addons, x, t)
            distill_loss = student_loss(s, t)
            loss = distill_loss + sum(extra.values(), torch.zeros((), device=ctx.device))
        optimise(ctx, loss)
        return terms | {"loss": loss.detach(), "distill_loss": distill_loss.detach()}

    return step


def _data_free(ctx: Context, addons: AddOns) -> StepFn:
    """DFAD (Fang et al. 2019): the generator maximises the teacher–student L1 logit gap, the
    student minimises it. Added: DAFL's information-entropy term γ·L_ie (class balance of the
    teacher's mean prediction) — without it the generator drifts onto a few classes and the
    student stays near 20–35% (bench/README.md) — and optional teacher CE on the conditioning
    label (`generator_guidance_weight`)."""
    dp = ctx.params.distill
    prior = FeatureStatisticsPrior(ctx.teacher) if dp.generator_feature_prior_weight else None

    def generator_loss(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        t, feature_prior = prior(x) if prior is not None else (ctx.teacher(x), None)
        discrepancy = losses.logit_l1(ctx.student(x), t)
        balance = losses.information_entropy(ctx.runtime.gather(t))  # class balance of the global batch
        loss = -discrepancy + dp.balance_weight * balance
        terms = {"g_discrepancy": discrepancy, "g_balance": balance}
        if dp.generator_guidance_weight:
            loss = loss + dp.generator_guidance_weight * losses.teacher_guidance(t, y)
        if dp.generator_tv_weight:
            terms["g_tv"] = losses.total_variation(x)
            loss = loss + dp.generator_tv_weight * terms["g_tv"]
        if feature_prior is not None:
            terms["g_feature_prior"] = feature_prior
            loss = loss + dp.generator_feature_prior_weight * feature_prior
        return loss, terms

    return _with_free_generator(ctx, addons, generator_loss, losses.logit_l1)


def _dafl(ctx: Context, addons: AddOns) -> StepFn:
    """DAFL (Chen et al. 2019): G is trained by the teacher alone with
    L_G = L_oh + β·L_a + γ·L_ie (eq. 5; β = 0.1, γ = 5 in the paper), the student by KD on
    G's samples; the two alternate."""
    dp = ctx.params.distill

    def generator_loss(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        t_logits, t_feats = ctx.teacher.forward_features(x)
        onehot, activation = losses.dafl_onehot(t_logits), losses.dafl_activation(t_feats[-1])
        balance = losses.information_entropy(ctx.runtime.gather(t_logits))  # class balance of the global batch
        loss = onehot + dp.dafl_activation_weight * activation + dp.balance_weight * balance
        return loss, {"g_onehot": onehot, "g_activation": activation, "g_balance": balance}

    return _with_free_generator(ctx, addons, generator_loss,
                                lambda s, t: losses.kd_kl(s, t, dp.temperature))


STEPS: dict[str, StepFactory] = {"data_free": _data_free, "dafl": _dafl}
