"""train_gan: the conditional GAN whose samples carry the teacher's knowledge.

Per step, on a real batch (x, y) and z ~ N(0, I):
  D:  L_D = adversarial loss (BCE: −log D(x,y) − log(1 − D(G(z,y),y)); or hinge)
  G:  L_G = adv + λ·L_FM + w_T·CE(teacher(G(z,y)), y) + w_div·L_ms
with λ = gan.fm_weight (the seed objective), optional teacher guidance and mode-seeking
diversity, TTUR (separate lr_g / lr_d), spectral norm + projection in D, optional EMA of G.

Every `gan.eval_every` steps the loop measures — with the teacher as judge — conditioning
agreement, class coverage (normalised entropy of the mean teacher softmax), teacher-IS and
teacher-FID against real validation images. Coverage under `gan.min_coverage` for
`gan.collapse_patience` checks is collapse: the loop restores the last good checkpoint with
lower learning rates. The generator with the best validation FID is kept.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from gandistill import losses, stage_params
from gandistill.augment import diff_augment
from gandistill.config import Params
from gandistill.data.dataset import StepBatches, as_float, load_meta, load_split, to_tensors
from gandistill.evaluation.gan_quality import generator_report
from gandistill.loop import EMA, TrainingLoop
from gandistill.nets import build_gan, count_parameters
from gandistill.priors import FeatureStatisticsPrior
from gandistill.runtime import Runtime, seed_everything, unwrap
from gandistill.stages.common import (
    checkpoint_dir,
    discriminator_record,
    file_digest,
    fingerprint,
    follower_result,
    load_frozen_teacher,
    params_sections,
    save_generator,
    write_result,
)
from gandistill.tracking import NullTracker, Tracker

log = logging.getLogger(__name__)


def run(params: Params, data_dir: str | Path, teacher_dir: str | Path, out_dir: str | Path,
        tracker: Tracker | None = None) -> dict[str, Any]:
    tracker = tracker or NullTracker()
    params = stage_params.view(params, "train_gan")  # only what it reads: its cache key (stage_params)
    gp = params.gan
    started = time.perf_counter()
    seed_everything(params.seed)
    runtime = Runtime.from_params(params.runtime)
    device = runtime.device
    meta = load_meta(data_dir)
    train_x, train_y = to_tensors(load_split(data_dir, "train"), device)
    val_x, val_y = to_tensors(load_split(data_dir, "val"), device)
    val_images, val_labels = as_float(val_x[: max(gp.eval_samples, 500)]), val_y[: max(gp.eval_samples, 500)]
    teacher = load_frozen_teacher(teacher_dir, device)
    tracker.log_params({f"gan.{k}": v for k, v in gp.model_dump().items()} | {"seed": params.seed})

    size = (meta.height, meta.width)
    generator, disc = build_gan(gp.arch, gp.nz, meta.num_classes, meta.channels, size, gp.ngf, gp.ndf,
                                gp.spectral_norm, hidden=gp.hidden)
    generator, disc = runtime.prepare(generator), runtime.prepare(disc)
    opt_g = torch.optim.Adam(generator.parameters(), lr=gp.lr_g, betas=(gp.beta1, gp.beta2))
    opt_d = torch.optim.Adam(disc.parameters(), lr=gp.lr_d, betas=(gp.beta1, gp.beta2))
    ema = EMA(generator, gp.ema_decay) if gp.ema_decay else None
    batches = StepBatches(len(train_y), gp.batch_size, params.seed, runtime.world, "gan.batch_size")
    d_loss = losses.d_loss_hinge if gp.loss == "hinge" else losses.d_loss_bce
    g_adv = losses.g_loss_hinge if gp.loss == "hinge" else losses.g_loss_bce

    # The teacher's feature statistics: its BatchNorm running statistics, or measured on real images.
    prior = FeatureStatisticsPrior(teacher, as_float(train_x[:5000])) if gp.feature_prior_weight > 0 else None

    def augment(x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x, gp.augment) if gp.augment else x

    def step_fn(step: int) -> dict[str, Any]:
        idx = batches.indices(step)
        real, y = as_float(train_x[idx]), train_y[idx]
        z = runtime.shard(torch.randn(batches.batch_size, gp.nz, device=device))  # the global draw, this rank's part
        with runtime.autocast():
            fake = generator(z, y)
            real_logit, real_feat = disc(augment(real), y)
            fake_logit, _ = disc(augment(fake.detach()), y)
            loss_d = d_loss(real_logit, fake_logit)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()

        with runtime.autocast():
            fake_logit, fake_feat = disc(augment(fake), y)
            adv = g_adv(fake_logit)
            # Batch means over the global batch (gathered), as on one process.
            fm = losses.feature_matching(runtime.gather(real_feat.detach()), runtime.gather(fake_feat))
            loss_g = adv + gp.fm_weight * fm
            terms = {"loss_d": loss_d.detach(), "loss_g_adv": adv.detach(), "loss_fm": fm.detach()}
            teacher_logits = None
            if prior is not None:
                teacher_logits, feature_prior = prior(fake)
                loss_g = loss_g + gp.feature_prior_weight * feature_prior
                terms["loss_feature_prior"] = feature_prior.detach()
            if gp.teacher_weight > 0:
                guide = losses.teacher_guidance(teacher(fake) if teacher_logits is None else teacher_logits, y)
                loss_g = loss_g + gp.teacher_weight * guide
                terms["loss_teacher"] = guide.detach()
            if gp.diversity_weight > 0:
                div = losses.mode_seeking(fake, z)
                loss_g = loss_g + gp.diversity_weight * div
                terms["loss_diversity"] = div.detach()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        if ema is not None:
            ema.update(generator)
        return terms | {"loss_g": loss_g.detach()}

    def eval_fn(step: int) -> dict[str, float]:
        judged = ema.shadow if ema is not None else unwrap(generator)
        return generator_report(judged, teacher, val_images, gp.eval_samples, meta.num_classes, device=device,
                                real_labels=val_labels, runtime=runtime)

    def health_fn(metrics: dict[str, float]) -> str | None:
        if metrics["coverage"] < gp.min_coverage:
            return f"class coverage {metrics['coverage']:.3f} below gan.min_coverage={gp.min_coverage} (mode collapse)"
        if step_is_past_warmup() and metrics.get("diversity", 1.0) < gp.min_diversity:
            return (f"within-class diversity {metrics['diversity']:.3f} below gan.min_diversity={gp.min_diversity} "
                    "(intra-class mode collapse: G ignores z; raise gan.diversity_weight)")
        return None

    def step_is_past_warmup() -> bool:
        # Early samples are noise-like blobs whose spread says nothing yet.
        return loop.step >= gp.steps // 4

    teacher_id = file_digest(Path(teacher_dir) / "model.pt") if (Path(teacher_dir) / "model.pt").is_file() else ""
    fp = fingerprint("train_gan", params_sections(params, "gan", "data"), meta.version, meta.counts, teacher_id)
    loop = TrainingLoop(
        "train_gan", gp.steps, checkpoint_dir("train_gan", fp), fingerprint=fp,
        checkpoint_every=params.runtime.checkpoint_every, eval_every=gp.eval_every, select=("fid", "min"),
        patience=gp.collapse_patience, max_retries=params.runtime.max_retries,
        retry_lr_factor=params.runtime.retry_lr_factor, log_fn=tracker.log_metrics,
        progress=params.runtime.progress, runtime=runtime,
    )
    loop.track("generator", generator, opt_g, ema=ema)
    loop.track("discriminator", disc, opt_d)
    outcome = loop.run(step_fn, eval_fn, health_fn)
    if not runtime.is_main:
        return follower_result(runtime, outcome.steps)

    best = unwrap(generator).cpu()
    best.load_state_dict(outcome.best_state["generator_ema" if ema is not None else "generator"])
    # The discriminator of the selected step travels with G: evaluate's disagreement atlas asks it
    # how real a test image looks for the teacher's class.
    save_generator(best, out_dir, extra={"ema": ema is not None, "discriminator": discriminator_record(
        unwrap(disc), outcome.best_state["discriminator"], gp.ndf, gp.hidden, gp.spectral_norm)})
    final = outcome.history[-1] if outcome.history else {}
    selected = next((h for h in outcome.history if h["step"] == outcome.best_step), final)
    result = {
        "steps": outcome.steps, "best_step": outcome.best_step, "retries": outcome.retries,
        "processes": runtime.world_size,
        "resumed_from": outcome.resumed_from, "generator_params": count_parameters(best),
        "discriminator_params": count_parameters(unwrap(disc)),
        **{f"selected_{k}": v for k, v in selected.items() if k != "step"},
        "history": outcome.history, "wall_s": time.perf_counter() - started,
    }
    write_result(out_dir, result)
    tracker.log_metrics({k: v for k, v in result.items() if k.startswith("selected_")})
    log.info("[train_gan] %d steps: selected step %s, FID %.3f, agreement %.4f, coverage %.4f", outcome.steps,
             outcome.best_step, selected.get("fid", float("nan")), selected.get("agreement", float("nan")),
             selected.get("coverage", float("nan")))
    return result
