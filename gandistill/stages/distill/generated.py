"""Methods whose student learns from images it did not see in the data: `gan` (samples of the
trained cGAN only; Mirza & Osindero 2014), `gan_real` (real and generated, mixed per batch) and
`noise` (Gaussian images with the data's pixel statistics, the no-generator baseline). A cGAN
batch is augmented, optionally mined for the samples the student gets most wrong
(`distill.hard_fraction`) and optionally mixed up (`distill.mixup`)."""

from __future__ import annotations

from typing import Any

import torch

from gandistill import losses
from gandistill.adaptive import AdaptiveGenerator
from gandistill.augment import random_affine
from gandistill.bank import SampleBank
from gandistill.errors import ConfigError
from gandistill.runtime import Runtime, unwrap
from gandistill.stages.distill.addons import AddOns
from gandistill.stages.distill.context import (
    Context,
    StepFactory,
    StepFn,
    distill_step,
    forward_pair,
    optimise,
    sample_shard,
)


@torch.no_grad()
def fresh_generated(ctx: Context, n: int, generator: torch.nn.Module | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """This rank's shard of n fresh samples of the trained cGAN (or of `generator`), augmented,
    with the teacher's logits."""
    generator = generator if generator is not None else ctx.generator
    assert generator is not None
    x, y = sample_shard(ctx.runtime, generator, n,
                        "distill.batch_size × (1 + distill.hard_fraction) (candidates per step)")
    if ctx.params.distill.augment:  # before mining: the student is scored on exactly what it will learn from
        x = random_affine(x, world=ctx.runtime.world)
    with ctx.runtime.autocast():
        return x, y, ctx.teacher(x)


def candidate_split(ctx: Context, n: int) -> tuple[int, int]:
    """(from the trained cGAN, from the student-adaptive copy G') of a step's n + hard-mining candidates."""
    candidates = n + round(n * ctx.params.distill.hard_fraction)
    adaptive = candidates // 2 if ctx.adaptive is not None else 0
    return candidates - adaptive, adaptive


def open_bank(ctx: Context, n: int) -> None:
    """With distill.sample_reuse > 1 the step's cGAN candidates come from a pool of
    teacher-labelled samples that each serve that many steps on average (gandistill.bank); the
    pool is loop-tracked state, so checkpoints carry it. G' (adaptive generation) is always fresh."""
    dp = ctx.params.distill
    if dp.sample_reuse > 1:
        candidates, _ = candidate_split(ctx, n)
        ctx.extra_modules[BANK] = SampleBank(lambda k: fresh_generated(ctx, k), candidates, dp.sample_reuse,
                                             ctx.runtime)


@torch.no_grad()
def generated_batch(ctx: Context, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """n samples of the trained cGAN (half of the candidates from the student-adaptive copy G' with
    adaptive generation), augmented, optionally mined for hard ones; returns (x, y, teacher logits
    on x — or None when mixup changed x after they were computed)."""
    dp = ctx.params.distill
    n_hard = round(n * dp.hard_fraction)
    from_cgan, from_adaptive = candidate_split(ctx, n)
    bank = ctx.extra_modules.get(BANK)
    x, y, t = bank.candidates_shard() if isinstance(bank, SampleBank) else fresh_generated(ctx, from_cgan)
    if ctx.adaptive is not None:
        xa, ya, ta = fresh_generated(ctx, from_adaptive, ctx.adaptive.generator)
        x, y, t = torch.cat([x, xa]), torch.cat([y, ya]), torch.cat([t, ta])
    if n_hard:  # every rank scores its candidates; the choice is made over all of them
        keep = ctx.runtime.shard(_hardest(ctx, x, t, n, n_hard), "distill.batch_size")
        x, y, t = ctx.runtime.gather(x)[keep], ctx.runtime.gather(y)[keep], ctx.runtime.gather(t)[keep]
    if dp.mixup > 0:
        return mixup(x, dp.mixup, ctx.runtime), y, None
    return x, y, t


def _hardest(ctx: Context, x: torch.Tensor, t: torch.Tensor, n: int, n_hard: int) -> torch.Tensor:
    """Hard-sample mining on the GAN's manifold: of n + n_hard candidates keep the n_hard
    the student gets most wrong (per-sample T²·KL to the teacher) plus n − n_hard of the
    rest at random. Easy samples the student already matches teach it little; keeping a
    random share stops the batch from becoming all ambiguous, off-manifold samples.
    Returns indices into the global candidate batch (x, t: this rank's part of it)."""
    student = unwrap(ctx.student)
    was_training = student.training
    student.eval()  # scoring must not move BatchNorm statistics
    with ctx.runtime.autocast():
        gap = losses.kd_kl_per_sample(student(x), t, ctx.params.distill.temperature)
    student.train(was_training)
    return hard_sample_indices(ctx.runtime.gather(gap), n, n_hard)


def hard_sample_indices(gap: torch.Tensor, n: int, n_hard: int) -> torch.Tensor:
    """Indices of the n_hard largest gaps plus n − n_hard others drawn at random."""
    order = gap.float().argsort(descending=True)
    rest = order[n_hard:]
    return torch.cat([order[:n_hard], rest[torch.randperm(len(rest), device=rest.device)[: n - n_hard]]])


def mixup(x: torch.Tensor, probability: float, runtime: Runtime) -> torch.Tensor:
    """Blend a random subset of samples with a shuffled partner; the teacher labels the blend.
    x is this rank's shard: draws are made for the global batch and partners come from it."""
    n = x.shape[0] * runtime.world_size
    chosen = runtime.shard(torch.rand(n, device=x.device) < probability)
    one = torch.ones((), device=x.device)
    lam = runtime.shard(torch.distributions.Beta(one, one).sample((n,))).view(-1, 1, 1, 1)
    partner = runtime.gather(x)[runtime.shard(torch.randperm(n, device=x.device))]
    mixed = lam * x + (1 - lam) * partner
    return torch.where(chosen.view(-1, 1, 1, 1), mixed, x)


def _gan(ctx: Context, addons: AddOns) -> StepFn:
    # Soft labels only (labels=None → T²·KL): the conditioning label is not trusted as a hard target.
    dp = ctx.params.distill
    if dp.adaptive_every:
        ctx.adaptive = _adaptive_generator(ctx)
    open_bank(ctx, dp.batch_size)

    def step(i: int) -> dict[str, Any]:
        terms: dict[str, Any] = {}
        if ctx.adaptive is not None and i % dp.adaptive_every == 0:
            terms = ctx.adaptive.step(ctx.student, dp.batch_size, ctx.device)
        x, _, t = generated_batch(ctx, dp.batch_size)
        return terms | distill_step(ctx, addons, x, None, t)

    return step


def _adaptive_generator(ctx: Context) -> AdaptiveGenerator:
    """G' for distill.adaptive_every (gandistill/adaptive.py): a copy of the cGAN's generator held by
    its frozen discriminator; module + optimiser are loop state, so a resumed run continues it."""
    dp = ctx.params.distill
    if ctx.runtime.world_size > 1:
        raise ConfigError("distill.adaptive_every runs on one process only; set it to 0 with --nproc/accelerators")
    if ctx.generator_discriminator is None:
        raise ConfigError("distill.adaptive_every needs the cGAN's discriminator, which this generator was saved "
                          "without (retrain train_gan), or set distill.adaptive_every=0")
    assert ctx.generator is not None
    adaptive = AdaptiveGenerator(unwrap(ctx.generator), ctx.generator_discriminator.to(ctx.device), ctx.teacher,
                                 dp.adaptive_lr, dp.temperature, disc_weight=1.0)
    ctx.extra_modules["adaptive_generator"] = adaptive.generator
    ctx.extra_optimizers["adaptive_generator"] = adaptive.optimizer
    return adaptive


def _noise(ctx: Context, addons: AddOns) -> StepFn:
    return lambda i: distill_step(ctx, addons, ctx.noise_batch(ctx.params.distill.batch_size), None)


def _gan_real(ctx: Context, addons: AddOns) -> StepFn:
    dp = ctx.params.distill
    n_real = max(1, round(dp.batch_size * dp.real_fraction))
    open_bank(ctx, dp.batch_size - n_real)

    def step(i: int) -> dict[str, Any]:
        xr, yr = ctx.real_batch(i, n_real)
        xg, _, _ = generated_batch(ctx, dp.batch_size - n_real)
        x = torch.cat([xr, xg])
        with ctx.runtime.autocast():
            s, t, extra = forward_pair(ctx, addons, x)
            real_kd = losses.kd_objective(s[: len(xr)], t[: len(xr)], yr, dp.temperature, dp.alpha)
            gen_kd = losses.kd_kl(s[len(xr) :], t[len(xr) :], dp.temperature)
            share = len(xr) / len(x)
            loss = share * real_kd + (1 - share) * gen_kd + sum(extra.values(), torch.zeros((), device=ctx.device))
        optimise(ctx, loss)
        return {"loss": loss.detach(), "kd_real": real_kd.detach(), "kd_gen": gen_kd.detach()}

    return step


BANK = "sample_bank"  # the pool's name among the loop-tracked modules (its checkpoint key)

STEPS: dict[str, StepFactory] = {"gan": _gan, "gan_real": _gan_real, "noise": _noise}
