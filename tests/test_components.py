"""The upstream kfp components' functions, called directly with real artifacts: each must
run its stage and publish what the next task reads. (evaluate/export/gate: see
test_evaluation_component.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gandistill_components.distill import distill
from gandistill_components.prepare_data import prepare_data
from gandistill_components.train_gan import train_gan
from gandistill_components.train_teacher import train_teacher
from helpers import artifact, smoke_params, training_outputs
from kfp import dsl

from gandistill.config import Params
from gandistill.model_files import load_generator
from gandistill.nets import count_parameters


@pytest.fixture(scope="module")
def chain(tmp_path_factory, mnist_dir):
    root = tmp_path_factory.mktemp("components")
    params = smoke_params(f"data.path={mnist_dir}", "data.limit_train=600", "data.limit_test=200",
                          "teacher.epochs=3", "gan.steps=20", "distill.steps=30")
    params_json = params.to_json()
    data = artifact(dsl.Dataset, root / "data")
    prepare_data(params_json, "", data, seed=params.seed)
    teacher = artifact(dsl.Model, root / "teacher")
    teacher_ui = training_outputs(root / "teacher-ui")
    train_teacher(params_json, "", data, teacher, **teacher_ui, seed=params.seed)
    generator = artifact(dsl.Model, root / "generator")
    train_gan(params_json, "", data, teacher, generator, **training_outputs(root / "gan-ui"), seed=params.seed,
              gan_steps=params.gan.steps)
    return {"params": params, "params_json": params_json, "data": data, "teacher": teacher, "generator": generator,
            "root": root, "teacher_ui": teacher_ui}


def test_prepare_data_publishes_splits_and_version(chain):
    data = chain["data"]
    meta = json.loads((Path(data.path) / "meta.json").read_text())
    assert meta["class_names"] == [str(i) for i in range(10)]
    assert abs(data.metadata["n_train"] - 600) <= 10 and abs(data.metadata["n_test"] - 200) <= 10  # stratified rounding
    assert "train-images-idx3-ubyte" in data.metadata["version"]


def test_train_teacher_publishes_model_and_accuracy(chain):
    teacher = chain["teacher"]
    assert (Path(teacher.path) / "model.pt").is_file()
    assert teacher.metadata["params"] == 61_706
    assert 0.5 < teacher.metadata["test_acc"] <= 1.0  # 3 epochs on 600 images: far above chance
    # what the KFP UI shows of the task: its final metrics (those on its MLflow run) and its curves page
    shown = chain["teacher_ui"]["metrics"].metadata
    assert shown["test_acc"] == pytest.approx(teacher.metadata["test_acc"]) and shown["wall_s"] > 0
    assert set(shown) == {"final_val_acc", "test_acc", "params", "wall_s"}
    assert "data:image/png;base64," in Path(chain["teacher_ui"]["curves"].path).read_text()


def test_train_gan_publishes_generator_with_quality_metrics(chain):
    generator = chain["generator"]
    result = json.loads((Path(generator.path) / "result.json").read_text())
    selected = next(h for h in result["history"] if h["step"] == result["best_step"])
    # the metadata are the quality of the checkpoint the stage selected (lowest FID), as measured
    assert selected["fid"] == min(h["fid"] for h in result["history"])
    for key in ("fid", "coverage", "agreement"):
        assert generator.metadata[f"selected_{key}"] == pytest.approx(selected[key])
    assert 0.0 < generator.metadata["selected_fid"] < float("inf")
    assert 0.0 <= generator.metadata["selected_coverage"] <= 1.0
    assert 0.0 <= generator.metadata["selected_agreement"] <= 1.0
    assert generator.metadata["steps"] == 20 and generator.metadata["best_step"] <= 20
    # and the published model is that generator: it loads and draws images of the data's shape
    model = load_generator(generator.path)
    assert count_parameters(model) == generator.metadata["generator_params"]
    images, labels = model.sample(4)
    assert images.shape == (4, 1, 28, 28) and labels.shape == (4,)


@pytest.mark.parametrize("method", ["gan", "kd"])
def test_distill_runs_the_requested_method(chain, method):
    student = artifact(dsl.Model, chain["root"] / f"student_{method}")
    params = chain["params"]
    distill(chain["params_json"], "", method, chain["data"], chain["teacher"], student,
            **training_outputs(chain["root"] / f"student_{method}-ui"), seed=params.seed,
            distill_steps=params.distill.steps, generator=chain["generator"] if method == "gan" else None)
    assert student.metadata["method"] == method
    assert student.metadata["params"] == 15_738
    seen = student.metadata["real_images_seen_by_student"]
    assert (seen == 0) if method == "gan" else (seen > 0)


def test_components_reject_bad_params_in_the_first_task(tmp_path):
    bad = Params().to_json().replace('"val_fraction":0.1', '"val_fraction":0.9')
    with pytest.raises(SystemExit) as exit_info:
        prepare_data(bad, "", artifact(dsl.Dataset, tmp_path / "data"), seed=0)
    assert exit_info.value.code == 2
    assert not (tmp_path / "data").exists()
