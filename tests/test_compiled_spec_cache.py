"""Cache keys follow what a stage depends on (issue 12, item 5), read off the compiled spec.

kfp v2 keys a task's cache on its input parameter values, its input artifacts (the upstream
executions' outputs), its output specs and its image and command (backend/src/v2/cacheutils:
GenerateCacheKey). So two compiled packages, or one package run with two sets of arguments,
re-run exactly the tasks whose resolved inputs differ plus everything downstream of them:
`_reruns` computes that set from the spec the way the driver would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from gandistill_pipeline.dag import compile_pipeline

from gandistill import stage_params
from gandistill.config import Params, load_params
from gandistill.stage_records import KNOBS

ROOT = Path(__file__).resolve().parents[1]
BRANCHES = "condition-branches-1/"
GATE_AND_PROMOTE = {"promote-gate", f"{BRANCHES}condition-2/promote", f"{BRANCHES}condition-3/promote-2"}
DEFAULT_TASKS = {"check-params", "prepare-data", "train-teacher", "train-gan", "distill", "evaluate", "export",
                 *GATE_AND_PROMOTE}


def _compile(tmp_path: Path, overrides: list[str] = ()) -> tuple[Params, dict[str, Any]]:
    params = load_params(ROOT / "params.yaml", list(overrides))
    out = tmp_path / f"p{abs(hash(tuple(overrides)))}.yaml"
    compile_pipeline(params, str(out))
    return params, next(yaml.safe_load_all(out.read_text()))


def _leaves(spec: dict[str, Any], arguments: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Every executed task (sub-DAGs walked: the gate's branches, the baselines' loop) → its
    resolved parameter values and the tasks whose outputs it consumes."""
    root = {name: (d.get("defaultValue"), frozenset())
            for name, d in spec["root"]["inputDefinitions"]["parameters"].items()}
    root |= {name: (value, frozenset()) for name, value in (arguments or {}).items()}
    leaves: dict[str, dict[str, Any]] = {}

    def walk(dag: dict[str, Any], params_env: dict[str, Any], artifacts_env: dict[str, frozenset[str]],
             prefix: str) -> None:
        for name, task in dag["tasks"].items():
            values: dict[str, Any] = {}
            after: set[str] = set()
            for key, ref in task.get("inputs", {}).get("parameters", {}).items():
                if "runtimeValue" in ref:
                    values[key] = ref["runtimeValue"]["constant"]
                elif "componentInputParameter" in ref:
                    values[key], upstream = params_env[ref["componentInputParameter"]]
                    after |= upstream
                else:
                    producer = prefix + ref["taskOutputParameter"]["producerTask"]
                    values[key] = ("output of", producer)
                    after.add(producer)
            artifacts: dict[str, frozenset[str]] = {}
            for key, ref in task.get("inputs", {}).get("artifacts", {}).items():
                if "taskOutputArtifact" in ref:
                    artifacts[key] = frozenset({prefix + ref["taskOutputArtifact"]["producerTask"]})
                else:
                    artifacts[key] = artifacts_env[ref["componentInputArtifact"]]
                after |= artifacts[key]
            component = spec["components"][task["componentRef"]["name"]]
            if "dag" in component:
                inner = {key: (value, frozenset(after)) for key, value in values.items()}
                if "parameterIterator" in task:  # the loop item: one of the compiled list
                    iterator = task["parameterIterator"]
                    inner[iterator["itemInput"]] = (iterator["items"].get("raw"), frozenset())
                walk(component["dag"], inner, artifacts, f"{prefix}{name}/")
            else:
                leaves[prefix + name] = {"params": values, "after": after}

    walk(spec["root"]["dag"], root, {}, "")
    return leaves


def _changed(before: dict[str, Any], after: dict[str, Any]) -> set[str]:
    assert before.keys() == after.keys()  # same DAG shape
    return {task for task in after if after[task]["params"] != before[task]["params"]}


def _reruns(before: dict[str, Any], after: dict[str, Any]) -> set[str]:
    """Tasks whose cache key differs: changed inputs, or an upstream task that re-ran (a new
    execution's artifacts are new inputs)."""
    rerun = _changed(before, after)
    grown = True
    while grown:
        grown = False
        for task, info in after.items():
            if task not in rerun and any(p in rerun or any(r.startswith(p + "/") for r in rerun)
                                         for p in info["after"]):
                rerun.add(task)
                grown = True
    return rerun


def test_a_promote_threshold_re_runs_the_gate_and_promote_not_the_training(tmp_path: Path) -> None:
    """The issue's target: a new promote.min_accuracy changes the inputs of promote_gate and of
    promote (one task per gate branch, one of which runs): 2 executions, not 9."""
    _, base = _compile(tmp_path)
    _, stricter = _compile(tmp_path, ["promote.min_accuracy=0.99"])
    before, after = _leaves(base), _leaves(stricter)
    assert set(before) == DEFAULT_TASKS
    assert _changed(before, after) == GATE_AND_PROMOTE
    assert _reruns(before, after) == GATE_AND_PROMOTE
    # before this change every task received the whole params: all of them changed
    assert len(DEFAULT_TASKS - {"check-params"}) == 9


def test_new_gan_steps_leave_the_data_and_the_teacher_cached(tmp_path: Path) -> None:
    _, base = _compile(tmp_path)
    _, longer = _compile(tmp_path, ["gan.steps=3000"])
    before, after = _leaves(base), _leaves(longer)
    # check_params validates the knob (seconds); export's model card reads the GAN's steps off the
    # generator it is given, so it re-runs on the new generator, not on the key
    assert _changed(before, after) == {"check-params", "train-gan"}
    assert _reruns(before, after) == DEFAULT_TASKS - {"prepare-data", "train-teacher"}


@pytest.mark.parametrize(("knob", "value", "changed", "cached"), [
    ("distill_steps", 123, {"distill", "export"}, {"prepare-data", "train-teacher", "train-gan"}),
    ("gan_steps", 77, {"train-gan"}, {"prepare-data", "train-teacher"}),
    ("seed", 5, {"prepare-data", "train-teacher", "train-gan", "distill", "evaluate", "export"}, set()),
])
def test_a_typed_knob_reaches_exactly_the_stages_that_read_it(tmp_path: Path, knob: str, value: int,
                                                               changed: set[str], cached: set[str]) -> None:
    """The KFP UI / a recurring run sets a typed pipeline parameter on the same package."""
    params, spec = _compile(tmp_path)
    before, after = _leaves(spec), _leaves(spec, {knob: value})
    assert _changed(before, after) == {"check-params", *changed}
    assert DEFAULT_TASKS - _reruns(before, after) == cached
    reached = {task for task in after if after[task]["params"].get(knob) == value}
    assert reached == {"check-params", *changed}


def test_gan_steps_touch_nothing_but_the_check_when_the_method_trains_no_gan(tmp_path: Path) -> None:
    _, spec = _compile(tmp_path, ["distill.method=kd"])
    before, after = _leaves(spec), _leaves(spec, {"gan_steps": 77})
    assert not any(task.startswith("train-gan") for task in after)
    assert _reruns(before, after) == {"check-params"}


def test_fanned_out_baselines_get_the_distill_knobs(tmp_path: Path) -> None:
    _, spec = _compile(tmp_path, ["evaluate.baselines=[kd]"])
    before, after = _leaves(spec), _leaves(spec, {"distill_steps": 123})
    baseline = next(task for task in after if task.endswith("/distill-2"))
    assert {"distill", baseline, "export"} <= _changed(before, after)
    assert {"prepare-data", "train-teacher", "train-gan"}.isdisjoint(_reruns(before, after))


@pytest.mark.parametrize("overrides", [[], ["distill.method=kd", "evaluate.baselines=[gan, scratch]"],
                                       ["distill.method=data_free"], ["--profile", "transfer"]])
def test_each_task_receives_only_the_keys_its_stage_reads(tmp_path: Path, overrides: list[str]) -> None:
    """A task's params_json holds its stage's declared keys (its record's `reads`) less the
    typed knobs it receives as inputs — and nothing else (no pipeline section, no other stage's)."""
    if overrides[:1] == ["--profile"]:
        params = load_params(ROOT / "params.yaml", profile=overrides[1])
        out = tmp_path / "transfer.yaml"
        compile_pipeline(params, str(out))
        spec = next(yaml.safe_load_all(out.read_text()))
    else:
        params, spec = _compile(tmp_path, overrides)
    for task, info in _leaves(spec).items():
        name = task.rsplit("/", 1)[-1].removesuffix("-2").replace("-", "_")
        if name == "check_params":
            assert set(info["params"]) == set(KNOBS)
            continue
        knobs = {KNOBS[k] for k in stage_params.knobs(name)}
        assert {k for k in KNOBS if k in info["params"]} == set(stage_params.knobs(name)), task
        sent = json.loads(info["params"]["params_json"])
        got = set()
        for section, value in sent.items():
            if section in stage_params.keys(name):  # a whole section: every field but its knobs
                fields = type(getattr(params, section)).model_fields if isinstance(value, dict) else {}
                assert set(value if isinstance(value, dict) else {}) == {
                    f for f in fields if f"{section}.{f}" not in knobs}, (task, section)
                got.add(section)
            else:
                got |= {f"{section}.{field}" for field in value}
        assert got == set(stage_params.keys(name)) - knobs, task


@pytest.mark.parametrize("method", ["gan", "kd", "data_free", "cyclegan"])
def test_every_task_is_given_every_knob_its_component_declares(tmp_path: Path, method: str) -> None:
    """A component's knobs have no default (no "not given" value to mistake for a setting): the DAG
    passes each task every knob its component declares, whatever the method."""
    overrides = [f"distill.method={method}"] + (["data.target_source=mnistm", "data.target_path=data/mnist"]
                                                 if method == "cyclegan" else [])
    _, spec = _compile(tmp_path, overrides)
    for name, component in spec["components"].items():
        for param, definition in component.get("inputDefinitions", {}).get("parameters", {}).items():
            if param in KNOBS:
                assert not definition.get("isOptional"), (name, param)
    for task, info in _leaves(spec).items():
        name = task.rsplit("/", 1)[-1].removesuffix("-2").replace("-", "_")
        expected = set(KNOBS) if name == "check_params" else set(stage_params.knobs(name))
        assert {k for k in KNOBS if k in info["params"]} == expected, task
