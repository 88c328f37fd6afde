"""What every method's step works with: the `Context` (the student, its optimiser, the teacher,
the batch sources) and the pieces of one student update (`forward_pair`, `optimise`,
`distill_step`). Built once by `distill.run`; a method's step factory reads it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from gandistill import losses
from gandistill.augment import random_affine
from gandistill.config import Params
from gandistill.data.dataset import DatasetMeta, StepBatches, as_float, noise_images
from gandistill.loop import EMA, warmup_cosine
from gandistill.runtime import Runtime, fused, unwrap

if TYPE_CHECKING:
    from gandistill.stages.distill.addons import AddOns

StepFn = Callable[[int], dict[str, Any]]
StepFactory = Callable[["Context", "AddOns"], StepFn]  # a method's math: its STEPS entry


@dataclass
class Context:
    """Everything a method's step needs; built once by `distill.run`."""

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
    # Target-domain methods: `teacher` is the teacher signal for a target image (the teacher through
    # G_BA for cyclegan, PixelDA's task classifier for pixelda, source-only for target_kd /
    # source_augmented); the frozen translator and the source train split feed the source share.
    translator: nn.Module | None = None
    source_teacher: nn.Module | None = None
    source: tuple[torch.Tensor, torch.Tensor] | None = None
    source_batches: StepBatches | None = None
    source_adapter: nn.Module | None = None  # source image → the target's shape (source_augmented)
    pseudo: tuple[torch.Tensor, torch.Tensor] | None = None  # pixelda: T's (confidence, label) per target image
    extra_modules: dict[str, nn.Module] = field(default_factory=dict)
    extra_optimizers: dict[str, torch.optim.Optimizer] = field(default_factory=dict)
    extra_schedulers: dict[str, Any] = field(default_factory=dict)
    student_ema: EMA | None = None

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


def forward_pair(ctx: Context, addons: AddOns, x: torch.Tensor,
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


def optimise(ctx: Context, loss: torch.Tensor) -> None:
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
        return fused(torch.optim.SGD, parameters, lr=dp.lr, momentum=0.9, weight_decay=dp.weight_decay)
    return fused(torch.optim.AdamW, parameters, lr=dp.lr, weight_decay=dp.weight_decay)


def distill_step(ctx: Context, addons: AddOns, x: torch.Tensor, labels: torch.Tensor | None,
                 teacher_logits: torch.Tensor | None = None) -> dict[str, Any]:
    """One student update on x: Hinton KD against the teacher (with CE on labels when given)."""
    dp = ctx.params.distill
    with ctx.runtime.autocast():
        s, t, extra = forward_pair(ctx, addons, x, teacher_logits)
        kd = losses.kd_objective(s, t, labels, dp.temperature, dp.alpha)
        loss = kd + sum(extra.values(), torch.zeros((), device=ctx.device))
    optimise(ctx, loss)
    return {"loss": loss.detach(), "kd": kd.detach(), **{k: v.detach() for k, v in extra.items()}}
