"""Run the pipeline on this machine with kfp.local (SubprocessRunner, no containers) and
collect one summary: metrics, artifact paths, stage wall times, the MLflow run.

Embedded defaults: MLflow on `sqlite:///mlflow.db`, kfp outputs under `runs/kfp/`,
checkpoints under `runs/checkpoints/` (stable across re-runs, so a killed run resumes),
and `runs/latest/summary.json` pointing at the newest run.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from gandistill_pipeline import runs

from gandistill import console, errors, lease, processes, stage_records, storage, tracking
from gandistill.checkpoint_store import CHECKPOINT_ROOT_ENV
from gandistill.config import Params
from gandistill.errors import ConfigError, GandistillError, ServiceError
from gandistill.files import atomic_write_text
from gandistill.results import RESULT_FILE

log = logging.getLogger("gandistill")



def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.TimeoutExpired):
        return ""


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def collect(run_dir: Path) -> dict[str, dict[str, Any]]:
    """stage name -> {"path": artifact dir, "result": result.json without bulky history}."""
    stages: dict[str, dict[str, Any]] = {}
    for stage in stage_records.STAGES.values():  # the output artifact that holds its result.json
        if stage.output is None:
            continue
        folder = run_dir / stage.name.replace("_", "-") / stage.output  # kfp.local's task folder
        if folder.is_dir():
            result = {k: v for k, v in _read_json(folder / RESULT_FILE).items() if k != "history"}
            stages[stage.name] = {"path": str(folder), "result": result}
    gate = _read_json(run_dir / "promote-gate" / "executor_output.json")
    if gate:
        stages["promote_gate"] = {"path": str(run_dir / "promote-gate"),
                                  "result": {"passed": gate.get("parameterValues", {}).get("Output")}}
    for folder in sorted(run_dir.glob("promote*")):  # the task in whichever gate branch ran
        output = _read_json(folder / "executor_output.json").get("parameterValues", {}).get("Output")
        if folder.name != "promote-gate" and isinstance(output, str):
            stages["promote"] = {"path": str(folder), "result": json.loads(output)}
    return stages


RUN_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_run_name(name: str) -> str:
    """A run name becomes a folder under the runs dir: one safe path component, no traversal."""
    if not RUN_NAME_RE.fullmatch(name) or name in ("latest", "kfp", "checkpoints") or ".." in name:
        raise ConfigError(f"--run-name {name!r} is not allowed: use 1-128 letters, digits, '.', '_' or '-', "
                          "starting with a letter or digit, without '..' (it names a folder under the runs dir), "
                          "and not 'latest', 'kfp' or 'checkpoints'")
    return name


def check_runs_dir(root: str | Path) -> Path:
    """The runs dir (kfp outputs, checkpoints, run records) must be a folder we can write, or be
    creatable in one: a ConfigError naming --runs-dir otherwise, before anything runs. Probed
    with an unnamed temp file, so a check leaves nothing behind."""
    root = Path(root).absolute()
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    problem = ""
    if not existing.is_dir():
        problem = f"{existing} is a file, not a folder"
    else:
        try:
            with tempfile.TemporaryFile(dir=existing):
                pass
        except OSError as exc:
            problem = f"cannot write in {existing} ({exc.strerror or exc})"
    if problem:
        raise ConfigError(f"--runs-dir {root}: {problem}; give a folder this user can write (kfp outputs, "
                          "checkpoints and run records go there)")
    return root


# A local run's MLflow parent records the process that runs it, so a later run on this machine can
# tell the parent of an attempt that died (kill -9, a power cut: nothing closed it) from a live one's.
TAG_PID, TAG_PROCESS_START, TAG_MACHINE = "gandistill.pid", "gandistill.process_start", "gandistill.machine"


def _this_process() -> dict[str, str]:
    return {TAG_PID: str(os.getpid()), TAG_PROCESS_START: processes.process_start(os.getpid()),
            TAG_MACHINE: processes.this_machine()}


def close_dead_attempts(client: Any) -> list[str]:
    """Close as KILLED the MLflow parent runs (and their stage runs) that local runs on this machine
    left RUNNING when they died; returns the parents' ids."""
    experiment = client.get_experiment_by_name(tracking.experiment_name())
    if experiment is None:
        return []
    left = client.search_runs([experiment.experiment_id], filter_string=(
        f"attributes.status = 'RUNNING' and tags.`{TAG_MACHINE}` = '{processes.this_machine()}'"))
    dead = [run for run in left if not processes.process_alive(int(run.data.tags.get(TAG_PID, "0")),
                                                           run.data.tags.get(TAG_PROCESS_START, ""))]
    for run in dead:
        close_with_stages(client, run.info.run_id, "KILLED")
        log.warning("MLflow run %s of the local run %s closed as KILLED: the process that ran it is gone",
                    run.info.run_id, run.data.tags.get("gandistill.run_name", "?"))
    return [run.info.run_id for run in dead]


def close_with_stages(client: Any, parent_run_id: str, status: str) -> None:
    """Close a parent run and the stage runs under it that are still RUNNING."""
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    stages = client.search_runs([experiment_id], filter_string=(
        f"attributes.status = 'RUNNING' and tags.mlflow.parentRunId = '{parent_run_id}'"))
    for run in stages:
        client.set_terminated(run.info.run_id, status=status)
    client.set_terminated(parent_run_id, status=status)


# kfp.local's temp workspace for one run, named for the process (pid, start time) that owns it: kfp
# removes it on every exit it sees; a run that was killed leaves it, and the next run removes it.
WORKSPACE_PREFIX = "kfp-workspace-gandistill-"
_WORKSPACE_RE = re.compile(re.escape(WORKSPACE_PREFIX) + r"(\d+)-(\d*)-")


def kfp_workspace() -> Path:
    """A fresh workspace for this run, after removing those of runs that died on this machine."""
    for folder in Path(tempfile.gettempdir()).glob(f"{WORKSPACE_PREFIX}*"):
        owner = _WORKSPACE_RE.match(folder.name)
        if owner and not processes.process_alive(int(owner.group(1)), owner.group(2)):
            shutil.rmtree(folder, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{WORKSPACE_PREFIX}{os.getpid()}-{processes.process_start(os.getpid())}-"))


def stage_times(parent_run_id: str) -> dict[str, float]:
    client = tracking.client()
    try:
        runs = client.search_runs([client.get_run(parent_run_id).info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'")
    except Exception as exc:  # the summary is still written when MLflow went away mid-run
        log.warning("stage wall times unavailable: %s", tracking.tracking_error(exc, "reading stage runs"))
        return {}
    return {r.info.run_name: round(((r.info.end_time or r.info.start_time) - r.info.start_time) / 1000, 1)
            for r in runs}


def build_summary(params: Params, run_dir: Path, parent_run_id: str, wall_s: float, status: str) -> dict[str, Any]:
    stages = collect(run_dir)
    teacher = stages.get("train_teacher", {}).get("result", {})
    student = stages.get("distill", {}).get("result", {})
    evaluation = stages.get("evaluate", {}).get("result", {})
    promote = stages.get("promote", {}).get("result", {})
    ratio = teacher.get("params", 0) / student["params"] if student.get("params") else None
    uri = tracking.tracking_uri()
    return {
        "status": status,
        "run_dir": str(run_dir),
        "method": params.distill.method,
        "teacher": {"arch": teacher.get("arch", params.teacher.arch), "test_acc": teacher.get("test_acc"),
                    "val_acc": teacher.get("val_acc"), "params": teacher.get("params")},
        "student": {"arch": student.get("arch", params.distill.student_arch), "test_acc": student.get("test_acc"),
                    "val_acc": student.get("val_acc"), "params": student.get("params"),
                    "real_images_seen": student.get("real_images_seen_by_student"),
                    "advice": student.get("advice")},  # gandistill.budget_advice: far under its teacher, and why
        "compression_ratio": ratio,
        "evaluation": evaluation.get("metrics", {}),
        "transfer": evaluation.get("transfer"),
        # the translator's class guard (cross-domain transfer): its verdict, and what the student learned as
        "guard": stages.get("train_translator", {}).get("result", {}).get("guard"),
        "report": {"html": evaluation.get("report_html"), "markdown": evaluation.get("report_md")},
        "export": stages.get("export", {}).get("result", {}),
        "registry": promote,
        "artifacts": {name: stage["path"] for name, stage in stages.items()},
        "stage_wall_s": stage_times(parent_run_id) if parent_run_id else {},
        "total_wall_s": round(wall_s, 1),
        "mlflow": {"tracking_uri": uri, "parent_run_id": parent_run_id,
                   "ui_command": f"mlflow ui --backend-store-uri {uri}" if uri.startswith("sqlite") else
                   f"open {uri}/#/experiments (run {parent_run_id})"},
        "git_commit": git_commit(),
    }


def write_summary(summary: dict[str, Any], runs_root: Path, name: str) -> Path:
    folder = runs_root / check_run_name(name)
    folder.mkdir(parents=True, exist_ok=True)
    path = atomic_write_text(folder / "summary.json", json.dumps(summary, indent=2, default=str))
    latest = runs_root / "latest"
    link = runs_root / ".latest.tmp"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(name, target_is_directory=True)
    os.replace(link, latest)
    return path


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _is_terminal(stream: TextIO) -> bool:
    return hasattr(stream, "isatty") and stream.isatty()


def stage_failure(events: Path, exc: Exception) -> GandistillError:
    """The error a failed local run ends with: the first failing stage's own message, as the
    documented error class its event names (so `gandistill run` exits with that class's code);
    when no stage said why (a task killed by a signal), kfp's message without its colours."""
    failed = console.failures(events)
    if failed:
        first = failed[0]
        return errors.by_name(first.get("error_class", ""))(f"{first.get('stage')} failed: {first.get('error')}")
    return GandistillError(f"pipeline failed: {_ANSI.sub('', str(exc))} The task reported no error of its own: it was "
                           "killed (a signal, out of memory) or failed before its stage started; its output is in the "
                           "run's kfp.log")


def default_run_name() -> str:
    return time.strftime("run-%Y%m%d-%H%M%S")


class _Tee(io.TextIOBase):
    """Writes to several text streams (the log file and, with --verbose, the terminal); kfp's
    colour codes reach only a terminal, never a file or a pipe."""

    def __init__(self, *streams: TextIO):
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text if _is_terminal(stream) else _ANSI.sub("", text))
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


@contextlib.contextmanager
def run_console(folder: Path, verbose: bool = False) -> Iterator[Path]:
    """While the DAG runs: kfp.local's output (each task's executor input and output JSON, every
    log line) goes to `folder/kfp.log` — and to the terminal too with `verbose` — while the
    terminal shows what gandistill.console renders: a line per stage, bars, warnings, errors."""
    folder.mkdir(parents=True, exist_ok=True)
    events = folder / runs.EVENTS
    events.unlink(missing_ok=True)  # a re-used run name starts a fresh stream
    terminal = sys.stdout
    previous = os.environ.get(console.EVENTS_ENV)
    os.environ[console.EVENTS_ENV] = str(events)  # the kfp tasks (subprocesses) inherit it
    try:
        with open(folder / runs.KFP_LOG, "w", encoding="utf-8", buffering=1) as logfile, \
                console.Console(events, out=terminal, bars=False if verbose else None), \
                contextlib.redirect_stdout(_Tee(logfile, terminal) if verbose else _Tee(logfile)), \
                warnings.catch_warnings():
            # Display names and resource settings are for the cluster; kfp.local says per task that it
            # ignores them. Expected here, so not on the console (ENVIRONMENT.md, "kfp 2.17 local").
            warnings.filterwarnings("ignore", message=r".*have no effect in the current local runner")
            yield folder / runs.KFP_LOG
    finally:
        if previous is None:
            os.environ.pop(console.EVENTS_ENV, None)
        else:
            os.environ[console.EVENTS_ENV] = previous


def run_local(params: Params, runs_root: str | Path = "runs", run_name: str | None = None,
              runner: Any = None, verbose: bool = False, nproc: int | None = None) -> dict[str, Any]:
    """Execute the whole DAG with kfp.local; returns the summary (also written to disk).
    `runner`: a kfp.local runner; default SubprocessRunner (this venv). The container test
    passes a DockerRunner to run every task in the component image. The console shows one
    line per stage (tasks in this venv report to it); the full kfp log is `runs/<run>/kfp.log`
    (also streamed to the terminal with `verbose`). `nproc`: torchrun worker processes for
    each training stage (CPU: gloo)."""
    from gandistill_pipeline.dag import build_pipeline
    from kfp import local

    run_name = check_run_name(run_name or default_run_name())
    runs_root = Path(runs_root).resolve()
    os.environ.setdefault(CHECKPOINT_ROOT_ENV, params.pipeline.checkpoint_root or str(runs_root / "checkpoints"))
    if storage.is_s3(os.environ[CHECKPOINT_ROOT_ENV]):
        # Before anything runs or is written: a store we cannot use fails here, not after prepare_data.
        storage.check_bucket(os.environ[CHECKPOINT_ROOT_ENV])
    check_runs_dir(runs_root)
    os.environ.setdefault("MLFLOW_TRACKING_URI", tracking.tracking_uri())
    os.environ[lease.RUN_NAME_ENV] = run_name  # the tasks name this run in the checkpoint leases they hold
    tracking.bound_http_retries()  # before the tasks start: they inherit the bounded retries
    try:
        parent_run_id = tracking.start_parent_run(run_name, tags={
            "gandistill.method": params.distill.method, "git_commit": git_commit(),
            "gandistill.run_name": run_name, **_this_process()})
        close_dead_attempts(tracking.client())
        tracking.Tracker(parent_run_id, tracking.client()).log_params(params.flat())
    except GandistillError:
        raise
    except Exception as exc:
        raise ServiceError(f"MLflow at {tracking.tracking_uri()} is not usable "
                           f"({tracking.redact(f'{type(exc).__name__}: {exc}')}); "
                           "check MLFLOW_TRACKING_URI or unset it to use the embedded sqlite default") from None

    pipeline_root = runs_root / "kfp"  # made once MLflow took the run: a run that cannot start writes nothing
    pipeline_root.mkdir(parents=True, exist_ok=True)
    before = set(pipeline_root.iterdir())
    local.init(runner=runner or local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root),
               workspace_root=str(kfp_workspace()))
    started = time.perf_counter()
    status = "FAILED"
    try:
        with run_console(runs_root / run_name, verbose):
            build_pipeline(params, nproc, retries=0)(parent_run_id=parent_run_id)
        status = "FINISHED"
    except RuntimeError as exc:  # kfp.local names the failed task; the stage's own event says why
        raise stage_failure(runs_root / run_name / runs.EVENTS, exc) from None
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (the CLI turns it into this)
        status = "KILLED"
        raise
    finally:
        try:
            if status == "KILLED":  # the stages' runs were cut short with it
                close_with_stages(tracking.client(), parent_run_id, status)
            else:
                tracking.finish_run(parent_run_id, status)
        except Exception as exc:  # keep the task's error (raised on) as the one reported
            log.warning("%s", exc if isinstance(exc, GandistillError) else
                        tracking.tracking_error(exc, "closing the pipeline's parent run"))
        new_dirs = sorted(set(pipeline_root.iterdir()) - before, key=lambda p: p.stat().st_mtime)
        run_dir = new_dirs[-1] if new_dirs else pipeline_root
        summary = build_summary(params, run_dir, parent_run_id, time.perf_counter() - started, status)
        summary["log"] = str(runs_root / run_name / runs.KFP_LOG)
        summary["summary_path"] = str(write_summary(summary, runs_root, run_name))
        runs.write_record(runs_root / run_name, params, summary)
    return summary
