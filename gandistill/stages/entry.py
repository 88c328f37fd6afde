"""The one entry point of a kfp task: `run_task(stage, component arguments)`.

It reads the stage's record (gandistill.stage_records): applies the task's knobs and per-task
inputs to its params, parses and validates them once (`stage_params.load`: the view the stage
runs on), finds the pipeline's MLflow parent run (tracking.pipeline_parent), opens the stage's
child run, calls the stage function with the component's artifacts as folders — in this process,
or for a data-parallel stage with a launch command in torchrun's workers (gandistill.launch) —
publishes the result's numbers on the output artifact, and turns user-facing errors into one
clear log line and an exit code.

Lives in the library so components stay a signature and one call, and tests can call it directly.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gandistill import console, errors, stage_params, stage_records
from gandistill.config import Params
from gandistill.data.dataset import load_meta
from gandistill.errors import GandistillError
from gandistill.stage_records import KNOBS, Stage
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


def run_task(stage: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run `stage` for its component, whose arguments are `args` (the component's `locals()`):
    `params_json` and `parent_run_id`, the record's knobs and per-task inputs (set on the params),
    its input and output artifacts, `launch` (a data-parallel stage's torchrun command) and any
    argument the stage function takes by name. The output artifact gets the result's numbers
    (and the per-task inputs) as metadata. Returns the stage's result."""
    record = stage_records.get(stage)
    overrides = {KNOBS[name]: args[name] for name in record.knobs} | {
        key: args[name] for name, key in record.task_inputs.items()}
    kwargs = stage_kwargs(record, args)
    launch_command = args.get("launch", "") if record.data_parallel else ""

    def body(params: Params, tracker: Tracker) -> dict[str, Any]:
        if launch_command:
            from gandistill import launch

            return launch.run(record.name, params, kwargs, tracker, launch_command)
        return stage_function(record)(params, **kwargs, tracker=tracker)

    data = args.get("data")
    result = run_stage(record.name, args["params_json"], args["parent_run_id"], body,
                       dataset=data.path if data is not None else None, overrides=overrides,
                       run_name="_".join([record.name, *(str(args[name]) for name in record.task_inputs)]))
    if record.output is not None:
        args[record.output].metadata.update(scalar_metrics(result) | {name: args[name] for name in record.task_inputs})
    if record.ui_outputs:
        show_training(record.name, result, args["metrics"], args["curves"])
    return result


def show_training(stage: str, result: dict[str, Any], metrics: Any, curves: Any) -> None:
    """A training task's kfp `metrics` (its final numbers) and `curves` (its loop's curves as one
    HTML page): what the KFP run and the run comparison show of how it trained."""
    from gandistill.evaluation import training_page  # matplotlib: imported by training tasks only

    for key, value in training_page.final_metrics(result).items():
        metrics.log_metric(key, value)
    training_page.write_curves(stage, result, curves.path)


def stage_function(record: Stage) -> Callable[..., dict[str, Any]]:
    module, function = record.function_path
    return getattr(importlib.import_module(module), function)


def stage_kwargs(record: Stage, args: dict[str, Any]) -> dict[str, Any]:
    """The stage function's arguments from its component's: an artifact `x` as `x_dir` (its folder;
    None when an optional input was not given), the record's output as `out_dir`, a collected list
    `xs` (the fanned-out baseline students) as `x_dirs` (folders named by the method in each one's
    metadata), and any other argument of the same name (promote's `parent_run_id`)."""
    kwargs: dict[str, Any] = {}
    for name in inspect.signature(stage_function(record)).parameters:
        if name in ("params", "tracker"):
            continue
        if name == "out_dir" and record.output is not None:
            kwargs[name] = args[record.output].path
        elif name.endswith("_dirs") and f"{name[:-5]}s" in args:
            kwargs[name] = named_by_method(args[f"{name[:-5]}s"] or [])
        elif name.endswith("_dir") and name[:-4] in args:
            artifact = args[name[:-4]]
            kwargs[name] = artifact.path if artifact is not None else None
        elif name in args:
            kwargs[name] = args[name]
    return kwargs


def run_stage(stage: str, params_json: str, parent_run_id: str,
              body: Callable[[Params, Tracker], dict[str, Any]], dataset: str | None = None, *,
              overrides: dict[str, Any] | None = None, run_name: str | None = None) -> dict[str, Any]:
    """Run `body` on the stage's params in its MLflow child run (named `run_name`, default the
    stage); `dataset` (the prepared dataset's folder) is logged as the run's input. `params_json`:
    the keys the stage reads (its record's `reads`; a whole params JSON works too), `overrides`
    (`section.key` → value: the task's knobs and per-task inputs) set on top, then parsed and
    validated once. Training stages also log system metrics. The stage's start, end (wall time +
    headline) or failure (its own message) go to the run's console when one listens
    (gandistill.console)."""
    configure_logging()
    record = stage_records.get(stage)
    name = run_name or stage
    console.stage_started(name)
    started = time.perf_counter()
    training = record.trains
    shared_parent = ""  # a submitted run's parent, found by the KFP run id: this stage must close it on failure
    try:
        params = stage_params.load(params_json, stage, overrides)
        method = params.distill.method if stage_records.covers(record.reads, "distill.method") else ""
        parent = pipeline_parent(parent_run_id, {"gandistill.method": method,
                                                 "git_commit": os.environ.get("GIT_COMMIT", "")})
        shared_parent = parent if not parent_run_id else ""
        baseline = _is_baseline(params_json, overrides)
        if shared_parent:  # no task holds the whole params on a cluster: each adds the keys it got
            # (a baseline's distill.method override is that task's, not the run's: not recorded)
            given = stage_params.flat(params, stage)
            _record_params(shared_parent, {k: v for k, v in given.items() if not (baseline and k == "distill.method")})
        described = None
        with stage_run(name, parent) as tracker:
            with system_metrics(tracker) if training else contextlib.nullcontext():
                result = body(params, tracker)
            if dataset is not None and (Path(dataset) / "meta.json").is_file():
                meta = load_meta(dataset)
                described = dataset_input(meta.source, meta.version, list(meta.input_shape), meta.class_names,
                                          meta.counts)
                tracker.log_dataset(described, "training" if training else name)
        if parent and not baseline:  # the run list's row: headline + dataset
            record_on_parent(parent, record.on_parent, result, described if stage == "prepare_data" else None)
        if record.closes_run and parent and not parent_run_id:  # a submitted run's last stage
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
    console.emit("stage_end", wall_s=time.perf_counter() - started, headline=stage_records.headline(name, result))
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
