"""The adapter every kfp component calls: validate params, find the pipeline's MLflow parent
run (tracking.pipeline_parent), open the stage's child run, run the stage, turn user-facing
errors into one clear log line and an exit code.

Lives in the library so components stay a few lines and tests can call it directly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gandistill import console, errors, stage_params
from gandistill.config import Params
from gandistill.data.dataset import load_meta
from gandistill.errors import GandistillError
from gandistill.tracking import (
    Tracker,
    client,
    dataset_input,
    fail_parent,
    finish_run,
    pipeline_parent,
    record_on_parent,
    redact,
    stage_run,
    system_metrics,
)

log = logging.getLogger("gandistill")


def configure_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=os.environ.get("GANDISTILL_LOG_LEVEL", "INFO"),
                            format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    logging.getLogger("gandistill").setLevel(os.environ.get("GANDISTILL_LOG_LEVEL", "INFO"))
    console.forward_warnings(logging.getLogger("gandistill"))


TRAINING_STAGES = ("train_teacher", "train_gan", "train_translator", "distill")  # system metrics while they run


# The pipeline's last stage: on a submitted run it closes the parent run the stages shared
# (`gandistill run --local` closes its own).
LAST_STAGE = "promote"


def run_stage(stage: str, params_json: str, parent_run_id: str,
              body: Callable[[Params, Tracker], dict[str, Any]], dataset: str | None = None, *,
              overrides: dict[str, Any] | None = None, run_name: str | None = None) -> dict[str, Any]:
    """Run one stage in its MLflow child run (named `run_name`, default the stage); `dataset`
    (the prepared dataset's folder) is logged as the run's input. `params_json`: the keys the
    stage reads (gandistill.stage_params; a whole params JSON works too), `overrides`
    (`section.key` → value; None = not given) set on top: the task's typed knobs. Training
    stages also log system metrics. The stage's start, end (wall time + headline) or failure
    (its own message) go to the run's console when one listens (gandistill.console)."""
    configure_logging()
    name = run_name or stage
    console.stage_started(name)
    started = time.perf_counter()
    training = stage.startswith(TRAINING_STAGES)
    shared_parent = ""  # a submitted run's parent, found by the KFP run id: this stage must close it on failure
    try:
        params = stage_params.load(params_json, stage, overrides)
        parent = pipeline_parent(parent_run_id, {"gandistill.method": params.distill.method,
                                                 "git_commit": os.environ.get("GIT_COMMIT", "")})
        shared_parent = parent if not parent_run_id else ""
        if shared_parent:  # no task holds the whole params on a cluster: each adds the keys it got
            # (a baseline's distill.method override is that task's, not the run's: not recorded)
            knobs = {k: v for k, v in (overrides or {}).items() if k != "distill.method"}
            _record_params(shared_parent, stage_params.given(params_json, knobs))
        described = None
        with stage_run(name, parent) as tracker:
            with system_metrics(tracker) if training else contextlib.nullcontext():
                result = body(params, tracker)
            if dataset is not None and (Path(dataset) / "meta.json").is_file():
                meta = load_meta(dataset)
                described = dataset_input(meta.source, meta.version, list(meta.input_shape), meta.class_names,
                                          meta.counts)
                tracker.log_dataset(described, "training" if training else name)
        if parent and not _is_baseline(params_json, overrides):  # the run list's row: headline + dataset
            record_on_parent(parent, stage, result, described if stage == "prepare_data" else None)
        if stage == LAST_STAGE and parent and not parent_run_id:
            finish_run(parent)
    except GandistillError as exc:
        if shared_parent:
            fail_parent(shared_parent)
        message = redact(str(exc))
        log.error("[%s] %s", name, message, extra={"console": False})  # the console gets it once, below
        # The error's class travels with the event: `gandistill run` exits with its documented code.
        console.emit("stage_failed", error=message, error_class=errors.category(exc),
                     wall_s=time.perf_counter() - started)
        raise SystemExit(exc.exit_code) from None
    except BaseException as exc:  # a bug, not a user fault: the traceback stays in the log
        if shared_parent:
            fail_parent(shared_parent)
        console.emit("stage_failed", wall_s=time.perf_counter() - started,
                     error=redact(f"{type(exc).__name__}: {exc}")[:2000] + " (traceback in the run's kfp.log)")
        raise
    console.emit("stage_end", wall_s=time.perf_counter() - started, headline=console.headline(name, result))
    return result


def _is_baseline(params_json: str, overrides: dict[str, Any] | None) -> bool:
    """A fanned-out baseline student: its task overrides distill.method with another method."""
    import json

    method = (overrides or {}).get("distill.method")
    return method is not None and method != json.loads(params_json).get("distill", {}).get("method")


def _record_params(parent_run_id: str, given: dict[str, Any]) -> None:
    """Add a stage's params to a submitted run's parent (the union over stages is the run's
    params, as a local run's parent has them). Best effort: a param already logged with another
    value (MLflow params are immutable) must not fail the stage."""
    try:
        Tracker(parent_run_id, client()).log_params(given)
    except GandistillError as exc:
        log.warning("[params] not recorded on the pipeline's MLflow run: %s", redact(str(exc))[:300])


def run_training(stage: str, params_json: str, parent_run_id: str, launch_command: str = "", *,
                 run_name: str | None = None, overrides: dict[str, Any] | None = None,
                 **paths: str | None) -> dict[str, Any]:
    """`run_stage` for a training stage (train_teacher, train_gan, distill): the stage's `run`
    gets `paths` as keyword arguments, here or — with a launch command (torchrun, compiled
    from pipeline.resources) — in data-parallel worker processes. `overrides`: params set
    before the stage runs (`section.key` → value: the task's typed knobs, the distill method
    of a fan-out task). `paths["data_dir"]` (the prepared dataset) is logged as the run's input."""
    from gandistill import launch

    def body(params: Params, tracker: Tracker) -> dict[str, Any]:
        return launch.run(stage, params, paths, tracker, launch_command)

    return run_stage(stage, params_json, parent_run_id, body, dataset=paths.get("data_dir"), overrides=overrides,
                     run_name=run_name)


def scalar_metrics(result: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric top-level entries of a stage result (for kfp artifact metadata / Metrics)."""
    return {f"{prefix}{k}": float(v) for k, v in result.items()
            if isinstance(v, int | float) and not isinstance(v, bool)}


def named_by_method(artifacts: Sequence[Any]) -> dict[str, str]:
    """Folder of each collected student artifact (anything with .path and .metadata), named by
    the distillation method in its metadata; a repeated method gets a numbered suffix."""
    named: dict[str, str] = {}
    for artifact in artifacts:
        base = str(artifact.metadata.get("method") or "baseline")
        name, n = base, 1
        while name in named:
            n += 1
            name = f"{base}_{n}"
        named[name] = artifact.path
    return named
