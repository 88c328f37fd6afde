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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gandistill import archs, losses
from gandistill.augment import diff_augment
from gandistill.config import Params
from gandistill.data.dataset import StepBatches, as_float, load_meta, load_split, to_tensors
from gandistill.evaluation.gan_quality import generator_report
from gandistill.fingerprints import model_digest
from gandistill.loop import EMA, LoopResult
from gandistill.model_files import discriminator_record, load_frozen_teacher, save_generator
from gandistill.nets import build_gan, count_parameters
from gandistill.priors import FeatureStatisticsPrior
from gandistill.runtime import Runtime, frozen, fused, unwrap
from gandistill.stages.harness import Training
from gandistill.tracking import Tracker

log = logging.getLogger(__name__)


def run(params: Params, data_dir: str | Path, teacher_dir: str | Path, out_dir: str | Path,
        tracker: Tracker | None = None) -> dict[str, Any]:
    training = Training.start("train_gan", "gan", params, tracker)
    runtime, device, gp = training.runtime, training.device, training.params.gan
    meta = load_meta(data_dir)
    train_x, train_y = to_tensors(load_split(data_dir, "train"), device)
    val_x, val_y = to_tensors(load_split(data_dir, "val"), device)
    val_images, val_labels = as_float(val_x[: max(gp.eval_samples, 500)]), val_y[: max(gp.eval_samples, 500)]
    teacher = load_frozen_teacher(teacher_dir, device)
    archs.resolve_gan(training.params, *meta.input_shape)  # 'auto' → the pair and its recipe, logged resolved
    training.log_params()

    size = (meta.height, meta.width)
    generator, disc = build_gan(gp.arch, gp.nz, meta.num_classes, meta.channels, size, gp.ngf, gp.ndf,
                                gp.spectral_norm, hidden=gp.hidden)
    generator, disc = runtime.prepare(generator), runtime.prepare(disc)
    opt_g = fused(torch.optim.Adam, generator.parameters(), lr=gp.lr_g, betas=(gp.beta1, gp.beta2))
    opt_d = fused(torch.optim.Adam, disc.parameters(), lr=gp.lr_d, betas=(gp.beta1, gp.beta2))
    ema = EMA(generator, gp.ema_decay) if gp.ema_decay else None
    batches = StepBatches(len(train_y), gp.batch_size, training.params.seed, runtime.world, "gan.batch_size")
    # The teacher's feature statistics on real training images, per class or pooled (gandistill/priors.py).
    prior = None
    if gp.feature_prior_weight > 0:
        reference = slice(0, 10_000)
        prior = FeatureStatisticsPrior(teacher, as_float(train_x[reference]),
                                       train_y[reference] if gp.feature_prior == "class" else None, meta.num_classes)
    step_fn = _step(runtime, gp, generator, disc, opt_g, opt_d, ema, teacher, prior, train_x, train_y, batches)

    def eval_fn(step: int) -> dict[str, float]:
        judged = ema.shadow if ema is not None else unwrap(generator)
        return generator_report(judged, teacher, val_images, gp.eval_samples, meta.num_classes, device=device,
                                real_labels=val_labels, runtime=runtime)

    def health_fn(metrics: dict[str, float]) -> str | None:
        if metrics["coverage"] < gp.min_coverage:
            return f"class coverage {metrics['coverage']:.3f} below gan.min_coverage={gp.min_coverage} (mode collapse)"
        # Past the first quarter only: early samples are noise-like blobs whose spread says nothing yet.
        if loop.step >= gp.steps // 4 and metrics.get("diversity", 1.0) < gp.min_diversity:
            return (f"within-class diversity {metrics['diversity']:.3f} below gan.min_diversity={gp.min_diversity} "
                    "(intra-class mode collapse: G ignores z; raise gan.diversity_weight)")
        return None

    loop = training.loop(gp.steps, meta.version, meta.counts, model_digest(teacher_dir), eval_every=gp.eval_every,
                         select=("fid", "min"), patience=gp.collapse_patience)
    loop.track("generator", generator, opt_g, ema=ema)
    loop.track("discriminator", disc, opt_d)
    outcome = loop.run(step_fn, eval_fn, health_fn)
    if not training.is_main:
        return training.follower(outcome)
    return _finish(training, outcome, generator, disc, ema is not None, out_dir)


def _step(runtime: Runtime, gp: Any, generator: nn.Module, disc: nn.Module, opt_g: torch.optim.Optimizer,
          opt_d: torch.optim.Optimizer, ema: EMA | None, teacher: nn.Module, prior: FeatureStatisticsPrior | None,
          train_x: torch.Tensor, train_y: torch.Tensor, batches: StepBatches) -> Callable[[int], dict[str, Any]]:
    """One D update, then one G update (the module docstring's L_D and L_G) on the step's real batch."""
    # By name, so an unresolved 'auto' (archs.resolve_gan not run) fails here instead of training as BCE.
    d_loss, g_adv = {"hinge": (losses.d_loss_hinge, losses.g_loss_hinge),
                     "bce": (losses.d_loss_bce, losses.g_loss_bce)}[gp.loss]
    device = runtime.device

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

        # D's weight gradients in this backward would be discarded (opt_d zeroes them): skip them.
        with runtime.autocast(), frozen(unwrap(disc)) as plain_disc:
            fake_logit, fake_feat = plain_disc(augment(fake), y)
        with runtime.autocast():
            adv = g_adv(fake_logit)
            # Batch means over the global batch (gathered), as on one process.
            fm = losses.feature_matching(runtime.gather(real_feat.detach()), runtime.gather(fake_feat))
            loss_g = adv + gp.fm_weight * fm
            terms = {"loss_d": loss_d.detach(), "loss_g_adv": adv.detach(), "loss_fm": fm.detach()}
            teacher_logits = None
            if prior is not None:
                teacher_logits, feature_prior = prior(fake, y)
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

    return step_fn


def _finish(training: Training, outcome: LoopResult, generator: nn.Module, disc: nn.Module, with_ema: bool,
            out_dir: str | Path) -> dict[str, Any]:
    """The selected generator (its EMA when enabled) saved with the selected step's discriminator."""
    gp = training.params.gan
    best = unwrap(generator).cpu()
    best.load_state_dict(outcome.best_state["generator_ema" if with_ema else "generator"])
    # The discriminator of the selected step travels with G: evaluate's disagreement atlas asks it
    # how real a test image looks for the teacher's class.
    save_generator(best, out_dir, extra={"ema": with_ema, "discriminator": discriminator_record(
        unwrap(disc), outcome.best_state["discriminator"], gp.ndf, gp.hidden, gp.spectral_norm)})
    final = outcome.history[-1] if outcome.history else {}
    selected = next((h for h in outcome.history if h["step"] == outcome.best_step), final)
    result = {
        "steps": outcome.steps, "best_step": outcome.best_step, "retries": outcome.retries,
        "processes": training.runtime.world_size,
        "resumed_from": outcome.resumed_from, "generator_params": count_parameters(best),
        "recipe": {"arch": gp.arch, "loss": gp.loss, "augment": gp.augment, "teacher_weight": gp.teacher_weight},
        "discriminator_params": count_parameters(unwrap(disc)),
        **{f"selected_{k}": v for k, v in selected.items() if k != "step"},
        "history": outcome.history,
    }
    training.finish(out_dir, result, {k: v for k, v in result.items() if k.startswith("selected_")})
    log.info("[train_gan] %d steps: selected step %s, FID %.3f, agreement %.4f, coverage %.4f", outcome.steps,
             outcome.best_step, selected.get("fid", float("nan")), selected.get("agreement", float("nan")),
             selected.get("coverage", float("nan")))
    return result
