"""The whole pipeline (kfp.local) against a real MLflow server whose artifact store is the
real S3 server: every stage logs a child run, the student is registered and aliased, and
the model's files land in the bucket. Training is shrunk below the smoke profile: this
checks wiring, not accuracy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from gandistill import storage

ROOT = Path(__file__).resolve().parents[2]
TINY = ["data.limit_train=200", "data.limit_test=100", "teacher.epochs=0.5", "gan.steps=4", "gan.eval_every=2",
        "gan.eval_samples=50", "distill.steps=4", "distill.eval_every=2", "evaluate.latency_runs=1",
        "evaluate.privacy_samples=50", "evaluate.gan_samples=50", "runtime.checkpoint_every=2",
        "export.int8_max_drop=0.05"]  # a 4-step student on 100 images: its INT8 drop is noise
STAGES = {"prepare_data", "train_teacher", "train_gan", "evaluate", "export", "promote"}


def test_pipeline_tracks_to_mlflow_server_and_s3(mlflow_server: Any, s3_env: dict[str, str], tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    tag = uuid.uuid4().hex[:8]
    model, experiment = f"it-student-{tag}", f"it-{tag}"
    env = {**os.environ, **mlflow_server.env(), "MLFLOW_EXPERIMENT_NAME": experiment,
           "GANDISTILL_CHECKPOINT_ROOT": str(tmp_path / "checkpoints")}
    cmd = [str(Path(sys.executable).parent / "gandistill"), "run", "--local", "--profile", "smoke",
           "--runs-dir", str(tmp_path / "runs"), "--run-name", f"it-{tag}",
           "--set", f"promote.model_name={model}", *(a for kv in TINY for a in ("--set", kv))]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    summary = json.loads((tmp_path / "runs" / f"it-{tag}" / "summary.json").read_text())
    assert summary["mlflow"]["tracking_uri"] == mlflow_server.mlflow_uri

    client = MlflowClient(tracking_uri=mlflow_server.mlflow_uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None and exp.artifact_location.startswith("mlflow-artifacts:")  # proxied by the server
    parent_id = summary["mlflow"]["parent_run_id"]
    assert client.get_run(parent_id).info.status == "FINISHED"
    # the run list's row for this pipeline run: the dataset and the headline accuracies, the
    # student's being the run's own method (a baseline's would not be logged there)
    row = client.get_run(parent_id)
    assert [d.dataset.name for d in row.inputs.dataset_inputs] == ["mnist"]
    assert row.data.metrics["teacher_test_acc"] == pytest.approx(summary["teacher"]["test_acc"])
    assert row.data.metrics["student_test_acc"] == pytest.approx(summary["student"]["test_acc"])
    children = client.search_runs([exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")
    names = {r.info.run_name for r in children}
    assert names >= STAGES and any(n.startswith("distill") for n in names), names
    assert all(r.info.status == "FINISHED" for r in children)
    assert any(r.data.metrics for r in children)
    # What the KFP UI shows of each training task (kfp.local wrote its executor output as a cluster's
    # launcher would): its final metrics — the numbers on its MLflow run — and its curves page.
    run_dir = Path(summary["run_dir"])
    for task, run_name in (("train-teacher", "train_teacher"), ("train-gan", "train_gan"), ("distill", "distill_gan")):
        output = json.loads((run_dir / task / "executor_output.json").read_text())
        shown = output["artifacts"]["metrics"]["artifacts"][0]["metadata"]
        logged = next(r for r in children if r.info.run_name == run_name).data.metrics
        assert shown.pop("wall_s") > 0 and shown, task
        assert shown == pytest.approx({key: logged[key] for key in shown}), task
        assert "data:image/png;base64," in (run_dir / task / "curves").read_text(), task

    versions = client.search_model_versions(f"name = '{model}'")
    assert len(versions) == 1
    aliases = client.get_registered_model(model).aliases
    assert set(aliases) & {"champion", "challenger"} and versions[0].version in aliases.values()

    # The server proxies artifacts into s3://gandistill/mlflow/<experiment id>/...
    listed = storage.client().list_objects_v2(Bucket="gandistill", Prefix=f"mlflow/{exp.experiment_id}/")
    keys = [o["Key"] for o in listed.get("Contents", [])]
    assert any(k.endswith("MLmodel") for k in keys), keys[:20]


def test_a_submitted_run_gets_one_parent_and_a_child_run_per_stage(mlflow_server: Any, tmp_path: Path,
                                                                     monkeypatch: Any) -> None:
    """The DAG run with the arguments `submit` sends (no parent_run_id): the stages find or
    create one parent by the KFP run id. On a cluster KFP_RUN_ID comes from each pod's
    `pipeline/runid` label (compiled-spec test); kfp.local has no pods, so this test sets it
    in the environment the task processes inherit — the stand-in for that label."""
    from gandistill_pipeline.dag import build_pipeline
    from kfp import local
    from mlflow.tracking import MlflowClient

    from gandistill import tracking
    from gandistill.config import load_params

    tag = uuid.uuid4().hex[:8]
    model, experiment, kfp_run_id = f"it-submitted-{tag}", f"it-submitted-{tag}", str(uuid.uuid4())
    for key, value in mlflow_server.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", experiment)
    monkeypatch.setenv(tracking.KFP_RUN_ID_ENV, kfp_run_id)
    monkeypatch.chdir(ROOT)  # data/mnist, as `make test` fetched it
    params = load_params(ROOT / "params.yaml", [*TINY, f"promote.model_name={model}"], profile="smoke")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"))
    build_pipeline(params)(data_rev="")  # submit's arguments: no parent_run_id

    client = MlflowClient(tracking_uri=mlflow_server.mlflow_uri)
    exp = client.get_experiment_by_name(experiment)
    parents = client.search_runs([exp.experiment_id], filter_string=f"tags.`{tracking.TAG_KFP_RUN}` = '{kfp_run_id}'")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"  # closed by promote, the last stage
    assert parent.data.tags["gandistill.method"] == params.distill.method
    children = client.search_runs([exp.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    names = [r.info.run_name for r in children]
    assert set(names) >= STAGES | {"promote_gate"} and any(n.startswith("distill") for n in names), names
    assert len(names) == len(set(names))  # one child run per stage
    assert all(r.info.status == "FINISHED" for r in children)
    runs = client.search_runs([exp.experiment_id])
    assert {r.info.run_id for r in runs} == {parent.info.run_id} | {r.info.run_id for r in children}
