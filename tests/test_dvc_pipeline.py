"""dvc.yaml: DVC's own commands on the pipeline, with the real dvc CLI on the smoke profile.

A scratch git + DVC repository holds the project's dvc.yaml, .gitignore and .dvcignore, a
params.yaml with the smoke budgets, the code folders the stage depends on and MNIST (hard
links, a plain dependency there: no data.dvc, no DVC remote); then `dvc repro`,
`dvc exp run -S distill.method=kd`, `dvc exp show`, `dvc params diff`, `dvc metrics diff` and
`dvc plots show` run as a user would run them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_dvc_yaml_declares_the_params_the_data_and_the_run_record() -> None:
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["gandistill"]
    assert stage["cmd"].startswith("gandistill run --local")
    assert {"data", "gandistill", "components", "pipeline"} <= set(stage["deps"])
    assert stage["params"] == [{"params.yaml": None}]  # every key
    assert stage["metrics"] == ["runs/dvc/metrics.json"]
    assert stage["outs"] == ["runs/dvc/plots"]  # cached: each experiment keeps its curves
    from gandistill_pipeline import runs

    drawn = {file for plot in yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
             for spec in plot.values() for file in spec["y"]}
    assert drawn == {f"runs/dvc/plots/{name}.csv" for name in runs.CURVES.values()}


def _drawn(shown: dict) -> dict[str, set[str]]:
    """`dvc plots show --json`: each plot's id → the columns its y axis draws (the vega spec's y
    encodings; several columns are melted into `dvc_inferred_y_value`, each row naming its `field`)."""

    def y_fields(node: object) -> set[str]:
        if isinstance(node, list):
            return {f for item in node for f in y_fields(item)}
        if not isinstance(node, dict):
            return set()
        own = {node["y"]["field"]} if isinstance(node.get("y"), dict) and "field" in node["y"] else set()
        return own | {f for key, value in node.items() if key != "data" for f in y_fields(value)}

    drawn = {}
    for plot_id, renders in shown["data"].items():
        fields = y_fields([r["content"] for r in renders])
        if "dvc_inferred_y_value" in fields:
            fields = {row["field"] for r in renders for row in r["content"]["data"]["values"]}
        drawn[plot_id] = fields
    return drawn


def _dvc(repo: Path, env: dict[str, str], *args: str) -> str:
    proc = subprocess.run([str(BIN / "dvc"), *args], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, f"dvc {' '.join(args)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _revs(node: object) -> list[dict]:
    """Every revision record in `dvc exp show --json` (commits, experiments, the workspace)."""
    if isinstance(node, list):
        return [rev for item in node for rev in _revs(item)]
    if not isinstance(node, dict):
        return []
    found = [node] if isinstance(node.get("data"), dict) and "params" in node["data"] else []
    return found + [rev for key, value in node.items() if key != "data" for rev in _revs(value)]


def _params_of(rev: dict) -> dict:
    return rev["data"].get("params", {}).get("params.yaml", {}).get("data", {})


def _metrics_of(rev: dict) -> dict:
    return (rev["data"].get("metrics") or {}).get("runs/dvc/metrics.json", {}).get("data", {})


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, timeout=60)


@pytest.mark.slow
def test_dvc_repro_exp_run_and_diffs_on_the_smoke_profile(tmp_path: Path, mnist_dir: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    for folder in ("gandistill", "components", "pipeline"):
        shutil.copytree(ROOT / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "data" / "mnist").mkdir(parents=True)
    for file in mnist_dir.iterdir():
        os.link(file, repo / "data" / "mnist" / file.name)
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    shutil.copy(ROOT / ".gitignore", repo / ".gitignore")  # the project's: dvc.lock must not be ignored
    env = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
                        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
                        "GANDISTILL_CHECKPOINT_ROOT": str(tmp_path / "checkpoints"),
                        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    # params.yaml with the smoke budgets, as `gandistill params` prints them: a full, valid params file
    smoke = subprocess.run([str(BIN / "gandistill"), "params", "--profile", "smoke"], cwd=ROOT, env=env,
                           capture_output=True, text=True, check=True).stdout
    (repo / "params.yaml").write_text(smoke)
    _git(repo, "init", "-q")
    _dvc(repo, env, "init", "-q")
    shutil.copy(ROOT / ".dvcignore", repo / ".dvcignore")  # the project's: byte-code is not a code change
    _dvc(repo, env, "repro")
    # the gan run's curves (the kd experiment below trains no GAN: its GAN plots are empty)
    drawn = _drawn(json.loads(_dvc(repo, env, "plots", "show", "--json")))
    assert drawn == {"teacher validation accuracy": {"val_acc"}, "GAN teacher-feature FID (lower is better)": {"fid"},
                     "GAN conditioning agreement and class coverage": {"agreement", "coverage"},
                     "student validation accuracy": {"val_acc"}}, drawn  # by name, not the last column
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "baseline")

    _dvc(repo, env, "exp", "run", "-S", "distill.method=kd")
    shown = json.loads(_dvc(repo, env, "exp", "show", "--json"))
    rows = [(_params_of(rev)["distill"]["method"], _metrics_of(rev)) for rev in _revs(shown)
            if _params_of(rev) and _metrics_of(rev)]
    assert {"gan", "kd"} <= {method for method, _ in rows}, rows  # the baseline commit and the experiment
    for _, metrics in rows:
        assert 0.0 < metrics["student"]["test_acc"] <= 1.0 and metrics["teacher"]["params"] == 61_706

    params_diff = json.loads(_dvc(repo, env, "params", "diff", "--json"))
    assert params_diff["params.yaml"]["distill.method"] == {"old": "gan", "new": "kd"}
    metrics_diff = json.loads(_dvc(repo, env, "metrics", "diff", "--json", "--all"))
    changed = metrics_diff["runs/dvc/metrics.json"]
    assert "student.test_acc" in changed and "student.real_images_seen" in changed
    assert changed["student.real_images_seen"]["old"] == 0 and changed["student.real_images_seen"]["new"] > 0
