"""The DAG: compile + load back, and a real end-to-end kfp.local run on the smoke profile."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from gandistill_pipeline.dag import compile_pipeline

from gandistill.config import load_params

STAGES = ["prepare-data", "train-teacher", "train-gan", "distill", "evaluate", "export", "promote"]


def _tasks(spec: dict) -> set[str]:
    tasks = set(spec["root"]["dag"]["tasks"])
    for component in spec["components"].values():  # tasks inside dsl.If/Else sub-DAGs
        tasks |= set(component.get("dag", {}).get("tasks", {}))
    return tasks


def test_compiled_pipeline_loads_back_with_every_stage(repo_root, tmp_path):
    from kfp import components

    output = tmp_path / "pipeline.yaml"
    compile_pipeline(load_params(repo_root / "params.yaml"), str(output))
    loaded = components.load_component_from_file(str(output))
    assert loaded.name == "gandistill"
    spec = next(yaml.safe_load_all(output.read_text()))
    tasks = _tasks(spec)
    for stage in STAGES:
        assert any(t.startswith(stage) for t in tasks), stage
    distill = spec["root"]["dag"]["tasks"]["distill"]["inputs"]["parameters"]
    assert json.loads(distill["params_json"]["runtimeValue"]["constant"])["distill"]["method"] == "gan"


def test_data_free_dag_has_no_gan_on_real_data(repo_root, tmp_path):
    output = tmp_path / "pipeline.yaml"
    compile_pipeline(load_params(repo_root / "params.yaml", ["distill.method=data_free"]), str(output))
    tasks = _tasks(next(yaml.safe_load_all(output.read_text())))
    assert not any(t.startswith("train-gan") for t in tasks)


def test_baselines_fan_out_and_feed_evaluate(repo_root, tmp_path):
    """evaluate.baselines: one more distill task per method in a ParallelFor, collected into
    evaluate; train_gan runs only when some student (main or baseline) needs the cGAN."""
    for method, baselines, gan in (("data_free", "[kd, scratch]", False), ("kd", "[gan]", True)):
        output = tmp_path / f"{method}.yaml"
        compile_pipeline(load_params(repo_root / "params.yaml", [f"distill.method={method}",
                                                                 f"evaluate.baselines={baselines}"]), str(output))
        spec = next(yaml.safe_load_all(output.read_text()))
        tasks = spec["root"]["dag"]["tasks"]
        loop = next(t for t in tasks.values() if t["taskInfo"]["name"] == "baselines")
        assert json.loads(loop["parameterIterator"]["items"]["raw"]) == yaml.safe_load(baselines)
        loop_dag = spec["components"][loop["componentRef"]["name"]]["dag"]["tasks"]
        assert [t["componentRef"]["name"] for t in loop_dag.values()] == ["comp-distill-2"]
        collected = tasks["evaluate"]["inputs"]["artifacts"]["baselines"]["taskOutputArtifact"]
        assert collected["producerTask"] == next(k for k, t in tasks.items() if t is loop)
        assert any(t.startswith("train-gan") for t in _tasks(spec)) is gan


def test_baselines_must_differ_from_the_method(repo_root):
    from gandistill.errors import ConfigError

    for bad in ("[gan]", "[kd, kd]"):
        with pytest.raises(ConfigError, match="evaluate.baselines must list methods other than") as err:
            load_params(repo_root / "params.yaml", [f"evaluate.baselines={bad}"])
        assert err.value.exit_code == 2


@pytest.mark.slow
def test_run_local_smoke_end_to_end(repo_root, tmp_path, mnist_dir, monkeypatch):
    """`gandistill run --local --profile smoke`: every artifact, the MLflow runs and a registry version."""
    runs = tmp_path / "runs"
    db = tmp_path / "mlflow.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{db}",
           "GANDISTILL_CHECKPOINT_ROOT": str(runs / "checkpoints")}
    result = subprocess.run(
        [sys.executable, "-m", "gandistill", "run", "--local", "--profile", "smoke", "--runs-dir", str(runs),
         "--set", f"data.path={mnist_dir}", "--set", "evaluate.baselines=[kd]", "--run-name", "e2e"],
        cwd=repo_root, env=env, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "gandistill run summary" in result.stdout

    summary = json.loads((runs / "latest" / "summary.json").read_text())
    assert summary["status"] == "FINISHED"
    assert summary["teacher"]["params"] == 61_706 and summary["student"]["params"] == 15_738
    assert summary["student"]["real_images_seen"] == 0
    assert summary["compression_ratio"] == pytest.approx(3.92, abs=0.01)
    artifacts = {k: Path(v) for k, v in summary["artifacts"].items()}
    assert (artifacts["prepare_data"] / "train.npz").is_file()
    assert (artifacts["train_teacher"] / "model.pt").is_file()
    assert (artifacts["train_gan"] / "model.pt").is_file()
    assert (artifacts["distill"] / "model.pt").is_file()
    assert Path(summary["report"]["html"]).is_file()
    assert 0.0 < summary["evaluation"]["baseline_kd_test_acc"] <= 1.0  # the fanned-out baseline student
    assert "| baseline kd" in (artifacts["evaluate"] / "summary.md").read_text()
    assert (artifacts["export"] / "model.onnx").is_file() and (artifacts["export"] / "model.pt2").is_file()
    # the INT8 student: shipped by export, timed by evaluate (same bytes), carried by the registry
    int8 = artifacts["export"] / "model.int8.onnx"
    exported = json.loads((artifacts["export"] / "result.json").read_text())
    assert int8.is_file() and exported["int8"]["calibration"] == "generated" and exported["int8"]["same_as_evaluated"]
    assert summary["evaluation"]["student_int8_test_acc"] == pytest.approx(exported["int8_test_acc"])

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    parent = client.get_run(summary["mlflow"]["parent_run_id"])
    assert parent.info.status == "FINISHED"
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    names = {c.info.run_name for c in children}
    assert {"prepare_data", "train_teacher", "train_gan", "distill_gan", "distill_kd", "evaluate", "export",
            "promote"} <= names
    gan_run = next(c for c in children if c.info.run_name == "train_gan")
    assert "gan.fm_weight" in gan_run.data.params and "fid" in gan_run.data.metrics
    # a stage's run logs its own section (its task received only what it reads, knobs included);
    # the parent run logs the whole params, as before
    assert gan_run.data.params["gan.steps"] == "30" and gan_run.data.params["seed"] == "0"
    assert parent.data.params["promote.min_accuracy"] == "0.95" and parent.data.params["gan.steps"] == "30"
    assert client.get_metric_history(gan_run.info.run_id, "loss_d")  # per-step metrics, not just finals
    versions = client.search_model_versions("name = 'gandistill-student'")
    assert len(versions) == 1
    assert versions[0].tags["int8_artifact"] == "extra_files/model.int8.onnx"
    assert float(versions[0].tags["int8_test_acc"]) == pytest.approx(exported["int8_test_acc"], abs=1e-6)
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    local = mlflow.artifacts.download_artifacts(f"models:/gandistill-student/{versions[0].version}",
                                                dst_path=str(tmp_path / "dl"))
    assert next(Path(local).rglob("model.int8.onnx")).read_bytes() == int8.read_bytes()
    assert str(summary["registry"]["version"]) in {str(v.version) for v in versions}
