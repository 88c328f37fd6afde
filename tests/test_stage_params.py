"""Each stage runs on the params its record declares (gandistill.stage_records) and nothing else.

Every stage's `run` views its params through its record's `reads` first, so every test that runs a
stage (test_components, test_methods, test_evaluation_component, test_transfer, the local
pipeline run, ...) fails with ParamNotGiven if the stage reads a key its entry lacks; the tests
here check that mechanism itself, and that it has teeth.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from helpers import artifact, training_outputs
from kfp import dsl

from gandistill import archs, launch, stage_params, stage_records
from gandistill.config import Params, load_params
from gandistill.errors import ConfigError, ParamNotGiven

ROOT = Path(__file__).resolve().parents[1]
COMPONENT_STAGES = {"prepare_data", "train_teacher", "train_gan", "train_translator", "distill", "evaluate", "export",
                    "promote_gate", "promote"}


def test_every_stage_has_an_entry_and_every_entry_names_a_schema_key() -> None:
    assert set(stage_records.STAGES) == COMPONENT_STAGES
    defaults = Params()
    for stage, record in stage_records.STAGES.items():
        for key in record.reads:
            section, _, field = key.partition(".")
            assert section in Params.model_fields and section != "pipeline", (stage, key)
            if field:
                assert field in type(getattr(defaults, section)).model_fields, (stage, key)
    for key in stage_records.KNOBS.values():
        section, _, field = key.partition(".")
        assert section in Params.model_fields and (not field or field in type(getattr(defaults, section)).model_fields)


def test_a_view_withholds_what_its_stage_does_not_read() -> None:
    params = load_params(ROOT / "params.yaml")
    gan = stage_params.view(params, "train_gan")
    assert gan.gan.steps == params.gan.steps and gan.seed == params.seed and gan.runtime == params.runtime
    with pytest.raises(ParamNotGiven, match=r"params\.promote was not given"):
        _ = gan.promote
    prep = stage_params.view(params, "prepare_data")
    assert prep.distill.student_arch == "auto"
    with pytest.raises(ParamNotGiven, match=r"params\.distill\.steps was not given"):
        _ = prep.distill.steps
    # a partial view is never dumped whole (a fingerprint or logged section would silently shrink)
    for partial in (prep, prep.distill):
        with pytest.raises(ParamNotGiven, match="partial"):
            partial.model_dump()
    with pytest.raises(ParamNotGiven):
        prep.to_json()
    assert prep.data.model_dump() == params.data.model_dump()  # a whole section dumps as usual
    assert stage_params.view(prep, "prepare_data") == prep  # idempotent


def test_the_architecture_resolution_works_on_a_partial_view() -> None:
    """archs.resolve assigns teacher.arch / distill.student_arch on sections of which the stage sees
    two or three keys: the assignment is validated, the cross-key rules are left to the whole."""
    view = stage_params.view(load_params(ROOT / "params.yaml"), "prepare_data")
    archs.check_fit(view, 1, 28, 28, 10)
    archs.resolve(view, 1, 28, 28)
    assert (view.teacher.arch, view.distill.student_arch) == ("lenet5", "lenet5_half")
    with pytest.raises(Exception, match="student_arch"):
        view.distill.student_arch = 5  # the field's own rule still holds


def test_a_stage_s_keys_and_knobs_do_not_depend_on_the_method() -> None:
    """export's model card names the trained cGAN from the generator it is given, not from gan.*: no
    stage reads a key only for some methods, so every knob a component declares is always given."""
    assert not any(k.startswith("gan") for k in stage_params.keys("export"))
    assert stage_params.knobs("export") == ("seed", "distill_steps")
    assert stage_params.knobs("train_gan") == ("seed", "gan_steps")
    assert stage_params.knobs("promote") == ()


def test_a_task_s_json_round_trips_with_its_knobs() -> None:
    params = load_params(ROOT / "params.yaml", ["gan.steps=321", "seed=4"])
    text = stage_params.stage_json(params, "train_gan")
    assert "steps" not in json.loads(text)["gan"] and "seed" not in json.loads(text)  # they come as typed inputs
    loaded = stage_params.load(text, "train_gan", {"seed": 9, "gan.steps": 55})
    assert (loaded.seed, loaded.gan.steps, loaded.gan.lr_g) == (9, 55, params.gan.lr_g)
    with pytest.raises(ConfigError, match="lacks seed, gan.steps") as err:
        stage_params.load(text, "train_gan")  # a task that did not pass its knobs on
    assert err.value.exit_code == 2
    # a whole params JSON (tests, the CLI) still loads
    assert stage_params.load(params.to_json(), "train_gan").gan.steps == 321


def test_bad_values_fail_in_the_stage_that_reads_them_with_every_key_named() -> None:
    text = stage_params.stage_json(Params(), "train_gan").replace('"lr_g": 0.0002', '"lr_g": -5')
    with pytest.raises(ConfigError) as err:
        stage_params.load(text, "train_gan", {"seed": -2, "gan.steps": 0})
    message = str(err.value)
    assert "gan.lr_g" in message and "seed" in message and "gan.steps" in message and "3 problems" in message
    prep = json.loads(stage_params.stage_json(Params(), "prepare_data"))
    prep["distill"]["student_arch"] = 3
    with pytest.raises(ConfigError, match="distill.student_arch"):
        stage_params.load(json.dumps(prep), "prepare_data", {"seed": 0})


def test_check_params_fails_the_first_task_on_a_bad_knob() -> None:
    from gandistill_components import check_params

    check_params(seed=3, gan_steps=10, distill_steps=10)
    with pytest.raises(SystemExit) as exit_info:
        check_params(seed=0, gan_steps=0, distill_steps=10)
    assert exit_info.value.code == 2
    with pytest.raises(ConfigError, match=r"seed: Input should be greater than or equal to 0"):
        stage_params.check_knobs({"seed": -2, "gan_steps": 1, "distill_steps": 1})


def test_torchrun_workers_get_the_stage_s_view(tmp_path: Path) -> None:
    params = load_params(ROOT / "params.yaml", ["distill.steps=77"])
    spec = json.loads(launch.write_spec(tmp_path, "distill", params, {}, "").read_text())
    worker = stage_params.load(spec["params"], spec["stage"])
    assert worker == stage_params.view(params, "distill") and worker.distill.steps == 77


def test_a_stage_reading_an_undeclared_key_fails(tiny_dataset: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The check has teeth: take keys out of an entry and the stage that reads them fails loudly
    (it would otherwise have trained on a default, silently)."""
    from gandistill.stages import train_gan, train_teacher

    params = load_params(ROOT / "params.yaml", ["runtime.threads=1", "teacher.epochs=0.01"])

    def without(stage: str, key: str) -> stage_records.Stage:
        record = stage_records.STAGES[stage]
        return dataclasses.replace(record, reads=tuple(k for k in record.reads if k != key))

    monkeypatch.setitem(stage_records.STAGES, "train_teacher", without("train_teacher", "runtime"))
    with pytest.raises(ParamNotGiven, match=r"params\.runtime"):
        train_teacher.run(params, tiny_dataset, tmp_path / "teacher")
    monkeypatch.setitem(stage_records.STAGES, "train_gan", without("train_gan", "gan"))
    with pytest.raises(ParamNotGiven, match=r"params\.gan"):
        train_gan.run(params, tiny_dataset, tmp_path / "teacher", tmp_path / "generator")


def test_a_component_called_with_whole_params_still_runs(tiny_dataset: Path, tmp_path: Path) -> None:
    """Old call sites (and `kfp.local` tests) pass the whole params JSON: the stage takes its view."""
    from gandistill_components.train_teacher import train_teacher

    params = load_params(ROOT / "params.yaml", ["runtime.threads=1", "teacher.epochs=0.05", "teacher.min_accuracy=0"])
    teacher = artifact(dsl.Model, tmp_path / "teacher")
    train_teacher(params.to_json(), "", artifact(dsl.Dataset, tiny_dataset), teacher,
                  **training_outputs(tmp_path / "ui"), seed=2)
    assert (tmp_path / "teacher" / "model.pt").is_file()
