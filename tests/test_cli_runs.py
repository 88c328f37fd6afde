"""The commands users reach for after a run: `gandistill runs / report / compare / ui / promote`.

Fast tests read run records in the documented format (pipeline/runs.py) and a real sqlite
registry and MLflow UI; the slow test makes two real local runs and reads them back.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from gandistill_pipeline import cli, runs
from gandistill_pipeline.local import write_summary

from gandistill.config import load_params

ROOT = Path(__file__).resolve().parents[1]


def _record(runs_dir: Path, name: str, method: str, student_acc: float, version: int, alias: str,
            report: Path | None = None) -> Path:
    """A run folder as run_local leaves it (summary + params + metrics), with chosen numbers."""
    params = load_params(ROOT / "params.yaml", [f"distill.method={method}"])
    summary = {"status": "FINISHED", "method": method, "artifacts": {},
               "teacher": {"arch": "lenet5", "test_acc": 0.99, "params": 61706},
               "student": {"arch": "lenet5_half", "test_acc": student_acc, "params": 15738},
               "compression_ratio": 3.92, "evaluation": {"ece_student": 0.01, "note": "text is not a metric"},
               "report": {"html": str(report) if report else None},
               "registry": {"version": str(version), "alias": alias, "reason": "why"},
               "stage_wall_s": {"distill": 10.0}, "total_wall_s": 60.0,
               "mlflow": {"tracking_uri": "sqlite:////nowhere/mlflow.db", "parent_run_id": "abc"}}
    write_summary(summary, runs_dir, name)
    runs.write_record(runs_dir / name, params, summary)
    return runs_dir / name


def test_runs_lists_newest_first_with_method_accuracies_and_decision(tmp_path, capsys):
    _record(tmp_path, "first", "gan", 0.978, 1, "champion")
    time.sleep(0.05)  # distinct mtimes
    _record(tmp_path, "second", "kd", 0.985, 2, "challenger")
    assert cli.main(["runs", "--runs-dir", str(tmp_path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["second", "first"]  # 'latest' (a link) is not listed twice
    assert rows[0] | {"finished": 0} == {"name": "second", "finished": 0, "status": "FINISHED", "method": "kd",
                                         "teacher_test_acc": 0.99, "student_test_acc": 0.985,
                                         "registry": "v2 @challenger", "reason": "why"}
    assert cli.main(["runs", "--runs-dir", str(tmp_path)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["run", "finished", "status", "method", "teacher", "acc", "student", "acc", "registry"]
    assert "second" in table[1] and "98.50%" in table[1] and "v2 @challenger" in table[1]


def test_the_run_summary_ends_with_the_students_advice(tmp_path, capsys):
    """distill's budget_advice line (a student far under its teacher) reaches the end-of-run summary,
    where a user reads it after the stage lines have scrolled away."""
    summary = json.loads((_record(tmp_path, "far", "gan", 0.75, 1, "challenger") / "summary.json").read_text())
    summary["mlflow"]["ui_command"] = "mlflow ui"
    cli.print_summary(summary)
    assert "advice" not in capsys.readouterr().out
    summary["student"]["advice"] = "the student ends 21.4 points under its teacher on validation and was still gaining"
    cli.print_summary(summary)
    printed = capsys.readouterr().out
    assert "  advice: the student ends 21.4 points under its teacher" in printed and "still gaining" in printed


def test_runs_on_an_empty_folder_says_how_to_make_one(tmp_path, capsys):
    assert cli.main(["runs", "--runs-dir", str(tmp_path / "none")]) == 0
    assert "gandistill run --local" in capsys.readouterr().out


def test_report_prints_the_runs_html_path(tmp_path, capsys):
    html = tmp_path / "report.html"
    html.write_text("<html></html>")
    _record(tmp_path / "runs", "r1", "gan", 0.97, 1, "champion", report=html)
    assert cli.main(["report", "--runs-dir", str(tmp_path / "runs")]) == 0  # default: latest
    assert capsys.readouterr().out.strip() == str(html)
    assert cli.main(["report", "r1", "--runs-dir", str(tmp_path / "runs")]) == 0
    assert capsys.readouterr().out.strip() == str(html)
    html.unlink()
    assert cli.main(["report", "r1", "--runs-dir", str(tmp_path / "runs")]) == 1
    assert "no HTML report" in capsys.readouterr().err


def test_an_unknown_run_names_the_recent_ones(tmp_path, capsys):
    _record(tmp_path, "r1", "gan", 0.97, 1, "champion")
    assert cli.main(["report", "nope", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "run 'nope' not found" in err and "recent runs: r1" in err


def test_compare_shows_the_params_that_differ_and_the_metrics(tmp_path, capsys):
    _record(tmp_path, "a", "gan", 0.978, 1, "champion")
    _record(tmp_path, "b", "kd", 0.985, 2, "challenger")
    assert cli.main(["compare", "a", "b", "--runs-dir", str(tmp_path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["params"] == [{"key": "distill.method", "a": "gan", "b": "kd"}]
    metrics = {row["key"]: (row["a"], row["b"]) for row in result["metrics"]}
    assert metrics["student.test_acc"] == (0.978, 0.985)
    assert "teacher.test_acc" not in metrics  # equal: not a difference
    assert "evaluation.note" not in metrics and "evaluation.ece_student" not in metrics  # text dropped, equal
    assert cli.main(["compare", "a", "b", "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "distill.method  gan  kd" in out and "+0.007" in out
    assert cli.main(["compare", "a", "b", "--runs-dir", str(tmp_path), "--all", "--json"]) == 0
    everything = json.loads(capsys.readouterr().out)
    assert len(everything["params"]) > 50 and {"key": "seed", "a": 0, "b": 0} in everything["params"]


def test_record_files_hold_the_params_and_nested_metrics(tmp_path):
    folder = _record(tmp_path, "r", "kd", 0.98, 1, "champion")
    assert yaml.safe_load((folder / "params.yaml").read_text())["distill"]["method"] == "kd"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["student"]["test_acc"] == 0.98 and metrics["wall_s"] == {"distill": 10.0, "total": 60.0}
    assert "arch" not in metrics["student"]  # numbers only: DVC reads this file as metrics


# -- promote --version N: a rollback on a real sqlite registry ----------------------------------

@pytest.fixture
def registry(tmp_path, monkeypatch):
    """A real sqlite registry with model `m` at versions 1-3 (test accuracies 0.97, 0.98, 0.96), v3 champion."""
    from mlflow import MlflowClient

    (tmp_path / "registry").mkdir()
    uri = f"sqlite:///{tmp_path / 'registry' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("m")
    for acc in ("0.97", "0.98", "0.96"):
        (tmp_path / "registry" / acc).mkdir()
        client.create_model_version("m", source=str(tmp_path / "registry" / acc), tags={"student_test_acc": acc})
    client.set_registered_model_alias("m", "champion", "3")
    return client


def _aliases(client) -> dict[str, str]:
    return {alias: str(version) for alias, version in client.get_registered_model("m").aliases.items()}


def test_promote_version_rolls_the_champion_back(registry, capsys):
    assert cli.main(["promote", "--version", "1", "--model-name", "m", "--reason", "v3 regressed"]) == 0
    assert "m v1 @champion (was v3)" in capsys.readouterr().out
    assert _aliases(registry) == {"champion": "1"}
    tags = registry.get_model_version("m", "1").tags
    assert tags["gandistill.decision"] == "champion" and tags["previous_champion"] == "3"
    assert "set by hand" in tags["gandistill.reason"] and "v3 regressed" in tags["gandistill.reason"]
    assert {str(v.version) for v in registry.search_model_versions("name = 'm'")} == {"1", "2", "3"}  # kept
    # another alias, and the model name from params (promote.model_name)
    assert cli.main(["promote", "--version", "2", "--alias", "challenger", "--set", "promote.model_name=m"]) == 0
    assert _aliases(registry) == {"champion": "1", "challenger": "2"}
    # refused: an unknown version, a reserved alias, an unknown model — and nothing changes
    assert cli.main(["promote", "--version", "7", "--model-name", "m"]) == 2
    assert "has no version 7 (versions: 1, 2, 3)" in capsys.readouterr().err
    assert cli.main(["promote", "--version", "1", "--alias", "v2", "--model-name", "m"]) == 2
    assert "not a usable alias" in capsys.readouterr().err
    assert cli.main(["promote", "--version", "1", "--model-name", "other"]) == 2
    assert "model 'other' has no version 1 (versions: none)" in capsys.readouterr().err
    assert _aliases(registry) == {"champion": "1", "challenger": "2"}


# -- ui: the real MLflow UI on the run's store --------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ui_serves_the_runs_tracking_store(tmp_path):
    from mlflow import MlflowClient

    db = tmp_path / "store" / "mlflow.db"
    db.parent.mkdir()
    MlflowClient(tracking_uri=f"sqlite:///{db}").create_experiment("seen-by-the-ui")
    summary = {"status": "FINISHED", "mlflow": {"tracking_uri": f"sqlite:///{db}", "parent_run_id": "r0"}}
    write_summary(summary, tmp_path / "runs", "r")
    port = _free_port()
    env = os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'elsewhere.db'}"}  # the run's store wins
    proc = subprocess.Popen([sys.executable, "-m", "gandistill", "ui", "--runs-dir", str(tmp_path / "runs"),
                             "--port", str(port)], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/experiments/search?max_results=10"
        deadline, body = time.monotonic() + 600, None  # a loaded 2-core machine
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    body = json.loads(response.read())
                break
            except OSError:
                time.sleep(1)
        assert body is not None, f"the UI did not answer (exit {proc.poll()})"
        assert "seen-by-the-ui" in {e["name"] for e in body["experiments"]}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the UI's server and its workers: the group this test started
        try:
            out = proc.communicate(timeout=60)[0]
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out = proc.communicate()[0]
    assert f"http://127.0.0.1:{port}" in out and "(run r0)" in out
