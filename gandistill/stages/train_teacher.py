"""train_teacher: train the teacher classifier on the train split (or import one).

Cross-entropy with mild affine augmentation, AdamW and warm-up + cosine schedule; the
checkpoint with the best validation accuracy is kept (selection never looks at test).
An imported teacher (TorchScript or state dict) is checked against the data's input shape
and class count, evaluated, and passed on unchanged.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from gandistill.augment import random_affine
from gandistill.config import Params
from gandistill.data.dataset import StepBatches, as_float, load_meta, load_split, to_tensors
from gandistill.errors import DataError
from gandistill.loop import TrainingLoop, warmup_cosine
from gandistill.nets import build_classifier, count_parameters
from gandistill.runtime import Runtime, seed_everything, unwrap
from gandistill.stages.common import (
    accuracy,
    checkpoint_dir,
    fingerprint,
    params_sections,
    predict_logits,
    save_classifier,
    write_result,
)
from gandistill.tracking import NullTracker, Tracker

log = logging.getLogger(__name__)


def _import_teacher(params: Params, data_dir: Path, out_dir: Path) -> torch.nn.Module:
    """Load a user-supplied teacher and check it fits the data; store it in out_dir."""
    tp = params.teacher
    meta = load_meta(data_dir)
    path = Path(tp.path or "")
    if not path.is_file():
        raise DataError(f"teacher.path={path}: file not found (teacher.source={tp.source})")
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        if tp.source == "torchscript":
            model = torch.jit.load(str(path), map_location="cpu").eval()
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state) if isinstance(state, dict) else state
            model = build_classifier(tp.arch, meta.channels, (meta.height, meta.width), meta.num_classes,
                                     mean=meta.mean, std=meta.std)
            model.load_state_dict(state)
    except Exception as exc:
        raise DataError(f"teacher.path={path}: cannot load as {tp.source} ({exc}); check the file and "
                        "teacher.source / teacher.arch") from None
    probe = torch.zeros(2, *meta.input_shape)
    try:
        with torch.no_grad():
            out = model(probe)
    except Exception as exc:
        raise DataError(f"teacher {path} does not accept inputs of shape 2×{'×'.join(map(str, meta.input_shape))} "
                        f"(the data's shape): {exc}") from None
    if out.ndim != 2 or out.shape[1] != meta.num_classes:
        raise DataError(f"teacher {path} outputs {tuple(out.shape[1:])} values per image but the data has "
                        f"{meta.num_classes} classes; use a teacher trained on these classes")
    if tp.source == "torchscript":
        shutil.copyfile(path, out_dir / "model.ts")
    else:
        save_classifier(model, tp.arch, meta, out_dir)
    return model


def run(params: Params, data_dir: str | Path, out_dir: str | Path, tracker: Tracker | None = None) -> dict[str, Any]:
    tracker = tracker or NullTracker()
    tp = params.teacher
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    started = time.perf_counter()
    seed_everything(params.seed)
    runtime = Runtime.from_params(params.runtime)
    meta = load_meta(data_dir)
    val_x, val_y = to_tensors(load_split(data_dir, "val"), runtime.device)
    test_x, test_y = to_tensors(load_split(data_dir, "test"))
    tracker.log_params({f"teacher.{k}": v for k, v in tp.model_dump().items()} | {"seed": params.seed})

    if tp.source != "train":
        model = _import_teacher(params, data_dir, out_dir)
        result: dict[str, Any] = {"source": tp.source, "steps": 0, "retries": 0}
    else:
        train_x, train_y = to_tensors(load_split(data_dir, "train"), runtime.device)
        model = build_classifier(tp.arch, meta.channels, (meta.height, meta.width), meta.num_classes,
                                 mean=meta.mean, std=meta.std)
        model = runtime.prepare(model)
        optimizer = torch.optim.AdamW(model.parameters(), lr=tp.lr, weight_decay=tp.weight_decay)
        batches = StepBatches(len(train_y), tp.batch_size, params.seed)
        total = max(1, math.ceil(tp.epochs * batches.per_epoch))
        scheduler = warmup_cosine(optimizer, total, warmup_steps=min(200, total // 10))

        def step_fn(step: int) -> dict[str, Any]:
            idx = batches.indices(step)
            x = as_float(train_x[idx])
            if tp.augment:
                x = random_affine(x)
            with runtime.autocast():
                loss = F.cross_entropy(model(x), train_y[idx], label_smoothing=tp.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            return {"loss": loss.detach()}

        def eval_fn(step: int) -> dict[str, float]:
            logits = predict_logits(model, val_x, device=runtime.device)
            return {"val_acc": accuracy(logits, val_y.cpu()),
                    "val_loss": float(F.cross_entropy(logits, val_y.cpu()))}

        fp = fingerprint("train_teacher", params_sections(params, "teacher", "data"), meta.version, meta.counts)
        loop = TrainingLoop(
            "train_teacher", total, checkpoint_dir("train_teacher", fp), fingerprint=fp,
            checkpoint_every=params.runtime.checkpoint_every, eval_every=max(1, batches.per_epoch // 2),
            select=("val_acc", "max"), max_retries=params.runtime.max_retries,
            retry_lr_factor=params.runtime.retry_lr_factor, log_fn=tracker.log_metrics,
            progress=params.runtime.progress and runtime.is_main,
        )
        loop.track("model", model, optimizer, scheduler)
        outcome = loop.run(step_fn, eval_fn)
        model = unwrap(model)
        model.load_state_dict(outcome.best_state["model"])
        save_classifier(model, tp.arch, meta, out_dir)
        result = {"source": "train", "steps": outcome.steps, "best_step": outcome.best_step,
                  "retries": outcome.retries, "resumed_from": outcome.resumed_from, "history": outcome.history}

    model = model.cpu().eval()
    val_acc = accuracy(predict_logits(model, val_x.cpu()), val_y.cpu())
    test_acc = accuracy(predict_logits(model, test_x), test_y)
    n_params = count_parameters(model)
    result |= {"arch": tp.arch, "val_acc": val_acc, "test_acc": test_acc, "params": n_params,
               "wall_s": time.perf_counter() - started}
    write_result(out_dir, result)
    tracker.log_metrics({"final_val_acc": val_acc, "test_acc": test_acc, "params": float(n_params)})
    log.info("[train_teacher] %s: val %.4f, test %.4f, %d params", tp.arch, val_acc, test_acc, n_params)
    return result
