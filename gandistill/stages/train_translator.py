"""train_translator: the translator that carries the teacher's knowledge to the target domain, the one
the method's record names — the unpaired CycleGAN below (distill.method=cyclegan), or PixelDA's
source → target generator (distill.method=pixelda: gandistill/stages/pixelda_translator.py).

Source domain A (the teacher's, labelled) and target domain B (images only — target labels are
never read here). Per step, on a batch x_a of A and an independently ordered batch x_b of B:

  G:  L_G = L_adv(G_AB, D_B) + L_adv(G_BA, D_A)                       (least squares, Mao et al. 2017)
          + λ_cyc·(‖G_BA(G_AB(x_a)) − x_a‖₁ + ‖G_AB(G_BA(x_b)) − x_b‖₁)   (Zhu et al. 2017, eq. 2)
          + λ_id·(‖G_AB(ad(x_b)) − x_b‖₁ + ‖G_BA(ad(x_a)) − x_a‖₁)       (Zhu et al. 2017, §5.2)
          + λ_sem·CE(teacher(J(x_a)), argmax teacher(x_a))                (CyCADA, Hoffman et al. 2018)
          + λ_ent·(CE(teacher(G_BA(x_b)), argmax teacher(G_BA(x_b))) − H(mean softmax teacher(G_BA(x_b))))
                                                                          (DAFL's L_oh + L_ie, Chen et al. 2019)
  D:  L_D = L_lsgan(D_A; x_a, G_BA(x_b)) + L_lsgan(D_B; x_b, G_AB(x_a))

with λ_cyc, λ_id, λ_sem, λ_ent = translator.cycle_weight, identity_weight, semantic_weight,
target_entropy_weight and `ad` the fixed shape adapter (grey ↔ RGB, resize) when A and B differ in
shape. J(x_a) is what the teacher judges (translator.semantic_on): "translated" = ad(G_AB(x_a)),
CyCADA's eq. 4; "cycle" = G_BA(G_AB(x_a)), the round trip in the teacher's own domain. Judging the
translated image asks the source-only teacher — the model the transfer exists because it fails on
B — to read B-style images, which pulls G_AB towards images that still look like A (measured on
MNIST → MNIST-M: every digit painted on one dark background). The λ_ent term asks the frozen teacher
to read G_BA(x_b) confidently and, over a batch, spread over the classes: without it G_BA left
target images whose strokes are darker than their background nearly blank. Simplifications against
the paper, for a 2-core CPU: a narrow generator with few residual blocks, no 50-image history
buffer for D, cosine learning-rate decay (the paper: linear decay over the second half).

Every `translator.eval_every` steps the loop checks the translator on held-out images, with the
frozen teacher as judge: class coverage of the teacher's labels on G_BA(x_b) and the pixel spread
of G_BA(x_b) relative to real source images. A translator that maps every target image to
near-identical images (collapse) fails one of them; after `collapse_patience` checks the loop
restores the last good checkpoint with lower learning rates, then stops with an error naming the
knobs. The final translator is the result: without target labels there is no honest score to
select a step on.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gandistill import losses, methods
from gandistill.class_guard import ClassGuard, GuardTripped, estimate_teacher_on_target
from gandistill.config import Params
from gandistill.data.dataset import StepBatches, as_float, load_meta, load_split, target_folder
from gandistill.fingerprints import model_digest
from gandistill.loop import LoopResult, warmup_cosine
from gandistill.model_files import load_frozen_teacher
from gandistill.nets import count_parameters
from gandistill.nets.translator import CycleTranslator, PatchDiscriminator, ShapeAdapter
from gandistill.runtime import Runtime, unwrap
from gandistill.stages import pixelda_translator
from gandistill.stages.harness import Training
from gandistill.tracking import Tracker
from gandistill.transfer import TARGET_ORDER_OFFSET, save_translator

log = logging.getLogger(__name__)

def mean_pairwise_distance(images: torch.Tensor, n: int = 256) -> float:
    """Mean pixel L2 distance between distinct images of the first n (a spread measure)."""
    flat = images[:n].flatten(1).float()
    if len(flat) < 2:
        return float("nan")
    d = torch.cdist(flat, flat)
    return float(d.sum() / (len(flat) * (len(flat) - 1)))


@torch.no_grad()
def translator_report(translator: CycleTranslator, teacher: torch.nn.Module, to_a: ShapeAdapter,
                      val_a: torch.Tensor, val_a_labels: torch.Tensor, val_b: torch.Tensor) -> dict[str, float]:
    """Health and usefulness of the translator on held-out images (float pixels), teacher as judge.

    coverage: normalised entropy of the teacher's mean softmax on G_BA(x_b) (→0: one class for all);
    diversity: spread of G_BA(x_b) / spread of real x_a (→0: every x_b mapped to one image);
    semantic_acc: P[teacher(ad(G_AB(x_a))) = y_a]; cycle_acc: P[teacher(G_BA(G_AB(x_a))) = y_a];
    cycle_l1: mean ‖G_BA(G_AB(x_a)) − x_a‖₁ (source labels only: target labels are never read)."""
    fake_a = torch.cat([translator.g_ba(val_b[i : i + 250]) for i in range(0, len(val_b), 250)])
    fake_b = torch.cat([translator.g_ab(val_a[i : i + 250]) for i in range(0, len(val_a), 250)])
    rec_a = torch.cat([translator.g_ba(fake_b[i : i + 250]) for i in range(0, len(fake_b), 250)])
    probs = torch.softmax(teacher(fake_a), dim=1)
    return {
        "coverage": float(losses.class_coverage(probs)),
        "teacher_confidence": float(probs.max(1).values.mean()),
        "diversity": mean_pairwise_distance(fake_a) / max(mean_pairwise_distance(val_a), 1e-8),
        "semantic_acc": float((teacher(to_a(fake_b)).argmax(1) == val_a_labels).float().mean()),
        "cycle_acc": float((teacher(rec_a).argmax(1) == val_a_labels).float().mean()),
        "cycle_l1": float((rec_a - val_a).abs().mean()),
    }


@dataclass
class _Pair:
    """The translator, its two discriminators, their optimisers and schedules, the shape adapters."""

    translator: torch.nn.Module  # CycleTranslator, or its DDP wrapper
    d_a: torch.nn.Module
    d_b: torch.nn.Module
    to_a: ShapeAdapter
    to_b: ShapeAdapter
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    sched_g: Any
    sched_d: Any

    @classmethod
    def build(cls, tp: Any, shape_a: tuple[int, ...], shape_b: tuple[int, ...], runtime: Runtime) -> _Pair:
        translator = runtime.prepare(CycleTranslator(shape_a, shape_b, tp.ngf, tp.n_blocks))
        d_a = runtime.prepare(PatchDiscriminator(shape_a[0], tp.ndf, tp.spectral_norm))
        d_b = runtime.prepare(PatchDiscriminator(shape_b[0], tp.ndf, tp.spectral_norm))
        device = runtime.device
        to_a, to_b = ShapeAdapter(shape_b, shape_a).to(device), ShapeAdapter(shape_a, shape_b).to(device)
        betas = (tp.beta1, tp.beta2)
        opt_g = torch.optim.Adam(translator.parameters(), lr=tp.lr, betas=betas)
        opt_d = torch.optim.Adam([*d_a.parameters(), *d_b.parameters()], lr=tp.lr, betas=betas)
        return cls(translator, d_a, d_b, to_a, to_b, opt_g, opt_d, warmup_cosine(opt_g, tp.steps, final_fraction=0.05),
                   warmup_cosine(opt_d, tp.steps, final_fraction=0.05))


def run(params: Params, data_dir: str | Path, teacher_dir: str | Path, out_dir: str | Path,
        tracker: Tracker | None = None,
        observer: Callable[[int, CycleTranslator], dict[str, float]] | None = None) -> dict[str, Any]:
    """Train the translator; `observer(step, translator)` (the transfer benchmark's probe with
    target labels) runs after each eval, off the clock, and never changes what is trained."""
    training = Training.start("train_translator", "translator", params, tracker)
    if methods.get(training.params.distill.method).translator == "pixelda":
        return pixelda_translator.run(training, data_dir, teacher_dir, out_dir, observer)  # type: ignore[arg-type]
    params, runtime = training.params, training.runtime
    tp = params.translator
    device = runtime.device
    target_dir = target_folder(data_dir)
    meta_a, meta_b = load_meta(data_dir), load_meta(target_dir)
    # Images only: the target split's labels stay on disk (they are for the final report).
    train_a = torch.from_numpy(load_split(data_dir, "train").x).to(device)
    train_b = torch.from_numpy(load_split(target_dir, "train").x).to(device)
    val = load_split(data_dir, "val")
    n_eval = min(tp.eval_samples, len(val))
    val_a = as_float(torch.from_numpy(val.x[:n_eval]).to(device))
    val_a_labels = torch.from_numpy(val.y[:n_eval]).to(device)
    val_b = as_float(torch.from_numpy(load_split(target_dir, "val").x[:n_eval]).to(device))
    teacher = load_frozen_teacher(teacher_dir, device)
    teacher_on_target = estimate_teacher_on_target(teacher, ShapeAdapter(meta_b.input_shape, meta_a.input_shape),
                                                   val_a, val_a_labels, val_b)
    training.log_params()

    pair = _Pair.build(tp, meta_a.input_shape, meta_b.input_shape, runtime)
    batches_a = StepBatches(len(train_a), tp.batch_size, params.seed)
    batches_b = StepBatches(len(train_b), tp.batch_size, params.seed + TARGET_ORDER_OFFSET)
    model = unwrap(pair.translator)
    step_fn = _step(tp, pair, teacher, runtime, lambda step: (as_float(train_a[batches_a.indices(step)]),
                                                               as_float(train_b[batches_b.indices(step)])))

    def eval_fn(step: int) -> dict[str, float]:
        metrics = translator_report(model, teacher, pair.to_a, val_a, val_a_labels, val_b)
        metrics["teacher_target_estimate"] = teacher_on_target
        guard.check(step, metrics["semantic_acc"], teacher_on_target)
        return metrics

    def health_fn(metrics: dict[str, float]) -> str | None:
        if metrics["coverage"] < tp.min_coverage:
            return (f"translator collapse: class coverage of the teacher's labels on G_BA(target) "
                    f"{metrics['coverage']:.3f} below translator.min_coverage={tp.min_coverage}")
        if loop.step >= tp.steps // 4 and metrics["diversity"] < tp.min_diversity:
            return (f"translator collapse: G_BA(target) spread {metrics['diversity']:.3f} of real source images' "
                    f"below translator.min_diversity={tp.min_diversity} (target images mapped to near-identical "
                    "images)")
        return None

    loop = training.loop(
        tp.steps, meta_a.version, meta_a.counts, meta_b.version, meta_b.counts, model_digest(teacher_dir),
        eval_every=tp.eval_every, patience=tp.collapse_patience,
        observer=(lambda step: observer(step, model)) if observer is not None else None,
        collapse_hint=", or raise translator.cycle_weight / translator.semantic_weight, lower translator.lr, "
                      "or lower translator.min_coverage / translator.min_diversity",
    )
    loop.track("translator", pair.translator, pair.opt_g, pair.sched_g)
    loop.track("discriminators", torch.nn.ModuleList([pair.d_a, pair.d_b]), pair.opt_d, pair.sched_d)
    guard = ClassGuard(tp)
    try:
        outcome = loop.run(step_fn, eval_fn, health_fn)
    except GuardTripped:  # stopped early: the translator as it was when the guard tripped
        outcome = LoopResult(loop.step, None, None, {"translator": copy.deepcopy(model.state_dict())}, loop.history,
                             loop.retries)
    return _finish(training, outcome, model, pair, out_dir, guard.verdict())


def _step(tp: Any, pair: _Pair, teacher: torch.nn.Module, runtime: Runtime,
          batch: Callable[[int], tuple[torch.Tensor, torch.Tensor]]) -> Callable[[int], dict[str, Any]]:
    """One G update (L_G of the module docstring), then one update of both discriminators (L_D),
    on the step's batches of A and B."""
    model, d_a, d_b, to_a, to_b = unwrap(pair.translator), pair.d_a, pair.d_b, pair.to_a, pair.to_b
    opt_g, opt_d, sched_g, sched_d = pair.opt_g, pair.opt_d, pair.sched_g, pair.sched_d

    def step_fn(step: int) -> dict[str, Any]:
        real_a, real_b = batch(step)
        with runtime.autocast():
            fake_b, fake_a = model.g_ab(real_a), model.g_ba(real_b)
            adv = losses.lsgan_g_loss(d_b(fake_b)) + losses.lsgan_g_loss(d_a(fake_a))
            rec_a = model.g_ba(fake_b)
            cycle = (losses.cycle_consistency(real_a, rec_a)
                     + losses.cycle_consistency(real_b, model.g_ab(fake_a)))
            loss_g = adv + tp.cycle_weight * cycle
            terms = {"loss_g_adv": adv.detach(), "loss_cycle": cycle.detach()}
            if tp.identity_weight > 0:
                identity = (losses.identity_mapping(real_b, model.g_ab(to_a(real_b)))
                            + losses.identity_mapping(real_a, model.g_ba(to_b(real_a))))
                loss_g = loss_g + tp.identity_weight * identity
                terms["loss_identity"] = identity.detach()
            if tp.semantic_weight > 0:
                with torch.no_grad():
                    source_labels = teacher(real_a).argmax(1)
                judged = rec_a if tp.semantic_on == "cycle" else to_a(fake_b)
                semantic = losses.semantic_consistency(teacher(judged), source_labels)
                loss_g = loss_g + tp.semantic_weight * semantic
                terms["loss_semantic"] = semantic.detach()
            if tp.target_entropy_weight > 0:
                t_fake_a = teacher(fake_a)
                confidence, balance = losses.dafl_onehot(t_fake_a), losses.information_entropy(t_fake_a)
                loss_g = loss_g + tp.target_entropy_weight * (confidence + balance)
                terms |= {"loss_target_confidence": confidence.detach(), "loss_target_balance": balance.detach()}
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        sched_g.step()
        with runtime.autocast():
            loss_d = (losses.lsgan_d_loss(d_a(real_a), d_a(fake_a.detach()))
                      + losses.lsgan_d_loss(d_b(real_b), d_b(fake_b.detach())))
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        sched_d.step()
        return terms | {"loss_g": loss_g.detach(), "loss_d": loss_d.detach()}

    return step_fn


def _finish(training: Training, outcome: LoopResult, model: CycleTranslator, pair: _Pair,
            out_dir: str | Path, guard: dict[str, Any]) -> dict[str, Any]:
    """The final translator (no target labels: no honest score to select a step on)."""
    model = model.cpu()
    model.load_state_dict(outcome.best_state["translator"])
    save_translator(model, out_dir)
    final = outcome.history[-1] if outcome.history else {}
    result = {
        "translator": "cyclegan", "steps": outcome.steps, "retries": outcome.retries, "guard": guard,
        "resumed_from": outcome.resumed_from,
        "translator_params": count_parameters(model),
        "discriminator_params": count_parameters(pair.d_a) + count_parameters(pair.d_b),
        "shape_a": list(model.shape_a), "shape_b": list(model.shape_b),
        **{f"final_{k}": v for k, v in final.items() if k != "step"},
        "history": outcome.history,
    }
    training.finish(out_dir, result, {k: v for k, v in result.items() if k.startswith("final_")})
    log.info("[train_translator] %d steps: coverage %.3f, diversity %.3f, semantic acc %.4f, cycle acc %.4f in %.0f s",
             outcome.steps, final.get("coverage", float("nan")), final.get("diversity", float("nan")),
             final.get("semantic_acc", float("nan")), final.get("cycle_acc", float("nan")), result["wall_s"])
    return result
