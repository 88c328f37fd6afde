"""distill: train the small student from the teacher, by the method in `distill.method`.

Every method shares one code path — the same student, optimiser, schedule, training loop,
evaluation and add-on terms — and differs only in where a batch comes from and which loss
it gets (see `METHODS`):

| method      | inputs the student sees            | loss                                   |
|-------------|------------------------------------|----------------------------------------|
| scratch     | real (x, y)                        | CE(s, y)                               |
| kd          | real (x, y)                        | α·T²·KL(p^T‖p^S) + (1−α)·CE   (Hinton 2015) |
| gan         | G(z, y) of the trained cGAN only   | T²·KL(p^T‖p^S) on teacher soft labels  |
| gan_real    | real and G(z, y), mixed per batch  | kd on real part, soft KL on generated  |
| data_free   | G(z, y) trained against the student| L1(t, s); G maximises it (DFAD, Fang 2019) + class balance |
| dafl        | G(z, y) trained by the teacher     | DAFL generator loss (Chen 2019), KD student |
| adversarial | real (x, y)                        | kd + conditional output-GAN term (Xu 2017) |

Add-ons for any method: FitNets hint through a learned 1×1-conv regressor (`hint_weight`),
attention transfer on the last spatial map (`attention_weight`, Zagoruyko & Komodakis 2017) and
RKD distance / angle on penultimate features (`rkd_*_weight`).

Model selection: methods that may use real data select the step with the best accuracy on
the real validation split (never test). `gan` uses the validation split only for this
selection — the student never trains on a real image. `data_free` and `dafl` use no real
data during training and so cannot select: their result is the student at the end of the
schedule, and teacher–student agreement on generator samples is logged to watch training.
After training, every method's result is scored once on the real val and test splits
(`val_acc`, `test_acc` in result.json and MLflow); those numbers are reported, never fed
back into training or selection.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from gandistill import archs, losses, methods, qat, stage_params, transfer
from gandistill.adaptive import AdaptiveGenerator
from gandistill.augment import random_affine, random_colour
from gandistill.config import Params
from gandistill.data.dataset import (
    DatasetMeta,
    StepBatches,
    as_float,
    load_meta,
    load_split,
    noise_images,
    to_tensors,
)
from gandistill.distributed import World, gather
from gandistill.errors import ConfigError
from gandistill.evaluation import explain
from gandistill.evaluation.gan_quality import sample_balanced
from gandistill.loop import EMA, TrainingLoop, warmup_cosine
from gandistill.nets import build_classifier, build_gan, count_parameters
from gandistill.priors import FeatureStatisticsPrior
from gandistill.runtime import Runtime, seed_everything, unwrap
from gandistill.stages.common import (
    accuracy,
    checkpoint_dir,
    file_digest,
    fingerprint,
    follower_result,
    load_discriminator,
    load_frozen_teacher,
    load_generator,
    params_sections,
    predict_logits,
    save_classifier,
    save_free_generator,
    write_result,
)
from gandistill.tracking import NullTracker, Tracker
from gandistill.transfer import load_translator, method_data_dir

log = logging.getLogger(__name__)


@dataclass
class Context:
    """Everything a method's step needs; built once by `run`."""

    params: Params
    runtime: Runtime
    meta: DatasetMeta
    teacher: nn.Module
    student: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    real: tuple[torch.Tensor, torch.Tensor] | None
    batches: StepBatches | None
    generator: nn.Module | None  # has .sample(n, device) and .nz
    # Target-domain methods: `teacher` is the teacher signal for a target image (through the
    # translator for cyclegan, source-only for target_kd); the frozen translator and the source
    # train split feed cyclegan's translated-source share.
    translator: nn.Module | None = None
    source_teacher: nn.Module | None = None
    source: tuple[torch.Tensor, torch.Tensor] | None = None
    source_batches: StepBatches | None = None
    extra_modules: dict[str, nn.Module] = field(default_factory=dict)
    extra_optimizers: dict[str, torch.optim.Optimizer] = field(default_factory=dict)
    extra_schedulers: dict[str, Any] = field(default_factory=dict)
    student_ema: EMA | None = None
    adaptive: AdaptiveGenerator | None = None  # gan with distill.adaptive_every > 0
    generator_discriminator: nn.Module | None = None  # the trained cGAN's D (adaptive generation)

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    @property
    def scored_student(self) -> nn.Module:
        """The student that is validated, selected and returned: its EMA when enabled."""
        return self.student_ema.shadow if self.student_ema is not None else self.student

    def real_batch(self, step: int, size: int | None = None,
                   what: str = "distill.batch_size × distill.real_fraction (real samples per step)",
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's part of the step's real batch (the first `size` samples of it; `what`
        names that count when it does not split over the processes)."""
        assert self.real is not None and self.batches is not None
        idx = self.batches.global_indices(step)
        if size is not None:
            idx = idx[:size]
        idx = self.runtime.shard(idx, "distill.batch_size" if size is None else what)
        x = as_float(self.real[0][idx])
        if self.params.distill.augment:
            x = random_affine(x, world=self.runtime.world)
        return x, self.real[1][idx]

    def noise_batch(self, n: int) -> torch.Tensor:
        """This rank's part of n Gaussian images with the data's per-channel pixel mean and std,
        clipped to [0, 1] (drawn for all n)."""
        return self.runtime.shard(noise_images(self.meta, n, self.device), "distill.batch_size")

    @torch.no_grad()
    def generated_batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """n samples of the trained cGAN, augmented, optionally mined for hard ones; returns
        (x, y, teacher logits on x — or None when mixup changed x after they were computed)."""
        dp = self.params.distill
        n_hard = round(n * dp.hard_fraction)
        assert self.generator is not None
        what = "distill.batch_size × (1 + distill.hard_fraction) (candidates per step)"
        if self.adaptive is None:
            x, y = sample_shard(self.runtime, self.generator, n + n_hard, what)
        else:  # half from the student-adaptive copy G', half from the cGAN itself
            half = (n + n_hard) // 2
            xa, ya = sample_shard(self.runtime, self.adaptive.generator, half, what)
            xb, yb = sample_shard(self.runtime, self.generator, n + n_hard - half, what)
            x, y = torch.cat([xa, xb]), torch.cat([ya, yb])
        if dp.augment:  # before mining: the student is scored on exactly what it will learn from
            x = random_affine(x, world=self.runtime.world)
        if dp.colour_augment:  # the teacher labels the recoloured sample: the student's support widens
            x = random_colour(x, world=self.runtime.world)
        with self.runtime.autocast():
            t = self.teacher(x)
        if n_hard:  # every rank scores its candidates; the choice is made over all of them
            keep = self.runtime.shard(self._hardest(x, t, n, n_hard), "distill.batch_size")
            x, y, t = self.runtime.gather(x)[keep], self.runtime.gather(y)[keep], self.runtime.gather(t)[keep]
        if dp.mixup > 0:
            return _mixup(x, dp.mixup, self.runtime), y, None
        return x, y, t

    def _hardest(self, x: torch.Tensor, t: torch.Tensor, n: int, n_hard: int) -> torch.Tensor:
        """Hard-sample mining on the GAN's manifold: of n + n_hard candidates keep the n_hard
        the student gets most wrong (per-sample T²·KL to the teacher) plus n − n_hard of the
        rest at random. Easy samples the student already matches teach it little; keeping a
        random share stops the batch from becoming all ambiguous, off-manifold samples.
        Returns indices into the global candidate batch (x, t: this rank's part of it)."""
        student = unwrap(self.student)
        was_training = student.training
        student.eval()  # scoring must not move BatchNorm statistics
        with self.runtime.autocast():
            gap = losses.kd_kl_per_sample(student(x), t, self.params.distill.temperature)
        student.train(was_training)
        return hard_sample_indices(self.runtime.gather(gap), n, n_hard)


def sample_shard(runtime: Runtime, generator: nn.Module, n: int,
                 what: str = "distill.batch_size") -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's part of n generated samples. Labels and z are drawn for all n (the RNG
    every rank shares, in the order `ConditionalGenerator.sample` draws them); images are
    generated for the shard only, through `generator`'s forward — so an in-stage generator
    wrapped in DDP gets its gradients averaged."""
    inner = unwrap(generator)
    labels = torch.randint(0, inner.num_classes, (n,), device=runtime.device)
    z = torch.randn(n, inner.nz, device=runtime.device)
    labels, z = runtime.shard(labels, what), runtime.shard(z, what)
    return generator(z, labels), labels


def hard_sample_indices(gap: torch.Tensor, n: int, n_hard: int) -> torch.Tensor:
    """Indices of the n_hard largest gaps plus n − n_hard others drawn at random."""
    order = gap.float().argsort(descending=True)
    rest = order[n_hard:]
    return torch.cat([order[:n_hard], rest[torch.randperm(len(rest), device=rest.device)[: n - n_hard]]])


def _mixup(x: torch.Tensor, probability: float, runtime: Runtime) -> torch.Tensor:
    """Blend a random subset of samples with a shuffled partner; the teacher labels the blend.
    x is this rank's shard: draws are made for the global batch and partners come from it."""
    n = x.shape[0] * runtime.world_size
    chosen = runtime.shard(torch.rand(n, device=x.device) < probability)
    one = torch.ones((), device=x.device)
    lam = runtime.shard(torch.distributions.Beta(one, one).sample((n,))).view(-1, 1, 1, 1)
    partner = runtime.gather(x)[runtime.shard(torch.randperm(n, device=x.device))]
    mixed = lam * x + (1 - lam) * partner
    return torch.where(chosen.view(-1, 1, 1, 1), mixed, x)


# -- add-on terms --------------------------------------------------------------------------

class AddOns(nn.Module):
    """FitNets hint regressor, attention transfer and RKD terms, applied to (student, teacher)
    feature lists (features[0]: the last spatial map; features[-1]: the penultimate vector)."""

    def __init__(self, params: Params, student: nn.Module, teacher: nn.Module, meta: DatasetMeta,
                 world: World | None = None):
        super().__init__()
        dp = params.distill
        self.world = world or World()
        self.hint_weight, self.rkd_d, self.rkd_a = dp.hint_weight, dp.rkd_distance_weight, dp.rkd_angle_weight
        self.attention_weight = dp.attention_weight
        self.regressor: nn.Module | None = None
        needs_features = [k for k, v in (("distill.hint_weight", dp.hint_weight),
                                         ("distill.attention_weight", dp.attention_weight),
                                         ("distill.rkd_distance_weight", dp.rkd_distance_weight),
                                         ("distill.rkd_angle_weight", dp.rkd_angle_weight)) if v > 0]
        if methods.get(dp.method).needs_teacher_features:
            needs_features.append(f"distill.method={dp.method}")
        if needs_features and not hasattr(teacher, "forward_features"):
            raise ConfigError(f"{', '.join(needs_features)} need(s) teacher features, but this teacher (an imported "
                              "TorchScript model) provides logits only — turn those settings off")
        if self.hint_weight > 0:
            probe = torch.zeros(2, *meta.input_shape, device=next(student.parameters()).device)
            with torch.no_grad():
                s_feat = student.forward_features(probe)[1][0]
                t_feat = teacher.forward_features(probe)[1][0]
            if s_feat.shape[2:] != t_feat.shape[2:]:
                raise ConfigError(f"distill.hint_weight: student hint map {tuple(s_feat.shape[1:])} and teacher "
                                  f"map {tuple(t_feat.shape[1:])} differ in spatial size; pick a matching pair")
            self.regressor = nn.Conv2d(s_feat.shape[1], t_feat.shape[1], 1)

    @property
    def active(self) -> bool:
        return self.hint_weight > 0 or self.attention_weight > 0 or self.rkd_d > 0 or self.rkd_a > 0

    def forward(self, s_feats: list[torch.Tensor], t_feats: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        terms: dict[str, torch.Tensor] = {}
        if self.regressor is not None:
            terms["hint"] = self.hint_weight * losses.fitnet_hint(self.regressor(s_feats[0]), t_feats[0].detach())
        if self.attention_weight > 0:
            terms["attention"] = self.attention_weight * losses.attention_transfer(s_feats[0], t_feats[0].detach())
        if self.rkd_d > 0 or self.rkd_a > 0:  # relations between all samples of the global batch
            s_emb, t_emb = gather(s_feats[-1], self.world), gather(t_feats[-1], self.world)
        if self.rkd_d > 0:
            terms["rkd_distance"] = self.rkd_d * losses.rkd_distance(s_emb, t_emb)
        if self.rkd_a > 0:
            terms["rkd_angle"] = self.rkd_a * losses.rkd_angle(s_emb, t_emb)
        return terms


def _forward_pair(ctx: Context, addons: AddOns, x: torch.Tensor,
                  teacher_logits: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Student logits (with grad), teacher logits (no grad; reused when already computed for
    x), and add-on loss terms. The student's features come through its (DDP) forward, so the
    add-ons' gradients are averaged too."""
    if unwrap(addons).active:
        s_logits, s_feats = ctx.runtime.forward_features(ctx.student, x)
        with torch.no_grad():
            t_logits, t_feats = ctx.teacher.forward_features(x)
        return s_logits, t_logits, addons(s_feats, t_feats)
    if teacher_logits is None:
        with torch.no_grad():
            teacher_logits = ctx.teacher(x)
    return ctx.student(x), teacher_logits, {}


def _optimise(ctx: Context, loss: torch.Tensor) -> None:
    ctx.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    ctx.optimizer.step()
    ctx.scheduler.step()
    if ctx.student_ema is not None:
        ctx.student_ema.update(ctx.student)


def build_schedule(optimizer: torch.optim.Optimizer, kind: str, steps: int, warmup_steps: int = 0,
                   final_fraction: float = 0.0) -> LambdaLR:
    """cosine: linear warm-up then cosine decay to `final_fraction`; constant: no schedule."""
    if kind == "constant":
        return LambdaLR(optimizer, lambda step: 1.0)
    return warmup_cosine(optimizer, steps, warmup_steps=warmup_steps, final_fraction=final_fraction)


def build_student_optimizer(dp: Any, parameters: list[nn.Parameter]) -> torch.optim.Optimizer:
    if dp.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=dp.lr, momentum=0.9, weight_decay=dp.weight_decay)
    return torch.optim.AdamW(parameters, lr=dp.lr, weight_decay=dp.weight_decay)


# -- methods -------------------------------------------------------------------------------

StepFactory = Callable[[Context, AddOns], Callable[[int], dict[str, Any]]]


def _scratch(ctx: Context, addons: AddOns) -> Callable[[int], dict[str, Any]]:
    def step(i: int) -> dict[str, Any]:
        x, y = ctx.real_batch(i)
        with ctx.runtime.autocast():
            loss = F.cross_entropy(ctx.student(x), y)
        _optimise(ctx, loss)
        return {"loss": loss.detach()}

    return step


def _distill_step(ctx: Context, addons: AddOns, x: torch.Tensor, labels: torch.Tensor | None,
                  teacher_logits: torch.Tensor | None = None) -> dict[str, Any]:
    """One student update on x: Hinton KD against the teacher (with CE on labels when given)."""
    dp = ctx.params.distill
    with ctx.runtime.autocast():
        s, t, extra = _forward_pair(ctx, addons, x, teacher_logits)
        kd = losses.kd_objective(s, t, labels, dp.temperature, dp.alpha)
        loss = kd + sum(extra.values(), torch.zeros((), device=ctx.device))
    _optimise(ctx, loss)
    return {"loss": loss.detach(), "kd": kd.detach(), **{k: v.detach() for k, v in extra.items()}}


def _kd(ctx: Context, addons: AddOns) -> Callable[[int], dict[str, Any]]:
    return lambda i: _distill_step(ctx, addons, *ctx.real_batch(i))


def _gan(ctx: Context, addons: AddOns) -> Callable[[int], dict[str, Any]]:
    # Soft labels only (labels=None → T²·KL): the conditioning label is not trusted as a hard target.
    dp = ctx.params.distill
    if dp.adaptive_every:
        ctx.adaptive = _adaptive_generator(ctx)

    def step(i: int) -> dict[str, Any]:
        terms: dict[str, Any] = {}
        if ctx.adaptive is not None and i % dp.adaptive_every == 0:
            terms = ctx.adaptive.step(ctx.student, dp.batch_size, ctx.device)
        x, y, t = ctx.generated_batch(dp.batch_size)
        if dp.filter_confidence > 0 and t is not None:
            keep = _teacher_filter(t, y, dp.filter_confidence)
            terms["filtered_out"] = 1.0 - keep.float().mean()
            if keep.sum() >= 2:
                x, t = x[keep], t[keep]
        return terms | _distill_step(ctx, addons, x, None, t)

    return step


def _teacher_filter(teacher_logits: torch.Tensor, labels: torch.Tensor, min_confidence: float) -> torch.Tensor:
    """cGAN-KD's filter (Ding et al. 2021): keep a generated sample only when the teacher labels it
    as its conditioning class with at least `min_confidence`."""
    confidence, label = F.softmax(teacher_logits.float(), dim=1).max(dim=1)
    return (label == labels) & (confidence >= min_confidence)


def _adaptive_generator(ctx: Context) -> AdaptiveGenerator:
    dp = ctx.params.distill
    if ctx.runtime.world_size > 1:
        raise ConfigError("distill.adaptive_every runs on one process only; set it to 0 with --nproc/accelerators")
    disc = ctx.generator_discriminator
    if disc is None:
        raise ConfigError("distill.adaptive_every needs the cGAN's discriminator, which this generator was saved "
                          "without (retrain train_gan), or set distill.adaptive_every=0")
    adaptive = AdaptiveGenerator(unwrap(ctx.generator), disc.to(ctx.device), ctx.teacher, dp.adaptive_lr,
                                 dp.temperature, dp.adaptive_disc_weight)
    ctx.extra_modules["adaptive_generator"] = adaptive.generator
    ctx.extra_optimizers["adaptive_generator"] = adaptive.optimizer
    return adaptive


def _noise(ctx: Context, addons: AddOns) -> Callable[[int], dict[str, Any]]:
    return lambda i: _distill_step(ctx, addons, ctx.noise_batch(ctx.params.distill.batch_size), None)


def _gan_real(ctx: Context, addons: AddOns) -> Callable[[int], dict[str, Any]]:
    dp = ctx.params.distill
    n_real = max(1, round(dp.batch_size * dp.real_fraction))

    def step(i: int) -> dict[str, Any]:
        xr, yr = ctx.real_batch(i, n_real)
        xg, _, _ = ctx.generated_batch(dp.batch_size - n_real)
        x = torch.cat([xr, xg])
        with ctx.runtime.autocast():
            s, t, extra = _forward_pair(ctx, addons, x)
            real_kd = losses.kd_objective(s[: len(xr)], t[: len(xr)], yr, dp.temperature, dp.alpha)
            gen_kd = losses.kd_kl(s[len(xr) :], t[len(xr) :], dp.temperature)
            share = len(xr) / len(x)
            loss = share * real_kd + (1 - share) * gen_kd + sum(extra.values(), torch.zeros((), device=ctx.device))
        _optimise(ctx, loss)
        return {"loss": loss.detach(), "kd_real": real_kd.detach(), "kd_gen": gen_kd.detach()}

    return step


def _adversarial(ctx: Context, addons: AddOns) -> Callable[[int], dict[str, Any]]:
    """Xu et al. 2017: a discriminator on (softmax outputs, one-hot label) tells teacher from
    student; the student minimises kd plus the non-saturating fool-D term."""
    dp = ctx.params.distill
    k = ctx.meta.num_classes
    disc = ctx.runtime.prepare(nn.Sequential(nn.Linear(2 * k, 128), nn.LeakyReLU(0.2), nn.Linear(128, 64),
                                             nn.LeakyReLU(0.2), nn.Linear(64, 1)))
    opt_d = torch.optim.Adam(disc.parameters(), lr=dp.lr, betas=(0.5, 0.999))
    ctx.extra_modules["output_discriminator"] = disc
    ctx.extra_optimizers["output_discriminator"] = opt_d

    def score(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return disc(torch.cat([F.softmax(logits / dp.temperature, 1), F.one_hot(y, k).float()], 1)).squeeze(1)

    def step(i: int) -> dict[str, Any]:
        x, y = ctx.real_batch(i)
        with ctx.runtime.autocast():
            s, t, extra = _forward_pair(ctx, addons, x)
            loss_d = losses.output_discriminator_loss(score(t, y), score(s.detach(), y))
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        with ctx.runtime.autocast():
            kd = losses.kd_objective(s, t, y, dp.temperature, dp.alpha)
            fool = losses.g_loss_bce(score(s, y))
            loss = kd + dp.adversarial_weight * fool + sum(extra.values(), torch.zeros((), device=ctx.device))
        _optimise(ctx, loss)
        return {"loss": loss.detach(), "kd": kd.detach(), "loss_d": loss_d.detach(), "fool": fool.detach()}

    return step


def _new_free_generator(ctx: Context) -> tuple[nn.Module, torch.optim.Optimizer, Any]:
    """A generator trained inside this stage, never on data, with DFAD's normalised output."""
    dp = ctx.params.distill
    meta = ctx.meta
    width = dp.generator_width
    generator, _ = build_gan(dp.generator_arch, dp.generator_nz, meta.num_classes, meta.channels,
                             (meta.height, meta.width), width, width, hidden=width, output="normalised",
                             mean=meta.mean, std=meta.std)
    generator = ctx.runtime.prepare(generator)
    opt_g = torch.optim.Adam(generator.parameters(), lr=dp.generator_lr, betas=(dp.generator_beta1, 0.999))
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
                         student_loss: StudentLoss) -> Callable[[int], dict[str, Any]]:
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
            s, t, extra = _forward_pair(ctx, addons, x, t)
            distill_loss = student_loss(s, t)
            loss = distill_loss + sum(extra.values(), torch.zeros((), device=ctx.device))
        _optimise(ctx, loss)
        return terms | {"loss": loss.detach(), "distill_loss": distill_loss.detach()}

    return step


def _data_free(ctx: Context, addons: AddOns) -> Callable[[int], dict[str, Any]]:
    """DFAD (Fang et al. 2019): the generator maximises the teacher–student L1 logit gap, the
    student minimises it. Added: DAFL's information-entropy term γ·L_ie (class balance of the
    teacher's mean prediction) — without it the generator drifts onto a few classes and the
    student stays near 20–35% (bench/README.md) — and optional teacher CE on the conditioning
    label (`generator_guidance_weight`)."""
    dp = ctx.params.distill

    prior = FeatureStatisticsPrior(ctx.teacher) if dp.generator_feature_prior_weight else None

    def generator_loss(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if prior is not None:
            t, feature_prior = prior(x)
        else:
            t = ctx.teacher(x)
        discrepancy = losses.logit_l1(ctx.student(x), t)
        balance = losses.information_entropy(ctx.runtime.gather(t))  # class balance of the global batch
        loss = -discrepancy + dp.balance_weight * balance
        terms = {"g_discrepancy": discrepancy, "g_balance": balance}
        if dp.generator_guidance_weight:
            loss = loss + dp.generator_guidance_weight * losses.teacher_guidance(t, y)
        if dp.generator_tv_weight:
            terms["g_tv"] = losses.total_variation(x)
            loss = loss + dp.generator_tv_weight * terms["g_tv"]
        if prior is not None:
            terms["g_feature_prior"] = feature_prior
            loss = loss + dp.generator_feature_prior_weight * feature_prior
        return loss, terms

    return _with_free_generator(ctx, addons, generator_loss, losses.logit_l1)


def _dafl(ctx: Context, addons: AddOns) -> Callable[[int], dict[str, Any]]:
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


def _target_kd(ctx: Context, addons: AddOns) -> Callable[[int], dict[str, Any]]:
    """Plain KD on unlabelled target images: ctx.teacher is the source-only teacher (it reads the
    target image converted to its input shape). With distill.colour_augment the student reads a
    colour-augmented copy of the image the teacher labelled."""
    def step(i: int) -> dict[str, Any]:
        x = ctx.real_batch(i)[0]
        if not ctx.params.distill.colour_augment:
            return _distill_step(ctx, addons, x, None)
        with torch.no_grad():
            t = ctx.teacher(x)
        return _distill_step(ctx, addons, random_colour(x, world=ctx.runtime.world), None, t)

    return step


def _cyclegan(ctx: Context, addons: AddOns) -> Callable[[int], dict[str, Any]]:
    """Cross-domain transfer through the CycleGAN: each batch holds target images x_b, softly
    labelled by the teacher on G_BA(x_b) (ctx.teacher), and — a `distill.source_fraction` share —
    source images translated to the target domain, G_AB(x_a), labelled by the teacher on x_a
    itself (pixel-level adaptation as in CyCADA). Loss T²·KL on both; no target label anywhere.
    With distill.colour_augment the student reads colour-augmented copies of both shares.
    Data-parallel: each rank takes its shard of both shares (the weights below are per-rank
    counts, in the same ratio as the global ones)."""
    dp = ctx.params.distill
    n_source = round(dp.batch_size * dp.source_fraction)
    n_target = dp.batch_size - n_source

    def step(i: int) -> dict[str, Any]:
        x_b, _ = ctx.real_batch(i, n_target, "distill.batch_size × (1 − distill.source_fraction) "
                                             "(target samples per step)")
        with torch.no_grad():
            t_b = ctx.teacher(x_b)
            parts, targets = [x_b], [t_b]
            if n_source:
                assert ctx.source is not None and ctx.source_batches is not None and ctx.translator is not None
                idx = ctx.runtime.shard(ctx.source_batches.global_indices(i)[:n_source],
                                        "distill.batch_size × distill.source_fraction (source samples per step)")
                x_a = as_float(ctx.source[0][idx])
                if dp.augment:
                    x_a = random_affine(x_a, world=ctx.runtime.world)
                parts.append(ctx.translator.g_ab(x_a))
                targets.append(ctx.source_teacher(x_a))  # type: ignore[misc]
            if dp.colour_augment:  # the student's view only: each share is a shard of its global batch
                parts = [random_colour(p, world=ctx.runtime.world) for p in parts]
        x, t = torch.cat(parts), torch.cat(targets)
        local_target = len(x_b)
        with ctx.runtime.autocast():
            s = ctx.student(x)
            kd_target = losses.kd_kl(s[:local_target], t[:local_target], dp.temperature)
            loss = kd_target
            terms = {"kd_target": kd_target.detach()}
            if n_source:
                kd_source = losses.kd_kl(s[local_target:], t[local_target:], dp.temperature)
                loss = (local_target * kd_target + (len(x) - local_target) * kd_source) / len(x)
                terms["kd_translated_source"] = kd_source.detach()
        _optimise(ctx, loss)
        return terms | {"loss": loss.detach()}

    return step


# The math of each method; what a method needs and promises is its record in gandistill.methods.
STEPS: dict[str, StepFactory] = {
    "scratch": _scratch,
    "kd": _kd,
    "gan": _gan,
    "gan_real": _gan_real,
    "data_free": _data_free,
    "dafl": _dafl,
    "noise": _noise,
    "adversarial": _adversarial,
    "cyclegan": _cyclegan,
    "target_kd": _target_kd,
    "target_supervised": _scratch,  # CE on the labelled target split: the upper bound
}


def macro_agreement(student_pred: torch.Tensor, teacher_pred: torch.Tensor, num_classes: int) -> float:
    """Teacher–student agreement averaged over the teacher's classes, absent classes counting 0:
    a sample bank that collapsed onto a few classes cannot score high by agreeing on those."""
    per_class = [(student_pred[teacher_pred == k] == k).float().mean() if (teacher_pred == k).any()
                 else torch.zeros((), device=student_pred.device) for k in range(num_classes)]
    return float(torch.stack(per_class).mean())


class AgreementWatch:
    """Teacher–student agreement at each evaluation, overall and per teacher class, on the real
    validation images and — for a student of the trained cGAN — on a fixed bank of its samples:
    recorded in the history for the report's "how the knowledge moved" (never selected on; for
    data-free methods the real images are only looked at, as their final scoring does)."""

    BANK = 1024
    BANK_SEED_OFFSET = 3571

    def __init__(self, runtime: Runtime, teacher: nn.Module, student: nn.Module, data_dir: Path,
                 generator: nn.Module | None, num_classes: int, seed: int):
        self.runtime, self.student, self.num_classes = runtime, student, num_classes
        device = runtime.device
        self.val_x = torch.from_numpy(load_split(data_dir, "val").x).to(device)
        self.val_teacher = predict_logits(teacher, self.val_x, device=device).argmax(1)
        self.bank: torch.Tensor | None = None
        if generator is not None:
            self.bank, _ = sample_balanced(generator, self.BANK, num_classes, seed=seed + self.BANK_SEED_OFFSET,
                                           device=device)
            self.bank_teacher = teacher(self.bank).argmax(1).cpu()

    def __call__(self) -> dict[str, Any]:
        rt = self.runtime
        val = rt.gather(predict_logits(self.student, rt.eval_slice(self.val_x), device=rt.device),
                        total=len(self.val_x)).argmax(1)
        overall, per_class = explain.agreement_by_class(val.cpu(), self.val_teacher.cpu(), self.num_classes)
        out: dict[str, Any] = {"val_agreement": overall, "val_agreement_per_class": per_class}
        if self.bank is not None:
            bank = rt.gather(self.student(rt.eval_slice(self.bank)), total=len(self.bank)).argmax(1)
            out["generated_agreement"], out["generated_agreement_per_class"] = explain.agreement_by_class(
                bank.cpu(), self.bank_teacher, self.num_classes)
        return out

    def wrap(self, eval_fn: Callable[[int], dict[str, float]]) -> Callable[[int], dict[str, Any]]:
        # the method's own metrics win: a target method's val_agreement is its selection key
        return lambda step: self() | eval_fn(step)


def real_images_seen(method: str, steps: int, batch_size: int, real_fraction: float, n_train: int) -> int:
    """How many distinct real training images the student's updates could have touched."""
    share = methods.get(method).real_images
    if share == "none":
        return 0
    per_step = batch_size if share == "all" else max(1, round(batch_size * real_fraction))
    return min(n_train, steps * per_step)


def _transfer_parts(params: Params, method: methods.Method, teacher: nn.Module, source_dir: Path,
                    target_meta: DatasetMeta, translator_dir: str | Path | None,
                    device: torch.device) -> dict[str, Any]:
    """For a target-domain method: the teacher signal on target images (through the translator or
    source-only) and what cyclegan's translated-source share needs; {} for source-domain methods."""
    if method.domain != "target":
        return {}
    if method.needs_target_labels:
        return {"teacher": teacher}  # the supervised upper bound learns from labels; the teacher only reports
    if translator_dir is None:
        return {"teacher": transfer.source_only(teacher, load_meta(source_dir), target_meta).to(device)}
    translator = load_translator(translator_dir, device)
    parts: dict[str, Any] = {"teacher": transfer.through_translator(teacher, translator), "translator": translator,
                             "source_teacher": teacher}
    if params.distill.source_fraction > 0:
        source = to_tensors(load_split(source_dir, "train"), device)
        parts |= {"source": source,
                  "source_batches": StepBatches(len(source[1]), params.distill.batch_size, params.seed + 1)}
    return parts


def run(params: Params, data_dir: str | Path, teacher_dir: str | Path, generator_dir: str | Path | None,
        out_dir: str | Path, tracker: Tracker | None = None,
        observer: Callable[[int, nn.Module], dict[str, float]] | None = None,
        translator_dir: str | Path | None = None) -> dict[str, Any]:
    """Train the student; `observer(step, student)` (the benchmark's test probe) runs after
    each eval, off the clock and outside model selection."""
    tracker = tracker or NullTracker()
    params = stage_params.view(params, "distill")  # only what it reads: its cache key (stage_params)
    dp = params.distill
    started = time.perf_counter()
    seed_everything(params.seed)
    runtime = Runtime.from_params(params.runtime)
    device = runtime.device
    method = methods.get(dp.method)
    if method.needs_trained_gan and generator_dir is None:
        raise ConfigError(f"distill.method={dp.method} needs the generator from train_gan")
    if method.needs_translator and translator_dir is None:
        raise ConfigError(f"distill.method={dp.method} needs the translator from train_translator")
    source_dir, data_dir = Path(data_dir), method_data_dir(data_dir, dp.method)  # target methods: data/target
    meta = load_meta(data_dir)
    archs.resolve(params, *meta.input_shape)  # distill.student_arch 'auto' → the student for this (its domain's) shape
    real = to_tensors(load_split(data_dir, "train"), device) if method.real_images != "none" else None
    teacher = load_frozen_teacher(teacher_dir, device)
    transfer_parts = _transfer_parts(params, method, teacher, source_dir, meta, translator_dir, device)
    if transfer_parts:
        teacher = transfer_parts["teacher"]
    student = runtime.prepare(build_classifier(dp.student_arch, meta.channels, (meta.height, meta.width),
                                               meta.num_classes, mean=meta.mean, std=meta.std))
    addons = runtime.prepare(AddOns(params, unwrap(student), teacher, meta, runtime.world))
    optimizer = build_student_optimizer(dp, [*student.parameters(), *addons.parameters()])
    scheduler = build_schedule(optimizer, dp.schedule, dp.steps, warmup_steps=min(200, dp.steps // 10))
    generator = disc = None
    if method.needs_trained_gan:
        generator = load_generator(generator_dir).to(device).eval()  # type: ignore[arg-type]
        disc = load_discriminator(generator_dir) if dp.adaptive_every else None  # type: ignore[arg-type]
    ctx = Context(params, runtime, meta, teacher, student, optimizer, scheduler, real,
                  StepBatches(len(real[1]), dp.batch_size, params.seed, runtime.world, "distill.batch_size")
                  if real is not None else None, generator,
                  student_ema=EMA(student, dp.student_ema) if dp.student_ema else None, generator_discriminator=disc,
                  **{k: v for k, v in transfer_parts.items() if k != "teacher"})
    scored = unwrap(ctx.scored_student)  # evaluation: the plain module, no collectives
    step_fn = STEPS[dp.method](ctx, addons)
    fake_quant = qat.LastSteps(unwrap(student), dp.steps, dp.qat_fraction, runtime.world) if dp.qat else None
    if fake_quant is not None:  # quantisation-aware: the last qat_fraction of steps see INT8 rounding
        step_fn = fake_quant.wrap(step_fn)
    tracker.log_params({f"distill.{k}": v for k, v in dp.model_dump().items()} | {"seed": params.seed})

    select_key = method.selection
    if select_key == "final":
        # No real data, so no validation split: the student at the end of the cosine schedule is
        # the result. Synthetic agreement is logged to watch training, not to select: its bank
        # grows harder with the generator, so values at different steps are not comparable
        # (selecting on it picked step 250 at 30% test accuracy where the end reached 79%).
        synthetic_bank: list[torch.Tensor] = []

        def eval_fn(step: int) -> dict[str, float]:
            # Each rank generates and scores its part of the bank; the predictions are gathered.
            if ctx.generator is not None:
                # Batch statistics, as in training: the bank must look like what the student learns
                # from (the in-stage generator is never used in eval mode).
                generator = unwrap(ctx.generator).train()  # the loop put every tracked module in eval mode
                draw = torch.Generator(device).manual_seed(step)
                labels = torch.randint(0, meta.num_classes, (512,), device=device, generator=draw)
                z = torch.randn(512, generator.nz, device=device, generator=draw)
                x = generator(runtime.eval_slice(z), runtime.eval_slice(labels))
                generator.eval()
            else:
                x = ctx.noise_batch(512)
            synthetic_bank.append(x)  # a growing bank: samples from every phase of the generator
            bank = torch.cat(synthetic_bank[-20:])
            total = 512 * len(synthetic_bank[-20:])
            return {"synthetic_agreement": macro_agreement(runtime.gather(scored(bank).argmax(1), total),
                                                           runtime.gather(teacher(bank).argmax(1), total),
                                                           meta.num_classes)}
    elif select_key == "val_agreement":
        # Target labels never choose a step: agreement with the method's own teacher signal on
        # held-out target images (the val split's images; its labels stay unread here).
        val_x = torch.from_numpy(load_split(data_dir, "val").x).to(device)
        val_signal = predict_logits(teacher, val_x, device=device).argmax(1)

        def eval_fn(step: int) -> dict[str, float]:
            logits = runtime.gather(predict_logits(scored, runtime.eval_slice(val_x), device=device), total=len(val_x))
            return {"val_agreement": float((logits.argmax(1) == val_signal).float().mean())}
    else:
        val_x, val_y = to_tensors(load_split(data_dir, "val"), device)

        def eval_fn(step: int) -> dict[str, float]:
            logits = predict_logits(scored, runtime.eval_slice(val_x), device=device)
            return {"val_acc": accuracy(runtime.gather(logits, total=len(val_y)), val_y.cpu())}

    if not method.needs_target_labels:  # the target upper bound has no teacher that reads its images
        eval_fn = AgreementWatch(runtime, teacher, scored, data_dir, generator, meta.num_classes,
                                 params.seed).wrap(eval_fn)
    teacher_id = file_digest(Path(teacher_dir) / "model.pt") if (Path(teacher_dir) / "model.pt").is_file() else ""
    generator_id = file_digest(Path(generator_dir) / "model.pt") if generator is not None else ""
    translator_id = file_digest(Path(translator_dir) / "model.pt") if translator_dir is not None else ""
    # The trained cGAN enters by its file digest (gan.* is not read here, so a new gan.steps leaves
    # a kd student's task cached).
    fp = fingerprint("distill", params_sections(params, "distill", "data"), meta.version, meta.counts,
                     teacher_id, generator_id, *([translator_id] if translator_id else []))
    loop = TrainingLoop(
        f"distill[{dp.method}]", dp.steps, checkpoint_dir("distill", fp), fingerprint=fp,
        checkpoint_every=params.runtime.checkpoint_every, eval_every=dp.eval_every,
        select=None if select_key == "final" else (select_key, "max"),
        max_retries=params.runtime.max_retries, retry_lr_factor=params.runtime.retry_lr_factor,
        log_fn=tracker.log_metrics, progress=params.runtime.progress, runtime=runtime,
        samples_per_step=dp.batch_size,
        observer=(lambda step: observer(step, scored)) if observer is not None else None,
        select_from=fake_quant.start if fake_quant is not None else 0,  # select a student that saw QAT
    )
    loop.track("student", student, optimizer, scheduler, ema=ctx.student_ema)
    if unwrap(addons).active:
        loop.track("addons", addons)
    for name, module in ctx.extra_modules.items():
        loop.track(name, module, ctx.extra_optimizers.get(name), ctx.extra_schedulers.get(name))
    outcome = loop.run(step_fn, eval_fn)
    if fake_quant is not None:
        fake_quant.remove()  # the result is a float student; export quantises it for real
    if not runtime.is_main:
        return follower_result(runtime, outcome.steps)

    student = unwrap(student).cpu().eval()
    student.load_state_dict(outcome.best_state["student_ema" if ctx.student_ema is not None else "student"])
    test_x, test_y = to_tensors(load_split(data_dir, "test"))
    val_x_cpu, val_y_cpu = to_tensors(load_split(data_dir, "val"))
    val_acc = accuracy(predict_logits(student, val_x_cpu), val_y_cpu)
    test_acc = accuracy(predict_logits(student, test_x), test_y)
    n_train = meta.counts.get("train", 0)
    result = {
        "method": dp.method, "arch": dp.student_arch, "steps": outcome.steps, "processes": runtime.world_size,
        "best_step": outcome.steps if select_key == "final" else outcome.best_step,
        "selected_on": select_key, "selected_value": outcome.best_value, "retries": outcome.retries,
        "resumed_from": outcome.resumed_from, "val_acc": val_acc, "test_acc": test_acc,
        "params": count_parameters(student),
        "real_images_seen_by_student": real_images_seen(dp.method, dp.steps, dp.batch_size, dp.real_fraction,
                                                        n_train),
        "history": outcome.history, "wall_s": time.perf_counter() - started,
    }
    save_classifier(student, dp.student_arch, meta, out_dir, extra={"method": dp.method})
    if "generator" in outcome.best_state and not method.needs_trained_gan:
        # data-free: keep the generator the student learned from (export calibrates INT8 on its samples)
        save_free_generator(unwrap(ctx.generator), outcome.best_state["generator"], out_dir)
    write_result(out_dir, result)
    tracker.log_metrics({"final_val_acc": val_acc, "test_acc": test_acc, "params": float(result["params"])})
    log.info("[distill] %s → %s: val %.4f, test %.4f (%d params, selected at step %s on %s)", dp.method,
             dp.student_arch, val_acc, test_acc, result["params"], outcome.best_step, select_key)
    return result
