"""Methods whose student works in a target domain the teacher never saw (cross-domain transfer;
no target label is read in training): `cyclegan` (target images labelled by the teacher through
the trained CycleGAN translator, plus translated source images; pixel-level adaptation as in
CyCADA, Hoffman et al. 2018), `target_kd` (the source-only teacher on target images) and
`target_supervised` (CE on the labelled target split: the upper bound). `transfer_parts` builds
the teacher signal these methods read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from gandistill import losses, methods, transfer
from gandistill.augment import random_affine, random_colour
from gandistill.config import Params
from gandistill.data.dataset import DatasetMeta, StepBatches, as_float, load_meta, load_split, to_tensors
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


def transfer_parts(params: Params, method: methods.Method, teacher: nn.Module, source_dir: Path,
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


STEPS: dict[str, StepFactory] = {"cyclegan": _cyclegan, "target_kd": _target_kd,
                                 "target_supervised": SUPERVISED["scratch"]}
