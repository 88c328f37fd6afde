"""Model selection and what is watched while the student trains (`distill.run`'s eval function).

By the method's record (`gandistill.methods`, `selection`): methods that may use real data
select the step with the best accuracy on the real validation split (never test); target-domain
methods without target labels select on agreement with their own teacher signal on held-out
target images; `data_free`, `dafl` and `noise` use no real data in training and so cannot
select: their result is the student at the end of the schedule, and teacher–student agreement
on a bank of their own synthetic images is logged to watch training. Agreement on the real
validation images (and the cGAN's samples), overall and per class, is recorded at every
evaluation for the report (`AgreementWatch`), never selected on.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gandistill import methods
from gandistill.data.dataset import load_split, to_tensors
from gandistill.evaluation import explain
from gandistill.evaluation.gan_quality import sample_balanced
from gandistill.evaluation.predict import accuracy, predict_logits
from gandistill.runtime import Runtime, unwrap
from gandistill.stages.distill.context import Context

EvalFn = Callable[[int], dict[str, Any]]


def eval_function(ctx: Context, method: methods.Method, data_dir: Path) -> EvalFn:
    """The stage's eval function: the method's selection metric, plus `AgreementWatch`."""
    scored = unwrap(ctx.scored_student)  # evaluation: the plain module, no collectives
    select = {"final": _synthetic_agreement, "val_agreement": _val_agreement, "val_acc": _val_accuracy}
    eval_fn = select[method.selection](ctx, scored, data_dir)
    if method.needs_target_labels:  # the target upper bound has no teacher that reads its images
        return eval_fn
    return AgreementWatch(ctx.runtime, ctx.teacher, scored, data_dir, ctx.generator if method.needs_trained_gan
                          else None, ctx.meta.num_classes, ctx.params.seed).wrap(eval_fn)


def _synthetic_agreement(ctx: Context, scored: nn.Module, data_dir: Path) -> EvalFn:
    """No real data, so no validation split: the student at the end of the cosine schedule is
    the result. Synthetic agreement is logged to watch training, not to select: its bank grows
    harder with the generator, so values at different steps are not comparable."""
    runtime, device, num_classes = ctx.runtime, ctx.device, ctx.meta.num_classes
    synthetic_bank: list[torch.Tensor] = []

    def eval_fn(step: int) -> dict[str, float]:
        # Each rank generates and scores its part of the bank; the predictions are gathered.
        if ctx.generator is not None:
            # Batch statistics, as in training: the bank must look like what the student learns
            # from (the in-stage generator is never used in eval mode).
            generator = unwrap(ctx.generator).train()  # the loop put every tracked module in eval mode
            draw = torch.Generator(device).manual_seed(step)
            labels = torch.randint(0, num_classes, (512,), device=device, generator=draw)
            z = torch.randn(512, generator.nz, device=device, generator=draw)
            x = generator(runtime.eval_slice(z), runtime.eval_slice(labels))
            generator.eval()
        else:
            x = ctx.noise_batch(512)
        synthetic_bank.append(x)  # a growing bank: samples from every phase of the generator
        bank = torch.cat(synthetic_bank[-20:])
        total = 512 * len(synthetic_bank[-20:])
        return {"synthetic_agreement": macro_agreement(runtime.gather(scored(bank).argmax(1), total),
                                                       runtime.gather(ctx.teacher(bank).argmax(1), total),
                                                       num_classes)}

    return eval_fn


def _val_agreement(ctx: Context, scored: nn.Module, data_dir: Path) -> EvalFn:
    """Target labels never choose a step: agreement with the method's own teacher signal on
    held-out target images (the val split's images; its labels stay unread here)."""
    runtime, device = ctx.runtime, ctx.device
    val_x = torch.from_numpy(load_split(data_dir, "val").x).to(device)
    val_signal = predict_logits(ctx.teacher, val_x, device=device).argmax(1)

    def eval_fn(step: int) -> dict[str, float]:
        logits = runtime.gather(predict_logits(scored, runtime.eval_slice(val_x), device=device), total=len(val_x))
        return {"val_agreement": float((logits.argmax(1) == val_signal).float().mean())}

    return eval_fn


def _val_accuracy(ctx: Context, scored: nn.Module, data_dir: Path) -> EvalFn:
    runtime, device = ctx.runtime, ctx.device
    val_x, val_y = to_tensors(load_split(data_dir, "val"), device)

    def eval_fn(step: int) -> dict[str, float]:
        logits = predict_logits(scored, runtime.eval_slice(val_x), device=device)
        return {"val_acc": accuracy(runtime.gather(logits, total=len(val_y)), val_y.cpu())}

    return eval_fn


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

    def wrap(self, eval_fn: Callable[[int], dict[str, float]]) -> EvalFn:
        # the method's own metrics win: a target method's val_agreement is its selection key
        return lambda step: self() | eval_fn(step)
