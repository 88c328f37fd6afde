"""Run a training stage in N processes through torchrun, from inside one process.

One KFP task, one pod: the stage's component stays the single process that talks to kfp
(artifacts, metadata) and opens the stage's MLflow run; when its launch command is set it
starts `torchrun … -m gandistill.launch SPEC` and waits. The workers run the same stage
function as a single process would (the one its record names, gandistill.stage_records); rank 0
logs to the stage's MLflow run, writes the outputs and hands its result back through a file.

A worker that fails makes torchrun stop the others (`--max-restarts=0`: no silent
restart from scratch; re-running the stage resumes from its last checkpoint), and the
caller raises one error: the first user-facing error a rank raised (same class, so the
same exit code — a ConfigError is still exit 2), or `WorkerError` naming the rank that
died and how.

`python -m torch.distributed.run` is what the `torchrun` console script runs; the caller
starts it with its own interpreter so the workers use the same environment (a venv's
`bin/` need not be on PATH).
"""

from __future__ import annotations

import collections
import importlib
import json
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from gandistill import errors, stage_params, stage_records
from gandistill.config import Params
from gandistill.errors import ConfigError, GandistillError, WorkerError
from gandistill.tracking import NullTracker, Tracker

log = logging.getLogger("gandistill")

def torchrun_command(nproc: int) -> str:
    """The launch command of a stage with `nproc` worker processes on one node ("" for one:
    the stage then runs in the calling process). It is compiled into the pipeline spec."""
    if nproc <= 1:
        return ""
    return f"torchrun --standalone --nnodes=1 --nproc_per_node={nproc} --max-restarts=0"


def check_batch_split(params: Params, stage: str, nproc: int) -> None:
    """Before anything runs: a stage's global batch (its record's `batch_key`) must split evenly
    over its processes (each rank takes every nproc-th sample; derived counts — gan_real's real
    share, mining candidates — are checked where they are drawn)."""
    key = stage_records.get(stage).batch_key
    if nproc <= 1 or key is None:
        return
    section, _, field = key.partition(".")
    batch = getattr(getattr(params, section), field)
    if batch % nproc:
        raise ConfigError(f"{key}={batch} cannot be split evenly over the {nproc} processes of {stage}; use a "
                          f"multiple of {nproc} (it is the global batch, shared by all processes) or change the "
                          "number of processes (pipeline.resources.<stage>.accelerator_count, --nproc)")


def _launcher_argv(launch: str) -> list[str]:
    argv = shlex.split(launch)
    if not argv or argv[0] != "torchrun":
        raise ConfigError(f"launch command {launch!r}: expected 'torchrun …' (gandistill.launch.torchrun_command)")
    return [sys.executable, "-m", "torch.distributed.run", *argv[1:]]


def stage_function(stage: str) -> Any:
    """The stage function of a data-parallel stage (its record's `function`)."""
    if stage not in stage_records.data_parallel():
        raise ConfigError(f"{stage} is not a data-parallel stage; data-parallel stages: "
                          f"{', '.join(stage_records.data_parallel())}")
    module, function = stage_records.get(stage).function_path
    return getattr(importlib.import_module(module), function)


def run(stage: str, params: Params, paths: dict[str, str | None], tracker: Tracker,
        launch: str = "") -> dict[str, Any]:
    """Run `stage` with `paths` as keyword arguments: here (launch "") or in torchrun's workers."""
    fn = stage_function(stage)
    if not launch:
        return fn(params, **paths, tracker=tracker)
    argv = _launcher_argv(launch)
    with tempfile.TemporaryDirectory(prefix=f"gandistill-{stage}-") as tmp:
        folder = Path(tmp)
        spec = write_spec(folder, stage, params, paths, tracker.run_id)
        log.info("[%s] launching: %s", stage, shlex.join([*shlex.split(launch), "-m", __name__, "SPEC"]))
        code, tail = stream([*argv, "-m", __name__, str(spec)])
        return collect(stage, code, tail, folder)


def write_spec(folder: Path, stage: str, params: Params, paths: dict[str, str | None], run_id: str) -> Path:
    """What every worker needs, in `folder`/spec.json (the workers' result and failure
    reports are written next to it)."""
    spec = {"stage": stage, "params": json.dumps(stage_params.select(params, stage)), "paths": paths, "run_id": run_id,
            "result": str(folder / "result.json"), "failures": str(folder)}
    (folder / "spec.json").write_text(json.dumps(spec))
    return folder / "spec.json"


def collect(stage: str, code: int, tail: list[str], folder: Path) -> dict[str, Any]:
    """Rank 0's result after torchrun exited `code`, or the one error that says why not."""
    if code == 0 and (folder / "result.json").is_file():
        return json.loads((folder / "result.json").read_text())
    raise _failure(stage, code, tail, folder)


def stream(cmd: list[str]) -> tuple[int, list[str]]:
    """Run cmd with its output passed through to stderr; return (exit code, last lines)."""
    tail: collections.deque[str] = collections.deque(maxlen=200)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            sys.stderr.write(line)
            tail.append(line.rstrip("\n"))
        return proc.wait(), list(tail)
    except BaseException:  # interrupted: do not leave the workers running
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        raise


_ROOT_CAUSE = re.compile(r"Root Cause.*?rank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+)", re.S)
_FAILED_RANK = re.compile(r"rank\s*:\s*(\d+) \(local_rank.*?exitcode\s*:\s*(-?\d+)", re.S)


def _dead_rank(summary: str) -> tuple[int, int] | None:
    """(rank, exit code) of the worker that caused torchrun's failure: one killed by a signal
    other than torchrun's own SIGTERM (OOM killer, SIGKILL, a crash) first — its peers then
    fail in their next collective, which is a consequence — else torchrun's root cause."""
    killed = [(int(r), int(c)) for r, c in _FAILED_RANK.findall(summary)
              if int(c) < 0 and -int(c) != signal.SIGTERM]
    if killed:
        return killed[0]
    match = _ROOT_CAUSE.search(summary)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _failure(stage: str, code: int, tail: list[str], folder: Path) -> GandistillError:
    reports = {}
    for file in sorted(folder.glob("rank-*.json")):
        report = json.loads(file.read_text())
        reports[int(report["rank"])] = report
    user_facing = [r for r in reports.values() if r.get("gandistill")]
    if user_facing:  # a fault the user can fix (params, data, a service): the same error as one process
        first = min(user_facing, key=lambda r: r["rank"])
        cls = errors.by_name(first["category"])  # a TrackingError reports as the ServiceError it is (exit 5)
        return cls(f"{first['message']} (rank {first['rank']} of the {stage} workers)")
    dead = _dead_rank("\n".join(tail))
    if dead:
        rank, exitcode = dead
        how = (f"was killed by {signal.Signals(-exitcode).name}" if exitcode < 0 and -exitcode in
               signal.valid_signals() else f"exited with code {exitcode}")
        detail = reports.get(rank, {})
        cause = f": {detail['type']}: {detail['message']}" if detail else ""
        return WorkerError(f"[{stage}] worker rank {rank} {how}{cause}; torchrun stopped the other ranks and the "
                           "stage failed. Re-run it to resume from its last checkpoint (a killed pod: check its "
                           "memory limit and the node's events).")
    return WorkerError(f"[{stage}] torchrun exited with code {code} without a result; last output:\n"
                       + "\n".join(tail[-15:]))


# -- the worker side -----------------------------------------------------------------------

def worker_main(spec_path: str | Path) -> int:
    """One torchrun worker: run the spec's stage as this rank; 0 or the error's exit code.
    (Leaves the process group up: the caller's process exit, or `__main__`, ends it.)"""
    from gandistill import tracking
    from gandistill.distributed import World

    world = World.from_env()
    logging.basicConfig(level=os.environ.get("GANDISTILL_LOG_LEVEL", "INFO") if world.is_main else "WARNING",
                        format=f"%(asctime)s %(levelname)s [rank {world.rank}] %(message)s", stream=sys.stderr)
    spec = json.loads(Path(spec_path).read_text())
    try:
        params = stage_params.load(spec["params"], spec["stage"])
        tracker: Tracker = NullTracker()
        if spec["run_id"] and world.is_main:  # one writer to the stage's MLflow run
            tracker = Tracker(spec["run_id"], tracking.client())
        result = stage_function(spec["stage"])(params, **spec["paths"], tracker=tracker)
        if world.is_main:
            out = Path(spec["result"])
            tmp = out.with_suffix(".tmp")
            tmp.write_text(json.dumps(result, default=float))
            os.replace(tmp, out)
        return 0
    except BaseException as exc:
        user_facing = isinstance(exc, GandistillError)
        report = {"rank": world.rank, "type": type(exc).__name__, "category": errors.category(exc),
                  "message": str(exc)[:2000],
                  "gandistill": user_facing}
        (Path(spec["failures"]) / f"rank-{world.rank}.json").write_text(json.dumps(report))
        if user_facing:
            logging.getLogger("gandistill").error("[%s] %s", spec["stage"], exc)
            return exc.exit_code
        raise


def _main(argv: list[str]) -> int:
    """`python -m gandistill.launch SPEC_FILE`, or `--spec-json JSON` (a PyTorchJob's pods:
    the spec travels in the manifest, gandistill_pipeline.trainer)."""
    import torch.distributed as dist

    try:
        if argv[:1] == ["--spec-json"]:
            with tempfile.TemporaryDirectory(prefix="gandistill-spec-") as tmp:
                (Path(tmp) / "spec.json").write_text(argv[1])
                return worker_main(Path(tmp) / "spec.json")
        return worker_main(argv[0])
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
