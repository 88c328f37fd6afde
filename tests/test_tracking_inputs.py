"""MLflow's own hooks, on a real sqlite tracking store: the prepared dataset is each stage run's
input (digest = its DVC md5), training stages log system metrics (MLflow's public switch), the
pipeline's parent run shows the dataset and the headline accuracies (the run list's columns),
and the experiment declares itself a model-training one (the UI's training view)."""

from __future__ import annotations

from pathlib import Path

import yaml
from gandistill_components.prepare_data import prepare_data
from gandistill_components.train_teacher import train_teacher
from helpers import artifact, smoke_params, training_outputs
from kfp import dsl

from gandistill import tracking

ROOT = Path(__file__).resolve().parents[1]


def test_stage_runs_record_the_dataset_with_its_dvc_md5_and_training_records_system_metrics(
        tmp_path, mnist_dir, monkeypatch):
    monkeypatch.chdir(ROOT)  # data.dvc, the pointer the MNIST files are verified against, lives here
    # MLflow's monitor logs a sample per interval and drops the last partial one: the teacher below
    # trains for several intervals (a warm 1-epoch teacher on 300 images took less than one).
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.05")
    params = smoke_params(f"data.path={mnist_dir}", "data.limit_train=1000", "data.limit_test=100",
                          "teacher.epochs=3").to_json()
    seed = 0
    parent = tracking.start_parent_run("inputs")
    data, teacher = artifact(dsl.Dataset, tmp_path / "data"), artifact(dsl.Model, tmp_path / "teacher")
    prepare_data(params, parent, data, seed=seed)
    train_teacher(params, parent, data, teacher, **training_outputs(tmp_path / "teacher-ui"), seed=seed)

    client = tracking.client()
    experiment = client.get_run(parent).info.experiment_id
    runs = {r.info.run_name: r for r in client.search_runs(
        [experiment], filter_string=f"tags.mlflow.parentRunId = '{parent}'")}
    dvc_md5 = yaml.safe_load((ROOT / "data.dvc").read_text())["outs"][0]["md5"]
    for name, context in (("prepare_data", "prepare_data"), ("train_teacher", "training")):
        (given,) = runs[name].inputs.dataset_inputs
        assert given.dataset.name == "mnist" and given.dataset.digest == dvc_md5
        assert given.dataset.source_type == "dvc"
        assert {t.key: t.value for t in given.tags}["mlflow.data.context"] == context
    system = [k for k in runs["train_teacher"].data.metrics if k.startswith("system/")]
    assert "system/cpu_utilization_percentage" in system and "system/system_memory_usage_megabytes" in system
    assert not any(k.startswith("system/") for k in runs["prepare_data"].data.metrics)  # training stages only

    row = client.get_run(parent)  # the pipeline run's row in the run list
    (given,) = row.inputs.dataset_inputs
    assert given.dataset.name == "mnist" and given.dataset.digest == dvc_md5
    teacher_result = runs["train_teacher"].data.metrics
    assert row.data.metrics["teacher_test_acc"] == teacher_result["test_acc"]
    assert row.data.metrics["teacher_val_acc"] == teacher_result["final_val_acc"]
    assert client.get_experiment(experiment).tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
