"""A local run's record on disk, and what reads it back (`gandistill runs / report / compare`).

`gandistill run --local --run-name NAME` leaves `runs/NAME/`:

    summary.json   what the run printed: status, accuracies, artifacts, registry decision, MLflow
    params.yaml    the exact params it ran with (after file, profile and --set layers)
    metrics.json   its numbers, nested by stage (DVC's metrics file: `dvc metrics diff`)
    plots/*.csv    per-eval training curves: teacher.csv, gan.csv, distill.csv (DVC's plots)
    kfp.log        the full kfp.local log of every task (executor inputs/outputs, every log line)
    events.jsonl   the console's stream: stage start/end/failure, progress, warnings

and `runs/latest` points at the newest. A RUN argument is a run name, `latest`, or a path to a
run folder or its summary.json.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import yaml

from gandistill.config import Params, params_yaml
from gandistill.errors import ConfigError
from gandistill.files import atomic_write_text
from gandistill.results import RESULT_FILE

SUMMARY, PARAMS, METRICS, PLOTS = "summary.json", "params.yaml", "metrics.json", "plots"
KFP_LOG, EVENTS = "kfp.log", "events.jsonl"
# stage result folder (summary["artifacts"] key) -> plot file name
CURVES = {"train_teacher": "teacher", "train_gan": "gan", "distill": "distill"}


def _numbers(tree: dict[str, Any]) -> dict[str, Any]:
    """The finite numbers of a nested dict (bools and text dropped), keeping the nesting."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            inner = _numbers(value)
            if inner:
                out[key] = inner
        elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            out[key] = value
    return out


def run_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    """The run's numbers for metrics.json, nested by what they describe."""
    gan = {k.removeprefix("selected_"): v for k, v in _stage_result(summary, "train_gan").items()
           if k.startswith("selected_")}
    return _numbers({
        "teacher": summary.get("teacher", {}), "student": summary.get("student", {}),
        "compression_ratio": summary.get("compression_ratio"), "gan": gan,
        "evaluation": summary.get("evaluation", {}),
        "wall_s": summary.get("stage_wall_s", {}) | {"total": summary.get("total_wall_s")},
    })


def _stage_result(summary: dict[str, Any], stage: str) -> dict[str, Any]:
    folder = summary.get("artifacts", {}).get(stage)
    file = Path(folder) / RESULT_FILE if folder else None
    return json.loads(file.read_text()) if file is not None and file.is_file() else {}


def _csv(rows: list[dict[str, Any]]) -> str:
    """Scalar columns only: a history entry's per-class lists (distill's agreement per class)
    stay in result.json, where the report reads them."""
    rows = [{key: value for key, value in row.items() if isinstance(value, int | float | str)} for row in rows]
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_record(folder: Path, params: Params, summary: dict[str, Any]) -> None:
    """params.yaml, metrics.json and plots/ beside the summary (each written atomically)."""
    atomic_write_text(folder / PARAMS, params_yaml(params))
    atomic_write_text(folder / METRICS, json.dumps(run_metrics(summary), indent=2, sort_keys=True) + "\n")
    for stage, name in CURVES.items():
        # A stage that did not run (no GAN for data_free, an imported teacher) leaves a header-only
        # file: never a stale curve from an earlier run, and DVC finds every output it declares.
        history = _stage_result(summary, stage).get("history") or []
        atomic_write_text(folder / PLOTS / f"{name}.csv", _csv(history) if history else "step\n")


# -- reading runs back ----------------------------------------------------------------------------

def resolve(runs_dir: str | Path, ref: str | None) -> Path:
    """The folder of run `ref` (name, 'latest', a run folder or its summary.json; None = latest)."""
    runs_dir = Path(runs_dir)
    ref = ref or "latest"
    candidates = [Path(ref), runs_dir / ref]
    for candidate in candidates:
        if candidate.is_file() and candidate.name == SUMMARY:
            return candidate.parent.resolve()
        if (candidate / SUMMARY).is_file():
            return candidate.resolve()
    known = [r["name"] for r in list_runs(runs_dir, limit=5)]
    hint = f"recent runs: {', '.join(known)}" if known else f"no runs in {runs_dir} yet: `gandistill run --local`"
    raise ConfigError(f"run {ref!r} not found (a run name under {runs_dir}, 'latest', or a run folder); {hint}")


def summary_of(folder: Path) -> dict[str, Any]:
    return json.loads((folder / SUMMARY).read_text())


def list_runs(runs_dir: str | Path, limit: int | None = 20) -> list[dict[str, Any]]:
    """Recent runs, newest first: name, finished time, status, method, accuracies, registry decision."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    files = [f for f in runs_dir.glob(f"*/{SUMMARY}") if not f.parent.is_symlink()]
    rows = []
    for file in sorted(files, key=lambda f: f.stat().st_mtime, reverse=True)[:limit]:
        try:
            summary = json.loads(file.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # a foreign or damaged file is not a run; the others still list
        registry = summary.get("registry") or {}
        rows.append({
            "name": file.parent.name, "finished": file.stat().st_mtime, "status": summary.get("status"),
            "method": summary.get("method"), "teacher_test_acc": summary.get("teacher", {}).get("test_acc"),
            "student_test_acc": summary.get("student", {}).get("test_acc"),
            "registry": (f"v{registry['version']} @{registry.get('alias')}" if registry.get("version") else None),
            "reason": registry.get("reason"),
        })
    return rows


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out |= _flatten(value, f"{prefix}{key}.")
        return out
    return {prefix.rstrip("."): tree}


def diff(a: dict[str, Any], b: dict[str, Any], changed_only: bool = True) -> list[tuple[str, Any, Any]]:
    """(key, value in a, value in b) over the flattened keys of both (None where absent)."""
    flat_a, flat_b = _flatten(a), _flatten(b)
    keys = sorted(set(flat_a) | set(flat_b))
    return [(k, flat_a.get(k), flat_b.get(k)) for k in keys if not changed_only or flat_a.get(k) != flat_b.get(k)]


def _read_params(folder: Path) -> dict[str, Any]:
    file = folder / PARAMS
    if not file.is_file():
        raise ConfigError(f"{folder} has no {PARAMS} (a run made before gandistill recorded its params); "
                          "compare runs made with this version")
    return yaml.safe_load(file.read_text()) or {}


def _read_metrics(folder: Path) -> dict[str, Any]:
    file = folder / METRICS
    return json.loads(file.read_text()) if file.is_file() else run_metrics(summary_of(folder))


def compare(folder_a: Path, folder_b: Path, changed_only: bool = True) -> dict[str, list[tuple[str, Any, Any]]]:
    """Params and metrics of two runs side by side (by default only what differs)."""
    return {"params": diff(_read_params(folder_a), _read_params(folder_b), changed_only),
            "metrics": diff(_read_metrics(folder_a), _read_metrics(folder_b), changed_only)}
