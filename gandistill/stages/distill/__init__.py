"""distill: train the small student from the teacher, by the method in `distill.method`.

Every method shares one code path — the same student, optimiser, schedule, training loop,
evaluation and add-on terms — and differs only in where a batch comes from and which loss it
gets. What a method needs and promises is its record in `gandistill.methods`; its math is a
step factory in the module of its family, registered in that module's `STEPS`:

- `supervised`: scratch, kd, adversarial — the student learns from real training images;
- `generated`: gan, gan_real, noise — from the trained cGAN's samples (mined, mixed) or noise;
- `data_free`: data_free, dafl — from a generator trained in this stage, never on data;
- `cross_domain`: cyclegan, pixelda, target_kd, source_augmented, target_supervised — for a target
  domain the teacher never saw.

Shared by all: `context` (the Context a step reads and the pieces of one student update),
`addons` (FitNets hint, attention transfer, RKD on features, for any method), `selection` (how
a step is selected, what is watched while training). After training, the selected student is
scored once on the real val and test splits (`val_acc`, `test_acc` in result.json and MLflow);
those numbers are reported, never fed back into training or selection.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from gandistill import archs, budget_advice, methods, qat
from gandistill.config import Params
from gandistill.data.dataset import DatasetMeta, StepBatches, load_meta, load_split, to_tensors
from gandistill.errors import ConfigError
from gandistill.evaluation.predict import accuracy, predict_logits
from gandistill.fingerprints import model_digest
from gandistill.loop import EMA, LoopResult
from gandistill.model_files import (
    load_discriminator,
    load_frozen_teacher,
    load_generator,
    save_classifier,
    save_free_generator,
)
from gandistill.nets import build_classifier, count_parameters
from gandistill.results import read_result
from gandistill.runtime import unwrap
from gandistill.stages.distill import cross_domain, data_free, generated, supervised
from gandistill.stages.distill.addons import AddOns
from gandistill.stages.distill.context import Context, StepFactory, build_schedule, build_student_optimizer
from gandistill.stages.distill.selection import eval_function
from gandistill.stages.harness import Training
from gandistill.tracking import Tracker
from gandistill.transfer import method_data_dir

log = logging.getLogger(__name__)

MEAN_TEACHER_DECAY = 0.99  # French et al. 2018: 0.99 (MNIST → SVHN) to 0.999

# The math of each method, from its family's module (a test checks it matches gandistill.methods).
STEPS: dict[str, StepFactory] = {**supervised.STEPS, **generated.STEPS, **data_free.STEPS, **cross_domain.STEPS}


def run(params: Params, data_dir: str | Path, teacher_dir: str | Path, generator_dir: str | Path | None,
        out_dir: str | Path, tracker: Tracker | None = None,
        observer: Callable[[int, nn.Module], dict[str, float]] | None = None,
        translator_dir: str | Path | None = None) -> dict[str, Any]:
    """Train the student; `observer(step, student)` (the benchmark's test probe) runs after
    each eval, off the clock and outside model selection."""
    training = Training.start("distill", "distill", params, tracker)
    dp = training.params.distill
    method = methods.get(dp.method)
    _check_inputs(method, generator_dir, translator_dir)
    source_dir, data_dir = Path(data_dir), method_data_dir(data_dir, dp.method)  # target methods: data/target
    meta = load_meta(data_dir)
    archs.resolve_student(training.params, *meta.input_shape)  # 'auto' → the student for its domain's shape
    # The translator's class guard tripped (gandistill.class_guard): the student learns by the fallback
    # method's recipe instead, without the translator; the result says so.
    guard = cross_domain.guard_fallback(method, translator_dir)
    learns_as = methods.get(guard["fallback"]) if guard else method
    if guard:
        translator_dir = None
        log.warning("[distill] %s: the translator's class guard tripped (%s); the student learns as %s",
                    dp.method, guard["message"], learns_as.name)
    ctx, addons = _context(training, learns_as, meta, data_dir, source_dir, teacher_dir, generator_dir,
                           translator_dir)
    step_fn = STEPS[learns_as.name](ctx, addons)
    fake_quant = qat.LastSteps(unwrap(ctx.student), dp.steps, dp.qat_fraction, ctx.runtime.world) if dp.qat else None
    if fake_quant is not None:  # quantisation-aware: the last qat_fraction of steps see INT8 rounding
        step_fn = fake_quant.wrap(step_fn)
    training.log_params()
    eval_fn = eval_function(ctx, method, data_dir)
    scored = unwrap(ctx.scored_student)
    # What the student depends on besides its params: the data and the models it learns from, by file
    # digest (gan.* is not read here, so a new gan.steps leaves a kd student's task cached).
    inputs = [meta.version, meta.counts, model_digest(teacher_dir),
              model_digest(generator_dir) if generator_dir is not None and method.needs_trained_gan else ""]
    if translator_dir is not None:
        inputs.append(model_digest(translator_dir))
    loop = training.loop(
        dp.steps, *inputs, name=f"distill[{dp.method}]", eval_every=dp.eval_every,
        select=None if method.selection == "final" else (method.selection, "max"), samples_per_step=dp.batch_size,
        observer=(lambda step: observer(step, scored)) if observer is not None else None,
        select_from=fake_quant.start if fake_quant is not None else 0,  # select a student that saw QAT
    )
    loop.track("student", ctx.student, ctx.optimizer, ctx.scheduler, ema=ctx.student_ema)
    if unwrap(addons).active:
        loop.track("addons", addons)
    for name, module in ctx.extra_modules.items():
        loop.track(name, module, ctx.extra_optimizers.get(name), ctx.extra_schedulers.get(name))
    outcome = loop.run(step_fn, eval_fn)
    if fake_quant is not None:
        fake_quant.remove()  # the result is a float student; export quantises it for real
    if not training.is_main:
        return training.follower(outcome)
    extra = {"learned_as": learns_as.name, "guard": guard} if guard else {}
    return _finish(training, ctx, learns_as, outcome, data_dir, out_dir, extra,
                   _teacher_and_generator(learns_as, teacher_dir, generator_dir))


def _teacher_and_generator(method: methods.Method, teacher_dir: str | Path,
                           generator_dir: str | Path | None) -> tuple[float | None, float | None]:
    """What budget_advice weighs the student against: the teacher's validation accuracy (None across
    domains: it is the source's) and the trained generator's per-class recall (None without one). The
    advice is optional: an unreadable result.json drops it rather than fail a student already trained."""
    def field(folder: str | Path | None, key: str) -> float | None:
        try:
            return read_result(folder).get(key) if folder is not None else None
        except (OSError, ValueError):
            return None

    teacher_val = field(teacher_dir, "val_acc") if method.domain == "source" else None
    recall = field(generator_dir, "selected_recall") if method.needs_trained_gan else None
    return teacher_val, recall


def _check_inputs(method: methods.Method, generator_dir: str | Path | None,
                  translator_dir: str | Path | None) -> None:
    if method.needs_trained_gan and generator_dir is None:
        raise ConfigError(f"distill.method={method.name} needs the generator from train_gan")
    if method.needs_translator and translator_dir is None:
        raise ConfigError(f"distill.method={method.name} needs the translator from train_translator")


def _context(training: Training, method: methods.Method, meta: DatasetMeta, data_dir: Path, source_dir: Path,
             teacher_dir: str | Path, generator_dir: str | Path | None,
             translator_dir: str | Path | None) -> tuple[Context, AddOns]:
    """The student, its optimiser and schedule, the teacher signal and the batch sources (in this
    order: the student's initial weights are drawn from the seeded RNG)."""
    params, runtime, device = training.params, training.runtime, training.device
    dp = params.distill
    real = to_tensors(load_split(data_dir, "train"), device) if method.real_images != "none" else None
    teacher = load_frozen_teacher(teacher_dir, device)
    transfer_parts = cross_domain.transfer_parts(params, method, teacher, source_dir, meta, translator_dir, device,
                                                 real)
    teacher = transfer_parts.pop("teacher", teacher)
    student = runtime.prepare(build_classifier(dp.student_arch, meta.channels, (meta.height, meta.width),
                                               meta.num_classes, mean=meta.mean, std=meta.std))
    addons = runtime.prepare(AddOns(params, unwrap(student), teacher, meta, runtime.world))
    optimizer = build_student_optimizer(dp, [*student.parameters(), *addons.parameters()])
    scheduler = build_schedule(optimizer, dp.schedule, dp.steps, warmup_steps=min(200, dp.steps // 10))
    generator = load_generator(generator_dir).to(device).eval() if method.needs_trained_gan else None  # type: ignore[arg-type]
    batches = (StepBatches(len(real[1]), dp.batch_size, params.seed, runtime.world, "distill.batch_size")
               if real is not None else None)
    # pixelda's mean teacher is the student's EMA: it pseudo-labels target images and is what is scored.
    ema_decay = dp.student_ema or (MEAN_TEACHER_DECAY if method.translator == "pixelda"
                                   and dp.pseudo_labels == "mean_teacher" else None)
    ctx = Context(params, runtime, meta, teacher, student, optimizer, scheduler, real, batches, generator,
                  student_ema=EMA(student, ema_decay) if ema_decay else None, **transfer_parts)
    if generator is not None and dp.adaptive_every:
        ctx.generator_discriminator = load_discriminator(generator_dir)  # type: ignore[arg-type]
    return ctx, addons


def _finish(training: Training, ctx: Context, method: methods.Method, outcome: LoopResult, data_dir: Path,
            out_dir: str | Path, extra: dict[str, Any],
            teacher_and_generator: tuple[float | None, float | None]) -> dict[str, Any]:
    """The selected student (trained by `method`'s recipe: distill.method's, or the guard's fallback)
    scored once on val and test, saved (with a data-free method's generator); `extra` joins the result,
    and budget_advice's line when the student ends far under its teacher (console + result)."""
    dp = training.params.distill
    student = unwrap(ctx.student).cpu().eval()
    student.load_state_dict(outcome.best_state["student_ema" if ctx.student_ema is not None else "student"])
    test_x, test_y = to_tensors(load_split(data_dir, "test"))
    val_x, val_y = to_tensors(load_split(data_dir, "val"))
    val_acc = accuracy(predict_logits(student, val_x), val_y)
    test_acc = accuracy(predict_logits(student, test_x), test_y)
    select_key = method.selection
    result = {
        "method": dp.method, "arch": dp.student_arch, "steps": outcome.steps, "processes": training.runtime.world_size,
        "best_step": outcome.steps if select_key == "final" else outcome.best_step,
        "selected_on": select_key, "selected_value": outcome.best_value, "retries": outcome.retries,
        "resumed_from": outcome.resumed_from, "val_acc": val_acc, "test_acc": test_acc,
        "params": count_parameters(student),
        "real_images_seen_by_student": real_images_seen(dp.method, dp.steps, dp.batch_size, dp.real_fraction,
                                                        ctx.meta.counts.get("train", 0)),
        "history": outcome.history, **extra,
    }
    said = budget_advice.advice(val_acc, teacher_and_generator[0], outcome.history, dp.steps, teacher_and_generator[1])
    if said:
        result["advice"] = said
        log.warning("[distill] %s", said)
    save_classifier(student, dp.student_arch, ctx.meta, out_dir, extra={"method": dp.method})
    if "generator" in outcome.best_state and not method.needs_trained_gan:
        # data-free: keep the generator the student learned from (export calibrates INT8 on its samples)
        save_free_generator(unwrap(ctx.generator), outcome.best_state["generator"], out_dir)
    training.finish(out_dir, result, {"final_val_acc": val_acc, "test_acc": test_acc,
                                      "params": float(result["params"])})
    log.info("[distill] %s → %s: val %.4f, test %.4f (%d params, selected at step %s on %s)", dp.method,
             dp.student_arch, val_acc, test_acc, result["params"], outcome.best_step, select_key)
    return result


def real_images_seen(method: str, steps: int, batch_size: int, real_fraction: float, n_train: int) -> int:
    """How many distinct real training images the student's updates could have touched."""
    share = methods.get(method).real_images
    if share == "none":
        return 0
    per_step = batch_size if share == "all" else max(1, round(batch_size * real_fraction))
    return min(n_train, steps * per_step)


__all__ = ["STEPS", "AddOns", "Context", "real_images_seen", "run"]
