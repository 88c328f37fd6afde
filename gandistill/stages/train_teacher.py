"""train_teacher: train the teacher classifier on the train split (or import one).

Cross-entropy with mild affine augmentation, AdamW and warm-up + cosine schedule; the
checkpoint with the best validation accuracy is kept (selection never looks at test).
An imported teacher (TorchScript or state dict) is checked against the data's input shape
and class count, evaluated, and passed on unchanged.

A teacher that cannot teach — below `teaching_threshold` on validation — stops the run here,
before the GAN and the student spend their budget; the outputs are built in a staging folder,
so a teacher that fails leaves none.
"""

from __future__ import annotations

import logging
import math
import shutil
import zipfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gandistill import archs, methods
from gandistill.augment import random_affine
from gandistill.config import Params
from gandistill.data.dataset import DatasetMeta, StepBatches, as_float, load_meta, load_split, to_tensors
from gandistill.distributed import World
from gandistill.errors import ConfigError, DataError, TrainingError
from gandistill.evaluation.predict import accuracy, predict_logits
from gandistill.files import staged_dir
from gandistill.loop import LoopResult, warmup_cosine
from gandistill.model_files import save_classifier
from gandistill.nets import build_classifier, count_parameters
from gandistill.runtime import fused, unwrap
from gandistill.stages.harness import Training
from gandistill.tracking import Tracker
from gandistill.transfer import method_data_dir

log = logging.getLogger(__name__)


FEATURE_NEEDS = {  # distill settings that read teacher.forward_features (not just logits)
    "distill.method": lambda p: methods.get(p.distill.method).needs_teacher_features,
    "distill.hint_weight": lambda p: p.distill.hint_weight > 0,
    "distill.attention_weight": lambda p: p.distill.attention_weight > 0,
    "distill.rkd_distance_weight": lambda p: p.distill.rkd_distance_weight > 0,
    "distill.rkd_angle_weight": lambda p: p.distill.rkd_angle_weight > 0,
}


class _LogitsOnly(nn.Module):
    """Hides a TorchScript teacher's `forward_features` when it is not gandistill's
    (logits, [features…]) contract (e.g. timm's returns a feature map): stages then treat
    the teacher as logits-only instead of unpacking the wrong thing."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


def _has_feature_contract(model: nn.Module, probe: torch.Tensor, logits: torch.Tensor) -> bool:
    if not hasattr(model, "forward_features"):
        return False
    try:
        with torch.no_grad():
            out = model.forward_features(probe)
    except Exception:
        return False
    return (isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], torch.Tensor)
            and isinstance(out[1], list) and len(out[1]) > 0 and all(isinstance(f, torch.Tensor) for f in out[1])
            and out[1][-1].ndim == 2 and out[0].shape == logits.shape and torch.allclose(out[0], logits, atol=1e-5))


def _load_state_dict_teacher(params: Params, meta: DatasetMeta, path: Path) -> nn.Module:
    tp = params.teacher
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        hint = " (a TorchScript file? set teacher.source=torchscript)" if zipfile.is_zipfile(path) else ""
        raise DataError(f"teacher.path={path}: cannot load as a state dict{hint}: {exc}") from None
    if not isinstance(blob, dict):
        raise DataError(f"teacher.path={path}: holds a {type(blob).__name__}, not a state dict; save "
                        "model.state_dict() with torch.save, or export TorchScript and set teacher.source=torchscript")
    if "state_dict" in blob and isinstance(blob["state_dict"], dict):  # a gandistill model.pt or a training checkpoint
        saved_arch = blob.get("arch")
        if tp.arch == archs.AUTO and isinstance(saved_arch, str):
            tp.arch = saved_arch  # the file names the architecture it was saved as
        if isinstance(saved_arch, str) and saved_arch != tp.arch:
            raise ConfigError(f"teacher.path={path} holds a '{saved_arch}' but teacher.arch={tp.arch}; "
                              f"set teacher.arch={saved_arch}")
        blob = blob["state_dict"]
    if tp.arch == archs.AUTO:  # plain weights: the data's default teacher (a mismatch is reported below)
        tp.arch = archs.auto_pair(*meta.input_shape)[0]
    state = {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in blob.items()}  # DDP / compile
    model = build_classifier(tp.arch, meta.channels, (meta.height, meta.width), meta.num_classes,
                             mean=meta.mean, std=meta.std)
    expected = model.state_dict()
    head = next(reversed([k for k in expected if k.endswith(".weight") and expected[k].ndim == 2]))
    if head in state and state[head].shape[0] != meta.num_classes:
        raise DataError(f"teacher.path={path}: the teacher has {state[head].shape[0]} classes but the data has "
                        f"{meta.num_classes} ({', '.join(meta.class_names[:10])}); use a teacher trained on "
                        "these classes, in this order")
    # Normalisation buffers missing (weights trained elsewhere): the data's train statistics stand in.
    missing = sorted(set(expected) - set(state) - {"mean", "std"})
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        detail = "; ".join(f"{label}: {', '.join(keys[:4])}{' …' if len(keys) > 4 else ''}"
                           for label, keys in (("missing", missing), ("unexpected", unexpected),
                                               ("shape differs", wrong)) if keys)
        raise DataError(f"teacher.path={path}: weights do not fit teacher.arch={tp.arch} on "
                        f"{'×'.join(map(str, meta.input_shape))} images ({detail}); set teacher.arch to the "
                        "architecture they were trained as, and data.resize to their input size")
    model.load_state_dict(state, strict=False)
    return model


def _import_teacher(params: Params, data_dir: Path, out_dir: Path) -> torch.nn.Module:
    """Load a user-supplied teacher, check it fits the data, store it in out_dir.

    The teacher must take raw pixels in [0, 1] (N×C×H×W, normalising internally, as
    gandistill's own models do) and return one logit per class, in `class_names` order.
    """
    tp = params.teacher
    meta = load_meta(data_dir)
    path = Path(tp.path or "")
    if not path.is_file():
        raise DataError(f"teacher.path={path}: file not found (teacher.source={tp.source}); give the path of "
                        "the file to import")
    out_dir.mkdir(parents=True, exist_ok=True)
    if tp.source == "torchscript":
        try:
            model: nn.Module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            hint = (" (a state dict? set teacher.source=state_dict and teacher.arch)"
                    if zipfile.is_zipfile(path) or path.suffix in (".pt", ".pth") else "")
            raise DataError(f"teacher.path={path}: not a TorchScript file{hint}: {str(exc).splitlines()[0]}") from None
    else:
        model = _load_state_dict_teacher(params, meta, path)
    model.eval()  # before probing: a train-mode probe would overwrite BatchNorm running statistics
    shape = "×".join(map(str, meta.input_shape))
    probe = torch.rand(2, *meta.input_shape, generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            out = model(probe)
    except Exception as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise DataError(f"teacher {path} does not accept the data's images (2×{shape}, raw pixels in [0, 1]): "
                        f"{first}; use a teacher for {shape} inputs or set data.resize to its input size") from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise DataError(f"teacher {path} returns {got} for a batch of 2, not N×classes logits; export a model "
                        "whose forward returns logits")
    if out.shape[1] != meta.num_classes:
        raise DataError(f"teacher {path} outputs {out.shape[1]} logits per image but the data has "
                        f"{meta.num_classes} classes ({', '.join(meta.class_names[:10])}); use a teacher "
                        "trained on these classes, in this order")
    if not torch.isfinite(out).all():
        raise DataError(f"teacher {path} returns non-finite logits on random images; check the exported model")
    if tp.source == "torchscript":
        if _has_feature_contract(model, probe, out):
            shutil.copyfile(path, out_dir / "model.ts")
        else:
            needs = [key for key, needed in FEATURE_NEEDS.items() if needed(params)]
            if needs:
                raise ConfigError(f"{', '.join(needs)} need teacher features, but the TorchScript teacher {path} "
                                  "provides logits only; use distill.method=gan, kd or data_free with the feature "
                                  "weights at 0, or import the teacher as teacher.source=state_dict")
            torch.jit.save(torch.jit.script(_LogitsOnly(model)), str(out_dir / "model.ts"))
    else:
        save_classifier(model, tp.arch, meta, out_dir)
    return model


# How far from chance (1/K) towards a perfect score a teacher must be to teach, by default. A
# quarter: the bar catches a broken teacher (a tiny budget, shuffled labels, the wrong input
# normalisation or class order: near chance) without stopping a merely weak one on a hard dataset
# (100 classes: 25.75 %). It does not read promote.min_accuracy: train_teacher's kfp cache key
# would then change with the promotion bar and a new bar would re-run the whole DAG on a cluster.
DEFAULT_TEACHING_FRACTION = 0.25


def teaching_threshold(min_accuracy: float | None, num_classes: int) -> float:
    """The validation accuracy a teacher needs to teach: `teacher.min_accuracy`, or by default a
    quarter of the way from chance (1/K) to 100 % (MNIST: 32.5 %)."""
    if min_accuracy is not None:
        return min_accuracy
    chance = 1.0 / num_classes
    return chance + DEFAULT_TEACHING_FRACTION * (1.0 - chance)


def check_can_teach(params: Params, val_acc: float, meta: DatasetMeta) -> None:
    """Stop a run whose teacher cannot teach, naming its accuracy, the bar and the knobs."""
    tp = params.teacher
    bar = teaching_threshold(tp.min_accuracy, meta.num_classes)
    if val_acc >= bar:
        return
    why = ("teacher.min_accuracy" if tp.min_accuracy is not None else
           f"teacher.min_accuracy: null = a quarter of the way from chance ({1 / meta.num_classes:.1%}) to 100 %")
    if tp.source == "train":
        raise TrainingError(f"the teacher reaches {val_acc:.1%} on the validation split, below the "
                            f"{bar:.1%} it needs to teach ({why}): the GAN and the student would spend their budget "
                            "on a student that can learn no more than its teacher knows. Train it longer "
                            f"(teacher.epochs={tp.epochs:g}), check the labels, or set teacher.min_accuracy=0 to go on "
                            "anyway")
    raise DataError(f"teacher.path={tp.path}: the imported teacher scores {val_acc:.1%} on the validation split, "
                    f"below the {bar:.1%} it needs to teach ({why}); near chance it usually takes its input "
                    f"normalised differently (it must take raw [0, 1] pixels) or orders its classes differently "
                    f"(expected {', '.join(meta.class_names[:10])}). Set teacher.min_accuracy=0 to go on anyway")


def run(params: Params, data_dir: str | Path, out_dir: str | Path, tracker: Tracker | None = None) -> dict[str, Any]:
    """Train or import the teacher into `out_dir`: built in a staging folder and published whole
    (rank 0 writes; other data-parallel ranks write nothing)."""
    if not World.from_env().is_main:
        return _train_or_import(params, data_dir, out_dir, tracker)
    with staged_dir(out_dir) as staging:
        return _train_or_import(params, data_dir, staging, tracker)


def _train_or_import(params: Params, data_dir: str | Path, out_dir: str | Path,
                     tracker: Tracker | None) -> dict[str, Any]:
    training = Training.start("train_teacher", "teacher", params, tracker)
    params, runtime = training.params, training.runtime
    tp = params.teacher
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    meta = load_meta(data_dir)
    student_meta = load_meta(method_data_dir(data_dir, params.distill.method))  # a cross-domain student: the target's
    # The fit check builds both networks, drawing their weights from the seeded RNG: it stays here,
    # before the teacher is built, so a seed keeps giving the same teacher.
    archs.check_fit(params, *meta.input_shape, meta.num_classes, student_shape=student_meta.input_shape)
    # 'auto' (when `gandistill run` could not decide it from the data: a submitted run, a stage called
    # on its own) → the teacher for this shape, before the fingerprint.
    archs.resolve_teacher(params, *meta.input_shape)
    val_x, val_y = to_tensors(load_split(data_dir, "val"), runtime.device)
    training.log_params()

    if tp.source != "train":
        if not training.is_main:
            return training.follower()  # nothing to train: rank 0 imports and writes
        model = _import_teacher(params, data_dir, out_dir)
        result: dict[str, Any] = {"source": tp.source, "steps": 0, "retries": 0}
    else:
        outcome, model = _train(training, meta, data_dir, val_x, val_y)
        if not training.is_main:
            return training.follower(outcome)
        save_classifier(model, tp.arch, meta, out_dir)
        result = {"source": "train", "steps": outcome.steps, "processes": runtime.world_size,
                  "best_step": outcome.best_step,
                  "retries": outcome.retries, "resumed_from": outcome.resumed_from, "history": outcome.history}
    return _finish(training, model, meta, data_dir, out_dir, result, val_x.cpu(), val_y.cpu())


def _train(training: Training, meta: DatasetMeta, data_dir: Path, val_x: torch.Tensor,
           val_y: torch.Tensor) -> tuple[LoopResult, nn.Module]:
    """Cross-entropy with mild affine augmentation, AdamW, warm-up + cosine; the step with the
    best validation accuracy is the result."""
    params, runtime = training.params, training.runtime
    tp = params.teacher
    train_x, train_y = to_tensors(load_split(data_dir, "train"), runtime.device)
    model = build_classifier(tp.arch, meta.channels, (meta.height, meta.width), meta.num_classes,
                             mean=meta.mean, std=meta.std)
    model = runtime.prepare(model)
    optimizer = fused(torch.optim.AdamW, model.parameters(), lr=tp.lr, weight_decay=tp.weight_decay)
    batches = StepBatches(len(train_y), tp.batch_size, params.seed, runtime.world, "teacher.batch_size")
    total = max(1, math.ceil(tp.epochs * batches.per_epoch))
    scheduler = warmup_cosine(optimizer, total, warmup_steps=min(200, total // 10))

    def step_fn(step: int) -> dict[str, Any]:
        idx = batches.indices(step)
        x = as_float(train_x[idx])
        if tp.augment:
            x = random_affine(x, world=runtime.world)
        with runtime.autocast():
            loss = F.cross_entropy(model(x), train_y[idx], label_smoothing=tp.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        return {"loss": loss.detach()}

    def eval_fn(step: int) -> dict[str, float]:
        # Each rank scores its part of val; the logits are gathered, so every rank's
        # metrics cover the whole split.
        logits = runtime.gather(predict_logits(unwrap(model), runtime.eval_slice(val_x), device=runtime.device),
                                total=len(val_y))
        return {"val_acc": accuracy(logits, val_y.cpu()),
                "val_loss": float(F.cross_entropy(logits, val_y.cpu()))}

    loop = training.loop(total, meta.version, meta.counts, eval_every=max(1, batches.per_epoch // 2),
                         select=("val_acc", "max"))
    loop.track("model", model, optimizer, scheduler)
    outcome = loop.run(step_fn, eval_fn)
    model = unwrap(model)
    if training.is_main:
        model.load_state_dict(outcome.best_state["model"])
    return outcome, model


def _finish(training: Training, model: nn.Module, meta: DatasetMeta, data_dir: Path, out_dir: Path,
            result: dict[str, Any], val_x: torch.Tensor, val_y: torch.Tensor) -> dict[str, Any]:
    """The teacher (trained or imported) scored on val and test; result.json."""
    tp = training.params.teacher
    test_x, test_y = to_tensors(load_split(data_dir, "test"))
    model = model.cpu().eval()
    val_acc = accuracy(predict_logits(model, val_x), val_y)
    test_acc = accuracy(predict_logits(model, test_x), test_y)
    n_params = count_parameters(model)
    check_can_teach(training.params, val_acc, meta)
    arch = f"torchscript:{Path(tp.path or '').name}" if tp.source == "torchscript" else tp.arch
    result |= {"arch": arch, "val_acc": val_acc, "test_acc": test_acc, "params": n_params}
    training.finish(out_dir, result, {"final_val_acc": val_acc, "test_acc": test_acc, "params": float(n_params)})
    log.info("[train_teacher] %s: val %.4f, test %.4f, %d params", arch, val_acc, test_acc, n_params)
    return result
