"""Methods whose student works in a target domain the teacher never saw (cross-domain transfer;
no target label is read in training): `cyclegan` (target images labelled by the teacher through
the trained CycleGAN translator, plus translated source images; pixel-level adaptation as in
CyCADA, Hoffman et al. 2018), `pixelda` (source images translated by PixelDA's generator plus
pseudo-labelled target images), `target_kd` (the source-only teacher on target images),
`source_augmented` (colour-augmented source images, no translator: the baseline the translators
must beat) and `target_supervised` (CE on the labelled target split: the upper bound).
`transfer_parts` builds the teacher signal and the batch sources these methods read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gandistill import losses, methods, transfer
from gandistill.augment import random_affine, random_colour
from gandistill.config import Params
from gandistill.data.dataset import DatasetMeta, StepBatches, as_float, load_meta, load_split, to_tensors
from gandistill.evaluation.predict import predict_logits
from gandistill.nets.translator import ShapeAdapter
from gandistill.results import read_result
from gandistill.stages.distill.addons import AddOns
from gandistill.stages.distill.context import Context, StepFactory, StepFn, distill_step, optimise
from gandistill.stages.distill.supervised import STEPS as SUPERVISED
from gandistill.transfer import load_translator


def _target_kd(ctx: Context, addons: AddOns) -> StepFn:
    """Plain KD on unlabelled target images: ctx.teacher is the source-only teacher (it reads the
    target image converted to its input shape). With distill.colour_augment the student reads a
    colour-augmented copy of the image the teacher labelled."""
    def step(i: int) -> dict[str, Any]:
        x = ctx.real_batch(i)[0]
        if not ctx.params.distill.colour_augment:
            return distill_step(ctx, addons, x, None)
        with torch.no_grad():
            t = ctx.teacher(x)
        return distill_step(ctx, addons, random_colour(x, world=ctx.runtime.world), None, t)

    return step


def _cyclegan(ctx: Context, addons: AddOns) -> StepFn:
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
        optimise(ctx, loss)
        return terms | {"loss": loss.detach()}

    return step


def _source_batch(ctx: Context, step: int, n: int, what: str) -> torch.Tensor:
    """This rank's part of the first n source training images of the step's source batch (float,
    affine-augmented with distill.augment)."""
    assert ctx.source is not None and ctx.source_batches is not None
    idx = ctx.runtime.shard(ctx.source_batches.global_indices(step)[:n], what)
    x = as_float(ctx.source[0][idx])
    return random_affine(x, world=ctx.runtime.world) if ctx.params.distill.augment else x


def _pixelda(ctx: Context, addons: AddOns) -> StepFn:
    """Cross-domain transfer through PixelDA's generator. Each batch holds translated source images
    G(x_a, z) (fresh z each time), softly labelled by the teacher on x_a (T²·KL), and — unless
    distill.pseudo_labels is "none" — a (1 − source_fraction) share of unlabelled target images x_b
    with a hard pseudo-label where its labeller is confident (max softmax ≥ pseudo_threshold; CE
    averaged over the whole share, so an unconfident image counts zero): the translator's task
    classifier T (`task`, labels fixed up front) or an EMA of the student (`mean_teacher`, French
    et al. 2018; the student is scored and returned as that EMA). No target label anywhere."""
    dp = ctx.params.distill
    n_source = dp.batch_size if dp.pseudo_labels == "none" else round(dp.batch_size * dp.source_fraction)
    n_target = dp.batch_size - n_source
    assert ctx.translator is not None and ctx.source_teacher is not None
    translate = ctx.translator.translate

    def step(i: int) -> dict[str, Any]:
        xs, soft = [], None
        with torch.no_grad():
            if n_source:
                x_a = _source_batch(ctx, i, n_source, "distill.batch_size × distill.source_fraction")
                x_t = translate(x_a)
                xs.append(random_colour(x_t, world=ctx.runtime.world) if dp.colour_augment else x_t)
                soft = ctx.source_teacher(x_a)  # type: ignore[misc]
            if n_target:
                assert ctx.real is not None and ctx.batches is not None
                idx = ctx.runtime.shard(ctx.batches.global_indices(i)[:n_target],
                                        "distill.batch_size × (1 − distill.source_fraction)")
                x_b = as_float(ctx.real[0][idx])  # images only: ctx.real[1] holds target labels, never read
                if dp.pseudo_labels == "task":
                    assert ctx.pseudo is not None
                    confidence, label = ctx.pseudo[0][idx], ctx.pseudo[1][idx]
                else:
                    confidence, label = torch.softmax(ctx.scored_student(x_b), 1).max(1)
                confident = (confidence >= dp.pseudo_threshold).to(x_b.dtype)
                xs.append(random_affine(x_b, world=ctx.runtime.world) if dp.augment else x_b)
        n_local = len(xs[0]) if n_source else 0
        with ctx.runtime.autocast():
            s = ctx.student(torch.cat(xs))
            loss, terms = torch.zeros((), device=ctx.device), {}
            if n_source:
                kd = losses.kd_kl(s[:n_local], soft, dp.temperature)
                loss = loss + kd * n_local / len(s)
                terms["kd_translated_source"] = kd.detach()
            if n_target:
                pseudo = (F.cross_entropy(s[n_local:], label, reduction="none") * confident).mean()
                loss = loss + pseudo * (len(s) - n_local) / len(s)
                terms |= {"pseudo_label": pseudo.detach(), "pseudo_confident": confident.mean()}
        optimise(ctx, loss)
        return terms | {"loss": loss.detach()}

    return step


def _source_augmented(ctx: Context, addons: AddOns) -> StepFn:
    """The translator-free baseline for a target domain: source images converted to the target's shape
    (the fixed adapter), colour/intensity/polarity-augmented, labelled softly by the teacher on the
    source image. The student never sees a target image in training."""
    assert ctx.source_adapter is not None and ctx.source_teacher is not None

    def step(i: int) -> dict[str, Any]:
        x_a = _source_batch(ctx, i, ctx.params.distill.batch_size, "distill.batch_size")
        with torch.no_grad():
            t = ctx.source_teacher(x_a)
            x = random_colour(ctx.source_adapter(x_a), world=ctx.runtime.world)
        return distill_step(ctx, addons, x, None, t)

    return step


def guard_fallback(method: methods.Method, translator_dir: str | Path | None) -> dict[str, Any] | None:
    """The translator's class-guard verdict when it tripped with a fallback (gandistill.class_guard), else None."""
    if not method.needs_translator or translator_dir is None:
        return None
    guard = read_result(translator_dir).get("guard") or {}
    return guard if guard.get("verdict") == "tripped" and guard.get("fallback") else None


def transfer_parts(params: Params, method: methods.Method, teacher: nn.Module, source_dir: Path,
                   target_meta: DatasetMeta, translator_dir: str | Path | None, device: torch.device,
                   real: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, Any]:
    """For a target-domain method: the teacher signal on target images (through the translator or
    source-only) and what its source share needs (the source train split; cyclegan / pixelda: the
    translator; pixelda: the task classifier's pseudo-labels on `real`, the target train split);
    {} for source-domain methods."""
    if method.domain != "target":
        return {}
    if method.needs_target_labels:
        return {"teacher": teacher}  # the supervised upper bound learns from labels; the teacher only reports
    dp = params.distill
    meta_a = load_meta(source_dir)
    parts: dict[str, Any] = {"teacher": transfer.source_only(teacher, meta_a, target_meta).to(device),
                             "source_teacher": teacher}
    reads_source = method.name == "source_augmented"
    if method.needs_translator:
        assert translator_dir is not None
        translator = load_translator(translator_dir, device)
        parts |= {"teacher": transfer.through_translator(teacher, translator), "translator": translator}
        reads_source = dp.source_fraction > 0 or (method.translator == "pixelda" and dp.pseudo_labels == "none")
        if method.translator == "pixelda" and dp.pseudo_labels == "task":
            assert real is not None
            probs = torch.softmax(predict_logits(parts["teacher"], real[0], device=device), 1).to(device)
            parts["pseudo"] = tuple(probs.max(1))  # (confidence, label) of T on every target train image
    if method.name == "source_augmented":
        parts["source_adapter"] = ShapeAdapter(meta_a.input_shape, target_meta.input_shape).to(device)
    if reads_source:
        source = to_tensors(load_split(source_dir, "train"), device)
        parts |= {"source": source, "source_batches": StepBatches(len(source[1]), dp.batch_size, params.seed + 1)}
    return parts


STEPS: dict[str, StepFactory] = {"cyclegan": _cyclegan, "pixelda": _pixelda, "target_kd": _target_kd,
                                 "source_augmented": _source_augmented, "target_supervised": SUPERVISED["scratch"]}
