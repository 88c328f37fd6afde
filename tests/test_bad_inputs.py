"""The bad-input corpus: each fault a user can make, run through the real CLI (`python -m
gandistill` in a subprocess), must end with the documented exit code (README, "Exit codes"), a
last line that names the fault and the fix, and nothing half-written.

Cases caught before the pipeline starts run in the default suite (a CLI start each: seconds);
cases raised inside a pipeline task run kfp.local for real, behind the `slow` marker, with two
concurrent same-params runs of the whole pipeline.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import HOLD_AFTER_CHECKPOINT, ROOT, dead_port, make_pattern_images, write_idx

MNIST = ROOT / "data" / "mnist"


def _patterns(folder: Path, name: str = "data.npz", size: int = 16, **arrays: np.ndarray) -> str:
    x, y = make_pattern_images(400, 4, size=size)
    np.savez(folder / name, **({"x": x, "y": y} | arrays))
    return str(folder / name)


@dataclass
class Case:
    """One bad input: the CLI arguments (after `gandistill`; `{tmp}` is the case's folder), what
    to put there first, the exit code, and the fragments the last line must hold."""

    args: list[str]
    code: int
    says: list[str]
    setup: Callable[[Path], object] = lambda tmp: None
    env: dict[str, str] = field(default_factory=dict)


def _dup_params(tmp: Path) -> None:
    (tmp / "dup.yaml").write_text("distill:\n  steps: 3\ndistill:\n  lr: 0.1\n")


def _idx_without_labels(tmp: Path) -> None:
    (tmp / "idx").mkdir()
    write_idx(tmp / "idx" / "train-images-idx3-ubyte", make_pattern_images(40, 4)[0][:, 0])


def _empty_imagefolder(tmp: Path) -> None:
    (tmp / "photos").mkdir()
    (tmp / "photos" / "notes.txt").write_text("no class folders here")


NPZ = ["--set", "data.source=npz", "--set", "data.path={tmp}/data.npz"]

BEFORE_THE_PIPELINE = {
    "unknown key": Case(["validate", "--set", "teacher.epoch=3"], 2,
                        ["teacher.epoch: unknown key", "did you mean 'teacher.epochs'"]),
    "inf float": Case(["run", "--local", "--set", "gan.fm_weight=inf"], 2,
                      ["gan.fm_weight: Input should be a finite number (got 'inf')"]),
    "nan float": Case(["validate", "--set", "distill.lr=nan"], 2, ["distill.lr: Input should be a finite number"]),
    "duplicate section": Case(["run", "--local", "--params", "{tmp}/dup.yaml"], 2,
                              ["distill: given twice (lines 1 and 3)"], _dup_params),
    "bad YAML value": Case(["validate", "--set", "distill.lr=[1"], 2, ["--set 'distill.lr=[1'", "not valid YAML"]),
    "params file that is not YAML": Case(
        ["run", "--local", "--params", "{tmp}/bad.yaml"], 2,
        ["bad.yaml is not valid YAML: line 3, column 1: expected ',' or ']'",
         "(while parsing a flow sequence at line 2"],
        lambda tmp: (tmp / "bad.yaml").write_text("distill:\n  steps: [3\n")),
    "params file missing": Case(["validate", "--params", "{tmp}/nope.yaml"], 2, ["nope.yaml not found", "--params"]),
    "unknown profile": Case(["validate", "--profile", "smok"], 2, ["profile 'smok' is not defined", "smoke"]),
    "value out of range": Case(["validate", "--set", "distill.steps=-5"], 2,
                               ["distill.steps: Input should be greater than or equal to 1 (got -5)"]),
    "unknown method": Case(["run", "--local", "--set", "distill.method=magic"], 2,
                           ["distill.method: Input should be 'scratch'", "(got 'magic')"]),
    "missing npz (run)": Case(["run", "--local", "--set", "data.source=npz", "--set", "data.path=nope.npz"], 3,
                              ["data.path=nope.npz (data.source=npz): no such file", "np.savez"]),
    "missing npz (validate)": Case(["validate", "--set", "data.source=npz", "--set", "data.path=nope.npz"], 3,
                                   ["data.path=nope.npz (data.source=npz): no such file"]),
    "npz that is no zip": Case(["run", "--local", *NPZ], 3, ["not a .npz file (not a zip archive)"],
                               lambda tmp: (tmp / "data.npz").write_bytes(b"not a zip")),
    "npz without labels": Case(["validate", *NPZ], 3, ["holds no array y (found: x)"],
                               lambda tmp: np.savez(tmp / "data.npz", x=np.zeros((20, 16, 16), np.uint8))),
    "IDX folder without labels": Case(["run", "--local", "--set", "data.source=idx", "--set", "data.path={tmp}/idx"],
                                      3, ["no train-labels-idx1-ubyte (or .gz)"], _idx_without_labels),
    "image folder without classes": Case(
        ["run", "--local", "--set", "data.source=imagefolder", "--set", "data.path={tmp}/photos"], 3,
        ["data.path=", "holds no class folders"], _empty_imagefolder),
    "imported teacher missing": Case(
        ["run", "--local", "--set", "teacher.source=torchscript", "--set", "teacher.path={tmp}/teacher.ts"], 3,
        ["teacher.path=", "teacher.ts: file not found"]),
    "target domain missing": Case(
        ["run", "--local", "--set", "distill.method=cyclegan", "--set", "data.target_source=npz",
         "--set", "data.target_path=nope.npz"], 2, ["data.target_path=nope.npz", "Fix data.target_source"]),
    "architecture that cannot fit": Case(["run", "--local", *NPZ, "--set", "teacher.arch=lenet5"], 2,
                                         ["teacher.arch"], lambda tmp: _patterns(tmp, size=8)),
    "runs dir is a file": Case(["run", "--local", "--runs-dir", "{tmp}/afile"], 2,
                               ["--runs-dir", "afile is a file, not a folder"],
                               lambda tmp: (tmp / "afile").write_text("x")),
    "runs dir not writable": Case(["run", "--local", "--runs-dir", "/sys/gandistill-runs"], 2,
                                  ["--runs-dir /sys/gandistill-runs: cannot write in /sys"]),
    "run name that escapes": Case(["run", "--local", "--run-name", "../../etc/x"], 2, ["--run-name '../../etc/x'"]),
    "checkpoint store unreachable": Case(
        ["run", "--local", "--set", "pipeline.checkpoint_root=s3://gandistill/checkpoints"], 5,
        ["unreachable", "AWS_ENDPOINT_URL"],
        env={"AWS_ENDPOINT_URL": "http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y",
             "GANDISTILL_S3_MAX_ATTEMPTS": "1", "AWS_EC2_METADATA_DISABLED": "true"}),
    "MLflow unreachable": Case(["run", "--local"], 5, ["MLFLOW_TRACKING_URI", "127.0.0.1:{port}"],
                               env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:{port}",
                                    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}),
}


def _cli(case: Case, tmp: Path, mlflow_db: Path | None = None) -> subprocess.CompletedProcess:
    """Run the case in `tmp` (its working directory), with the smoke profile and the repository's
    MNIST unless the case says otherwise. `{port}` in its env is a port nobody listens on."""
    with dead_port() as port:
        return _run_case(case, tmp, str(port), mlflow_db)


def _run_case(case: Case, tmp: Path, port: str, mlflow_db: Path | None) -> subprocess.CompletedProcess:
    args = [a.replace("{tmp}", str(tmp)) for a in case.args]
    if args[0] == "run":
        args += ["--profile", "smoke"] + ([] if "--runs-dir" in args else ["--runs-dir", str(tmp / "runs")])
    if "data.source=npz" not in args and "data.source=idx" not in args and "data.source=imagefolder" not in args:
        args += ["--set", f"data.path={MNIST}"]  # never a fetch from the registry
    env = {**os.environ, **{k: v.replace("{port}", port) for k, v in case.env.items()}}
    env.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{mlflow_db or tmp / 'mlflow.db'}")
    env.pop("GANDISTILL_CHECKPOINT_ROOT", None)  # the run's own: runs/checkpoints under --runs-dir
    says = [s.replace("{port}", port) for s in case.says]
    proc = subprocess.run([sys.executable, "-m", "gandistill", *args], cwd=tmp, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == case.code, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    # The error is what the run prints last (a ConfigError lists one key per line): nothing logged after it.
    message = proc.stderr[proc.stderr.rfind("gandistill: error: "):]
    assert message.startswith("gandistill: error: ") and (message == proc.stderr or proc.stderr[
        -len(message) - 1] == "\n"), proc.stderr[-2000:]
    assert not re.search(r"^\d{4}-\d\d-\d\d[ T]", message, re.M), message
    for fragment in says:
        assert fragment in message, (fragment, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr and "\x1b[" not in proc.stdout + proc.stderr
    return proc


@pytest.mark.parametrize("name", list(BEFORE_THE_PIPELINE))
def test_a_bad_input_caught_before_the_pipeline_exits_with_its_code_and_writes_nothing(
        name: str, tmp_path: Path) -> None:
    case = BEFORE_THE_PIPELINE[name]
    case.setup(tmp_path)
    before = set(tmp_path.iterdir())
    _cli(case, tmp_path)
    assert set(tmp_path.iterdir()) == before  # no runs dir, no mlflow.db, no checkpoints, nothing


# -- raised inside a pipeline task ---------------------------------------------------------------

def _kfp_files(runs: Path, task: str) -> list[Path]:
    """Files under the kfp task folder `task` of every pipeline run, staging folders included."""
    return [f for f in runs.glob(f"kfp/*/{task}/**/*") if f.is_file()]


def _garbage_torchscript(tmp: Path) -> None:
    _patterns(tmp)
    (tmp / "teacher.ts").write_bytes(b"PK\x03\x04 not a TorchScript archive")


def _state_dict_for_10_classes(tmp: Path) -> None:
    from gandistill.nets import build_classifier

    _patterns(tmp)
    torch.save(build_classifier("lenet5", 1, (16, 16), 10).state_dict(), tmp / "teacher.pt")


def _label_12(tmp: Path) -> None:
    x, y = make_pattern_images(400, 10, size=16)
    y[[37, 150]] = 12
    np.savez(tmp / "data.npz", x=x, y=y)


# (case, the task that must fail, the tasks that completed before it)
INSIDE_THE_PIPELINE = {
    "teacher that cannot teach": (Case(
        ["run", "--local", *NPZ, "--set", "teacher.epochs=0.01", "--set", "teacher.lr=1e-9",
         "--set", "teacher.min_accuracy=null"], 4,
        ["train_teacher failed", "below the 43.8% it needs to teach", "teacher.min_accuracy=0"],
        lambda tmp: _patterns(tmp)), "train-teacher", ["prepare-data"]),
    "label out of range": (Case(["run", "--local", *NPZ], 3,
                                ["prepare_data failed", "label 12 at y[37, 150] (2 images)", "out of range"],
                                _label_12), "prepare-data", []),
    "pixels stored as floats": (Case(
        ["run", "--local", *NPZ], 3, ["prepare_data failed", "pixels are float32", "uint8"],
        lambda tmp: _patterns(tmp, x=make_pattern_images(400, 4)[0].astype(np.float32) / 255)),
        "prepare-data", []),
    "TorchScript teacher that is not one": (Case(
        ["run", "--local", *NPZ, "--set", "teacher.source=torchscript", "--set", "teacher.path={tmp}/teacher.ts"], 3,
        ["train_teacher failed", "not a TorchScript file"], _garbage_torchscript), "train-teacher", ["prepare-data"]),
    "state-dict teacher with other classes": (Case(
        ["run", "--local", *NPZ, "--set", "teacher.source=state_dict", "--set", "teacher.path={tmp}/teacher.pt",
         "--set", "teacher.arch=lenet5"], 3,
        ["train_teacher failed", "the teacher has 10 classes but the data has 4"], _state_dict_for_10_classes),
        "train-teacher", ["prepare-data"]),
}


@pytest.fixture(scope="module")
def shared_mlflow(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tracking store for the in-pipeline cases: its tables are created once."""
    return tmp_path_factory.mktemp("mlflow") / "mlflow.db"


# kfp.local runs of 20-45 s each. The default suite checks the task boundary itself (tests/test_console.py,
# tests/test_reliability.py) and the teacher gate (tests/test_teacher_gate.py).
@pytest.mark.slow
@pytest.mark.parametrize("name", list(INSIDE_THE_PIPELINE))
def test_a_bad_input_raised_inside_a_task_exits_with_its_class_code_and_writes_nothing_downstream(
        name: str, tmp_path: Path, shared_mlflow: Path) -> None:
    """The stage's error class crosses the task boundary in its failure event: the run exits with
    that class's code and its message last. The failing task wrote nothing (its outputs are staged)
    and no later task ran; what completed before it is whole (its result.json written last)."""
    case, failed, completed = INSIDE_THE_PIPELINE[name]
    case.setup(tmp_path)
    proc = _cli(case, tmp_path, shared_mlflow)
    runs = tmp_path / "runs"
    assert f"✗ {failed.replace('-', '_')}" in proc.stdout
    assert _kfp_files(runs, failed) == [], _kfp_files(runs, failed)
    for task in completed:
        assert any(f.name == "result.json" for f in _kfp_files(runs, task)), task
    done = {p.name for p in runs.glob("kfp/*/*")} - {"check-params", failed, *completed}
    assert not done, f"tasks after the failure ran: {done}"
    summary = json.loads((runs / "latest" / "summary.json").read_text())
    assert summary["status"] == "FAILED" and not summary["registry"]


# -- two live runs with the same params, through the CLI -------------------------------------------

@pytest.mark.slow
def test_two_concurrent_same_params_runs_never_read_each_others_live_checkpoint(tmp_path: Path) -> None:
    """Two `gandistill run --local --profile smoke` with the same params and runs dir, started a
    second apart (a manual run beside a scheduled one). Every stage of the later run either trains
    alone or waits for the earlier one and resumes from its *final* checkpoint — the issue's run B
    "resumed from step 14" of A's live one — and both end with the same teacher and student."""
    x, y = make_pattern_images(600, 4, size=16)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    common = ["--profile", "smoke", "--runs-dir", str(tmp_path / "runs"), "--set", "data.source=npz",
              "--set", f"data.path={tmp_path / 'data.npz'}", "--set", "gan.steps=200", "--set", "distill.steps=200"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    env.pop("GANDISTILL_CHECKPOINT_ROOT", None)
    make_store = "from gandistill import tracking; tracking.ensure_experiment(tracking.client())"
    subprocess.run([sys.executable, "-c", make_store], cwd=tmp_path, env=env, check=True, capture_output=True)
    # Overlap by construction, not by timing (a loaded machine once let the runs miss each other): every
    # process of both runs loads a sitecustomize (helpers.HOLD_AFTER_CHECKPOINT) that holds each checkpoint
    # save until `release` exists; the test creates it once one run says it waits for the other.
    release, hook = tmp_path / "release", tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOLD_AFTER_CHECKPOINT)
    env |= {"PYTHONPATH": os.pathsep.join(filter(None, [str(hook), env.get("PYTHONPATH")])),
            "HOLD_SAVES_UNTIL": str(release)}
    runs = []
    for name in ("a", "b"):
        runs.append(subprocess.Popen([sys.executable, "-m", "gandistill", "run", "--local", "--run-name", name,
                                      *common], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True))
        time.sleep(1)
    log_files = [tmp_path / "runs" / name / "kfp.log" for name in ("a", "b")]
    deadline = time.monotonic() + 900
    while not any(f.is_file() and " in use by " in f.read_text() for f in log_files):
        assert time.monotonic() < deadline and all(p.poll() is None for p in runs), "neither run waited"
        time.sleep(0.5)
    release.touch()
    outputs = [proc.communicate(timeout=1800)[0] for proc in runs]
    assert [proc.returncode for proc in runs] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    logs = {name: (tmp_path / "runs" / name / "kfp.log").read_text() for name in ("a", "b")}
    summaries = {name: json.loads((tmp_path / "runs" / name / "summary.json").read_text()) for name in ("a", "b")}
    teacher_steps = json.loads((Path(summaries["a"]["artifacts"]["train_teacher"]) / "result.json").read_text())
    totals = {"train_teacher": teacher_steps["steps"], "train_gan": 200, "distill[gan]": 200}
    waiting = re.findall(r"\[(train_teacher|train_gan|distill\[gan\])\] checkpoints .* in use by [ab] ",
                         logs["a"] + logs["b"])
    assert waiting, "the runs never overlapped in a training stage: " + logs["b"][-2000:]
    resumed = re.findall(r"\[(train_teacher|train_gan|distill\[gan\])\] resumed from step (\d+)", logs["a"] + logs["b"])
    for stage, step in resumed:  # only ever a finished checkpoint, never a live one
        assert int(step) == totals[stage], (stage, step)
    assert {stage for stage, _ in resumed} >= set(waiting)  # each wait ended in resuming the finished run
    models = {name: {k: torch.load(Path(summary["artifacts"][k]) / "model.pt", weights_only=True)["state_dict"]
                     for k in ("train_teacher", "distill")} for name, summary in summaries.items()}
    for stage in ("train_teacher", "distill"):
        a, b = models["a"][stage], models["b"][stage]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), stage
