"""The run's console: one line per stage, warnings, the failing stage's own message; the full
kfp log in the run folder (streamed with --verbose)."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gandistill import console, stage_records
from gandistill.stages import entry

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def events(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "events.jsonl"
    monkeypatch.setenv(console.EVENTS_ENV, str(path))
    return path


def _render(events: Path) -> list[str]:
    out = io.StringIO()
    view = console.Console(events, out=out, bars=False)
    view.poll()
    return out.getvalue().splitlines()


def test_a_stage_reports_start_end_and_its_headline(events):
    result = entry.run_stage("train_teacher", _params_json(), "",
                             lambda params, tracker: {"arch": "lenet5", "test_acc": 0.9921, "val_acc": 0.99})
    assert result["test_acc"] == 0.9921
    kinds = [json.loads(line)["kind"] for line in events.read_text().splitlines()]
    assert kinds == ["stage_start", "stage_end"]
    lines = _render(events)
    assert len(lines) == 1 and lines[0].startswith("✓ train_teacher")
    assert lines[0].endswith("lenet5 test 99.21% (val 99.00%)") and " s " in lines[0]


def test_a_failing_stage_shows_its_own_message_once(events, caplog):
    from gandistill.errors import DataError

    def body(params, tracker):
        logging.getLogger("gandistill.stages.x").warning("generator coverage is low")
        raise DataError("data/x.npz: not a readable .npz file; write it with np.savez")

    with pytest.raises(SystemExit) as exit_info:
        entry.run_stage("prepare_data", _params_json(), "", body)
    assert exit_info.value.code == 3  # DataError
    lines = _render(events)
    assert lines[0] == "  warning (prepare_data): generator coverage is low"
    assert lines[1].startswith("✗ prepare_data") and lines[1].endswith("write it with np.savez")
    assert len(lines) == 2  # the error is not repeated by the log forwarder
    assert "not a readable .npz file" in caplog.text  # and still in the task's own log


def test_a_bug_is_reported_with_its_type_and_where_the_traceback_is(events):
    with pytest.raises(ZeroDivisionError):
        entry.run_stage("export", _params_json(), "", lambda params, tracker: 1 / 0)
    (line,) = _render(events)
    assert line.startswith("✗ export") and "ZeroDivisionError: division by zero" in line and "kfp.log" in line


def test_training_progress_becomes_events_not_a_bar_in_the_task_log(events):
    bar = console.progress_bar(total=10, initial=0, desc="train_gan")
    for _ in range(10):
        bar.update(1)
    bar.close()
    progress = [json.loads(line) for line in events.read_text().splitlines()]
    assert progress[0]["step"] == 0 and progress[-1]["step"] == 10 and progress[-1]["total"] == 10
    assert len(progress) < 10  # throttled


def test_without_a_listening_console_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.delenv(console.EVENTS_ENV, raising=False)
    console.emit("stage_start")
    assert not console.enabled()
    assert hasattr(console.progress_bar(3, 0, "x", True), "n")  # plain tqdm


@pytest.mark.parametrize(("stage", "result", "expected"), [
    ("prepare_data", {"counts": {"train": 54000, "val": 6000, "test": 10000}, "num_classes": 10},
     "train 54,000 / val 6,000 / test 10,000, 10 classes"),
    ("train_gan", {"selected_fid": 43.12, "selected_coverage": 0.993, "selected_agreement": 0.98, "best_step": 6000},
     "FID 43.1, coverage 0.993, agreement 98.00% (step 6000)"),
    ("distill_gan", {"method": "gan", "arch": "lenet5_half", "test_acc": 0.9782, "val_acc": 0.978,
                     "real_images_seen_by_student": 0},
     "gan → lenet5_half test 97.82% (val 97.80%), 0 real images seen"),
    ("distill_kd", {"method": "kd", "arch": "lenet5_half", "real_images_seen_by_student": 54000},
     "kd → lenet5_half test — (val —), 54,000 real images seen"),
    ("distill_kd", {"method": "kd"}, "kd →  test — (val —), ? real images seen"),  # a result without counts
    ("evaluate", {"metrics": {"student_test_acc": 0.978, "teacher_test_acc": 0.992, "agreement": 0.98}},
     "student 97.80% vs teacher 99.20%, agreement 98.00%"),
    ("promote", {"model_name": "m", "version": "3", "alias": "champion"}, "m v3 @champion"),
    ("promote_gate", {"passed": False, "reason": "test accuracy 0.5 < 0.95"}, "failed: test accuracy 0.5 < 0.95"),
])
def test_headlines(stage, result, expected):
    assert stage_records.headline(stage, result) == expected


def _params_json() -> str:
    from gandistill.config import Params

    return Params().to_json()


# -- through `gandistill run --local` ----------------------------------------------------------

def _run(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    env = os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    return subprocess.run([sys.executable, "-m", "gandistill", "run", "--local", "--profile", "smoke",
                           "--runs-dir", str(tmp_path / "runs"), "--run-name", "bad", "--set", "data.source=npz",
                           "--set", f"data.path={tmp_path / 'data.npz'}", *extra],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def test_run_console_shows_the_failing_stage_and_keeps_the_kfp_log_in_the_run_folder(tmp_path):
    # Labels and images of different lengths: prepare_data refuses them (the pre-run checks read headers only).
    np.savez(tmp_path / "data.npz", x=np.zeros((20, 8, 8), np.uint8), y=np.zeros(19, np.int64))
    proc = _run(tmp_path)
    assert proc.returncode == 3  # the stage's DataError, carried in its failure event
    assert "✗ prepare_data" in proc.stdout and "20 images but 19 labels" in proc.stdout  # the stage's own message
    last = proc.stderr.rstrip().splitlines()[-1]
    assert last.startswith("gandistill: error: prepare_data failed:") and "20 images but 19 labels" in last
    assert "\x1b[" not in proc.stdout + proc.stderr  # no colour codes off a terminal
    assert proc.stdout.count("20 images but 19 labels") == 1
    assert "executor_input" not in proc.stdout and "executorInput" not in proc.stdout  # no kfp JSON
    log_file = tmp_path / "runs" / "bad" / "kfp.log"
    assert str(Path("runs") / "bad" / "kfp.log") in proc.stderr or str(log_file) in proc.stderr
    kfp_log = log_file.read_text()
    assert "20 images but 19 labels" in kfp_log and "prepare-data" in kfp_log and '"outputs"' in kfp_log
    verbose = _run(tmp_path, "--verbose")
    assert verbose.returncode == 3 and '"outputs"' in verbose.stdout  # --verbose streams the kfp log
    assert "\x1b[" not in verbose.stdout + kfp_log  # kfp colours its task names: not in a pipe or a file
