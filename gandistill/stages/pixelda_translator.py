"""train_translator for distill.method=pixelda: PixelDA's source → target generator, trained with a
domain discriminator and a task classifier (the losses: gandistill.pixelda).

Held-out checks every `translator.eval_every` steps, none of which reads a target label:

- class_preservation: P[teacher(ad⁻¹(G(x_a, z))) = y_a] on source val images — does the frozen
  teacher still read the source class in the translated image (through the fixed shape adapter)?
- teacher_target_agreement: P[T(x_b) = teacher(ad⁻¹(x_b))] on target val images — how often the
  task classifier and the source-only teacher agree about real target images;
- task_source_acc / task_translated_acc: T on source images / on their translations (source labels);
- coverage: normalised entropy of T's mean prediction on target images (→ 0: one class for all);
- diversity: spread of G(x_a, z) / spread of real target images (→ 0: one image for all).

The class guard (`translator.guard`, see `guard_symptom`) compares the translator's class check
with the teacher's own reading of raw target images; collapse (coverage, diversity) is handled by
the training loop like every stage's (restore, lower learning rates, then stop).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from gandistill import archs, losses
from gandistill.class_guard import ClassGuard, GuardTripped, estimate_teacher_on_target
from gandistill.data.dataset import StepBatches, as_float, load_meta, load_split, target_folder
from gandistill.evaluation.predict import predict_logits
from gandistill.fingerprints import model_digest
from gandistill.loop import warmup_cosine
from gandistill.model_files import load_frozen_teacher
from gandistill.nets import build_classifier, count_parameters
from gandistill.nets.pixelda import NoisyDiscriminator, PixelDAGenerator
from gandistill.nets.translator import ShapeAdapter
from gandistill.pixelda import PixelDATranslator, PixelDAWeights, pixelda_step
from gandistill.stages.harness import Training
from gandistill.transfer import TARGET_ORDER_OFFSET, save_pixelda

log = logging.getLogger(__name__)


def task_arch_for(name: str, shape: tuple[int, int, int]) -> str:
    """translator.task_arch: 'auto' = LeNet-5 where it fits the target's shape, else the auto student."""
    if name != archs.AUTO:
        return name
    c, h, w = shape
    if archs.LENET_SIDES[0] <= min(h, w) and max(h, w) <= archs.LENET_SIDES[1]:
        return "lenet5"
    return archs.auto_pair(c, h, w)[1]


def spread(images: torch.Tensor, n: int = 256) -> float:
    """Mean pixel L2 distance between distinct images of the first n."""
    flat = images[:n].flatten(1).float()
    return float(torch.cdist(flat, flat).sum() / max(1, len(flat) * (len(flat) - 1)))


def run(training: Training, data_dir: str | Path, teacher_dir: str | Path, out_dir: str | Path,
        observer: Callable[[int, PixelDATranslator], dict[str, float]] | None = None) -> dict[str, Any]:
    params, runtime = training.params, training.runtime
    tp = params.translator
    device = runtime.device
    target_dir = target_folder(data_dir)
    meta_a, meta_b = load_meta(data_dir), load_meta(target_dir)
    shape_a, shape_b = meta_a.input_shape, meta_b.input_shape
    teacher = load_frozen_teacher(teacher_dir, device)
    # Images only from the target domain: its labels stay on disk (they are for the final report).
    train_a = torch.from_numpy(load_split(data_dir, "train").x).to(device)
    train_b = torch.from_numpy(load_split(target_dir, "train").x).to(device)
    labels_a = predict_logits(teacher, train_a, device=device).argmax(1).to(device)  # the teacher holds the label
    val = load_split(data_dir, "val")
    n_eval = min(tp.eval_samples, len(val))
    val_a = as_float(torch.from_numpy(val.x[:n_eval]).to(device))
    val_a_labels = torch.from_numpy(val.y[:n_eval]).to(device)
    val_b = as_float(torch.from_numpy(load_split(target_dir, "val").x[:n_eval]).to(device))
    to_a = ShapeAdapter(shape_b, shape_a).to(device)
    with torch.no_grad():
        teacher_on_b = teacher(to_a(val_b)).argmax(1)  # the source-only teacher's reading of raw target images
    teacher_on_target = estimate_teacher_on_target(teacher, to_a, val_a, val_a_labels, val_b)
    training.log_params()

    task_arch = task_arch_for(tp.task_arch, shape_b)
    generator = PixelDAGenerator(shape_a, shape_b, tp.width, tp.n_blocks, tp.nz)
    task = build_classifier(task_arch, shape_b[0], shape_b[1:], meta_b.num_classes, mean=meta_b.mean, std=meta_b.std)
    translator = PixelDATranslator(generator, task).to(device)
    discriminator = NoisyDiscriminator(shape_b, tp.ndf, tp.d_noise_std, tp.d_dropout).to(device)
    betas = (tp.beta1, tp.beta2)
    opt_g = torch.optim.Adam(generator.parameters(), lr=tp.lr, betas=betas)
    opt_dt = torch.optim.Adam([*discriminator.parameters(), *task.parameters()], lr=tp.lr, betas=betas)
    sched_g = warmup_cosine(opt_g, tp.steps, final_fraction=0.05)
    sched_dt = warmup_cosine(opt_dt, tp.steps, final_fraction=0.05)
    batches_a = StepBatches(len(train_a), tp.batch_size, params.seed)
    batches_b = StepBatches(len(train_b), tp.batch_size, params.seed + TARGET_ORDER_OFFSET)
    weights = PixelDAWeights(task=tp.task_weight)
    target_spread = spread(val_b)

    def step_fn(step: int) -> dict[str, Any]:
        idx = batches_a.indices(step)
        with runtime.autocast():
            terms = pixelda_step(translator, discriminator, teacher, opt_g, opt_dt, as_float(train_a[idx]),
                                 labels_a[idx], as_float(train_b[batches_b.indices(step)]), weights, to_a)
        sched_g.step()
        sched_dt.step()
        return terms

    def eval_fn(step: int) -> dict[str, float]:
        noise = generator.sample_noise(len(val_a), device, torch.Generator(device).manual_seed(step))
        fake = generator(val_a, noise)
        task_b = task(val_b)
        metrics = {
            "class_preservation": float((teacher(to_a(fake)).argmax(1) == val_a_labels).float().mean()),
            "teacher_target_estimate": teacher_on_target,
            "teacher_target_agreement": float((task_b.argmax(1) == teacher_on_b).float().mean()),
            "task_source_acc": float((task(generator.adapt(val_a)).argmax(1) == val_a_labels).float().mean()),
            "task_translated_acc": float((task(fake).argmax(1) == val_a_labels).float().mean()),
            "coverage": float(losses.class_coverage(torch.softmax(task_b, 1))),
            "diversity": spread(fake) / max(target_spread, 1e-8),
        }
        guard.check(step, metrics["class_preservation"], teacher_on_target)
        return metrics

    def health_fn(metrics: dict[str, float]) -> str | None:
        if metrics["coverage"] < tp.min_coverage:
            return (f"translator collapse: class coverage of the task classifier on target images "
                    f"{metrics['coverage']:.3f} below translator.min_coverage={tp.min_coverage}")
        if loop.step >= tp.steps // 4 and metrics["diversity"] < tp.min_diversity:
            return (f"translator collapse: spread of G(x_a, z) {metrics['diversity']:.3f} of real target images' "
                    f"below translator.min_diversity={tp.min_diversity} (source images mapped to near-identical "
                    "images)")
        return None

    loop = training.loop(
        tp.steps, "pixelda", meta_a.version, meta_a.counts, meta_b.version, meta_b.counts, model_digest(teacher_dir),
        name="train_translator[pixelda]", eval_every=tp.eval_every, patience=tp.collapse_patience,
        observer=(lambda step: observer(step, translator)) if observer is not None else None,
        collapse_hint=", or raise translator.task_weight, lower translator.lr, or lower translator.min_coverage / "
                      "translator.min_diversity",
    )
    loop.track("translator", translator, opt_g, sched_g)
    loop.track("discriminator_task", discriminator, opt_dt, sched_dt)
    guard = ClassGuard(tp)
    try:
        outcome = loop.run(step_fn, eval_fn, health_fn)
        state, history, steps = outcome.best_state["translator"], outcome.history, outcome.steps
        retries, resumed_from = outcome.retries, outcome.resumed_from
    except GuardTripped:  # stopped early: the translator as it was when the guard tripped
        state, history, steps = translator.state_dict(), loop.history, loop.step
        retries, resumed_from = loop.retries, None
    translator = translator.cpu()
    translator.load_state_dict(state)
    save_pixelda(translator, task_arch, meta_b, out_dir)
    final = history[-1] if history else {}
    result = {
        "translator": "pixelda", "steps": steps, "retries": retries, "guard": guard.verdict(),
        "resumed_from": resumed_from, "task_arch": task_arch,
        "translator_params": count_parameters(generator), "task_params": count_parameters(task),
        "discriminator_params": count_parameters(discriminator),
        "shape_a": list(shape_a), "shape_b": list(shape_b),
        **{f"final_{k}": v for k, v in final.items() if k != "step"},
        "history": history,
    }
    training.finish(out_dir, result, {k: v for k, v in result.items() if k.startswith("final_")})
    log.info("[train_translator] pixelda %d steps: class preservation %.4f, task/teacher agreement on target %.4f, "
             "coverage %.3f in %.0f s", steps, final.get("class_preservation", float("nan")),
             final.get("teacher_target_agreement", float("nan")), final.get("coverage", float("nan")),
             result["wall_s"])
    return result
