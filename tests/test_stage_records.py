"""A stage is one record (gandistill.stage_records): the DAG, the components' entry point, the local
runner, the console, the launcher and the resources list are built from it.

- every record agrees with its stage function and its component;
- a task parses and validates its params once, and hands the view on (in its process, and in each
  torchrun worker's);
- a toy stage defined in one file (tests/toy_stage.py: record, stage function, component) joins a
  pipeline from its record alone and runs through kfp.local — what adding a stage takes.
"""

from __future__ import annotations

import inspect
import json
import os
import typing
from pathlib import Path

import gandistill_components
import pytest
from helpers import artifact, training_outputs
from kfp import dsl

from gandistill import stage_params, stage_records
from gandistill.config import Params, PipelineParams, load_params
from gandistill.stages import entry

ROOT = Path(__file__).resolve().parents[1]


def _component_parameters(name: str) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(gandistill_components.functions()[name]).parameters)


@pytest.mark.parametrize("name", list(stage_records.STAGES))
def test_each_component_declares_what_its_record_says(name: str) -> None:
    record = stage_records.STAGES[name]
    parameters = _component_parameters(name)
    expected = {"params_json", "parent_run_id", *record.knobs, *record.task_inputs, *record.pipeline_inputs,
                *record.inputs, *record.optional_inputs, *(["launch"] if record.data_parallel else []),
                *([record.output] if record.output else []), *record.ui_outputs}
    assert expected <= set(parameters), expected - set(parameters)
    for arg in record.ui_outputs:  # what the KFP UI shows of a training stage: its final metrics and curves
        annotation = parameters[arg].annotation
        assert "OutputAnnotation" in str(annotation)
        assert typing.get_args(annotation)[0].schema_title == stage_records.TRAINING_OUTPUTS[arg]
    for knob in record.knobs:  # always given by the DAG: no default standing for "not given"
        assert parameters[knob].default is inspect.Parameter.empty and parameters[knob].annotation in (int, "int")
    for arg in record.inputs:
        assert "InputAnnotation" in str(parameters[arg].annotation)
        assert parameters[arg].default is inspect.Parameter.empty
    for arg in record.optional_inputs:
        assert "InputAnnotation" in str(parameters[arg].annotation) and parameters[arg].default is None
    if record.output:
        assert "OutputAnnotation" in str(parameters[record.output].annotation)
    # every upstream output a record names is another record's output, earlier in the pipeline
    order = list(stage_records.STAGES)
    for source in [*record.inputs.values(), *record.optional_inputs.values()]:
        stage, _, output = source.partition(".")
        assert order.index(stage) < order.index(name)
        assert output == stage_records.STAGES[stage].output or (stage, output) == ("distill", "baselines")


@pytest.mark.parametrize("name", list(stage_records.STAGES))
def test_each_stage_function_gets_every_argument_it_needs_from_its_component(name: str) -> None:
    record = stage_records.STAGES[name]
    args = {arg: artifact(dsl.Model, Path(f"/x/{arg}")) if arg in (*record.inputs, *record.optional_inputs,
                                                                    record.output) else f"<{arg}>"
            for arg in _component_parameters(name)}
    args["baselines"] = []
    kwargs = entry.stage_kwargs(record, args)
    function = entry.stage_function(record)
    required = [p.name for p in inspect.signature(function).parameters.values()
                if p.default is inspect.Parameter.empty and p.name != "params"]
    assert set(required) <= set(kwargs), set(required) - set(kwargs)
    if record.output:
        assert kwargs["out_dir"] == f"/x/{record.output}"


def test_the_resources_list_and_the_launcher_follow_the_records() -> None:
    keys = typing.get_args(typing.get_args(PipelineParams.model_fields["resources"].annotation)[0])
    assert set(keys) == {stage.resources_name for stage in stage_records.STAGES.values()}
    assert stage_records.data_parallel() == ("train_teacher", "train_gan", "distill")
    assert set(stage_records.trained()) == {"train_teacher", "train_gan", "train_translator", "distill"}


def _counting_parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every params validation into a stage's view (stage_params._build) is appended here."""
    parses: list[str] = []
    build = stage_params._build

    def counted(tree, stage, declared):
        parses.append(stage)
        return build(tree, stage, declared)

    monkeypatch.setattr(stage_params, "_build", counted)
    return parses


def test_a_task_parses_its_params_once_and_hands_the_view_on(tiny_dataset: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """From the component's JSON to the stage function's harness: one validation per task."""
    from gandistill_components.train_teacher import train_teacher

    params = load_params(ROOT / "params.yaml", ["runtime.threads=1", "teacher.epochs=0.05", "runtime.progress=false",
                                                "teacher.min_accuracy=0"])  # a 1-step teacher: the teaching bar is off
    parses = _counting_parses(monkeypatch)
    teacher = artifact(dsl.Model, tmp_path / "teacher")
    train_teacher(stage_params.stage_json(params, "train_teacher"), "", artifact(dsl.Dataset, tiny_dataset),
                  teacher, **training_outputs(tmp_path / "ui"), seed=3)
    assert parses == ["train_teacher"]
    assert teacher.metadata["steps"] >= 1 and (tmp_path / "teacher" / "model.pt").is_file()


def test_a_torchrun_worker_parses_the_spec_once(tiny_dataset: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker side of a data-parallel task (here one worker, in this process): the spec's params
    are validated once and the stage runs on that view."""
    from gandistill import launch

    params = stage_params.view(load_params(ROOT / "params.yaml", ["runtime.threads=1", "teacher.epochs=0.05",
                                                                  "runtime.progress=false", "teacher.min_accuracy=0"]),
                               "train_teacher")
    spec = launch.write_spec(tmp_path, "train_teacher", params,
                             {"data_dir": str(tiny_dataset), "out_dir": str(tmp_path / "teacher")}, "")
    parses = _counting_parses(monkeypatch)
    assert launch.worker_main(spec) == 0
    assert parses == ["train_teacher"]
    assert json.loads((tmp_path / "result.json").read_text())["steps"] >= 1


def test_a_toy_stage_joins_the_pipeline_from_its_record_alone(tmp_path: Path, mnist_dir: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """tests/toy_stage.py holds a whole stage: its record, its function, its component. Importing it
    registers the record; nothing else in gandistill changes. The DAG builder wires its task to
    prepare_data's output by the record, kfp.local runs it (the task's own process finds the record
    by importing the module), the entry point runs its function, and the local runner's summary and
    the console read its result by the record."""
    from gandistill_pipeline.dag import Tasks
    from gandistill_pipeline.local import collect
    from kfp import local

    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setattr(stage_records, "STAGES", dict(stage_records.STAGES))  # the toy is gone after the test
    import toy_stage

    monkeypatch.setitem(stage_records.STAGES, "data_census", toy_stage.RECORD)
    params = load_params(ROOT / "params.yaml", [f"data.path={mnist_dir}", "data.limit_train=300",
                                                "data.limit_test=100", "data.val_fraction=0.2", "seed=7"])
    comps = gandistill_components.build(params.pipeline.image)
    assert hasattr(comps, "data_census")  # built from the record
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"))
    arguments = {"parent_run_id": "", "data_rev": "", "seed": params.seed, "gan_steps": params.gan.steps,
                 "distill_steps": params.distill.steps}

    @dsl.pipeline(name="toy")
    def toy():  # (no annotations: kfp reads a pipeline's signature as its interface)
        tasks = Tasks(params, comps, arguments, nproc=None, retries=0)
        tasks.add("prepare_data")
        tasks.add("data_census")

    toy()
    (run_dir,) = (tmp_path / "kfp").glob("toy-*")
    stages = collect(run_dir)
    census = stages["data_census"]["result"]
    assert census["classes"] == 10 and census["seed"] == 7 and census["asked_val_fraction"] == 0.2
    counts = stages["prepare_data"]["result"]["counts"]
    assert census["counts"] == counts and census["val_share"] == counts["val"] / (counts["train"] + counts["val"])
    assert stage_records.headline("data_census", census) == f"10 classes, {census['val_share']:.0%} held out for val"
    # the task received only what the record reads: its params_json, and the seed as its typed knob
    assert json.loads(stage_params.stage_json(params, "data_census")) == {"data": {"val_fraction": 0.2}}


def test_params_views_are_the_records_reads() -> None:
    params = Params()
    for name, record in stage_records.STAGES.items():
        view = stage_params.view(params, name)
        assert view.view_of == name and stage_params.view(view, name) is view
        assert stage_params.keys(name) == record.reads
