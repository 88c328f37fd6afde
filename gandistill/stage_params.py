"""The params a stage runs on: the keys its record reads (gandistill.stage_records), nothing else.

kfp caches a task by its inputs (parameter values, upstream artifacts, image and command). A
task that received the whole params would re-run whenever any key changed — a new promote
threshold would retrain the teacher and the GAN. So each task receives only the keys its stage
reads (`stage_json`, compiled into the pipeline as that task's constant), plus the typed run-time
knobs (`stage_records.KNOBS`) among them, and the stage runs on a partial view (`view` / `load`):
a key it was not given is absent, and reading it raises ParamNotGiven rather than returning a
default. Every stage's `run` views its params first, so each test that runs a stage also checks
that its record's `reads` is complete.

A task parses and validates its params once (`load`, in gandistill.stages.entry) and hands the
view on as an object: viewing a view for the same stage again returns it unchanged.

Torch-free: the DAG compiler reads it.
"""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any

from pydantic import TypeAdapter, ValidationError
from pydantic_core import to_jsonable_python

from gandistill import stage_records
from gandistill.config import Params, Section, _flatten
from gandistill.errors import ConfigError
from gandistill.params_errors import describe_error
from gandistill.stage_records import KNOBS


def keys(stage: str) -> tuple[str, ...]:
    """What `stage` reads (its record's `reads`)."""
    try:
        return stage_records.get(stage).reads
    except KeyError as exc:
        raise KeyError(f"{stage!r} has no stage record (stages: {', '.join(stage_records.STAGES)})") from exc


def knobs(stage: str) -> tuple[str, ...]:
    """The typed pipeline parameters `stage`'s task receives: those whose key it reads."""
    return stage_records.get(stage).knobs


def select(params: Params, stage: str) -> dict[str, Any]:
    """The keys `stage` reads, as a JSON-able tree (section → {key: value}, "seed" → value)."""
    tree: dict[str, Any] = {}
    for key in keys(stage):
        section, _, field = key.partition(".")
        value = getattr(params, section)
        if not field:
            tree[section] = value.model_dump(mode="json") if isinstance(value, Section) else value
        else:
            tree.setdefault(section, {})[field] = to_jsonable_python(getattr(value, field))
    return tree


def stage_json(params: Params, stage: str) -> str:
    """A task's `params_json`: what its stage reads, less the knobs it receives as typed inputs
    (one value per input in the task's inputs: the UI shows which one a run used)."""
    tree = select(params, stage)
    for name in knobs(stage):
        _pop(tree, KNOBS[name])
    return json.dumps(tree, sort_keys=True)


def _pop(tree: dict[str, Any], key: str) -> None:
    section, _, field = key.partition(".")
    if field:
        tree[section].pop(field)
    else:
        tree.pop(section)


def _put(tree: dict[str, Any], key: str, value: Any) -> None:
    section, _, field = key.partition(".")
    if field:
        node = tree.setdefault(section, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{key}: '{section}' is a value, not a section")
        node[field] = value
    else:
        tree[section] = value


def load(text: str | dict[str, Any], stage: str, overrides: dict[str, Any] | None = None) -> Params:
    """The partial Params `stage` runs on, from its task's `params_json` (or a whole params
    tree: extra keys are ignored) with `overrides` (`section.key` → value: the typed knobs, a
    fan-out task's distill.method) set on top. Each key is validated as the schema says; a
    declared key that is missing is an error (a package compiled by another gandistill)."""
    if isinstance(text, str):
        try:
            tree = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"params_json of {stage} is not valid JSON: {exc}") from None
    else:
        tree = json.loads(json.dumps(text))  # a private copy
    if not isinstance(tree, dict):
        raise ConfigError(f"params_json of {stage}: expected a mapping of sections, got {type(tree).__name__}")
    for key, value in (overrides or {}).items():
        _put(tree, key, value)
    return _build(tree, stage, keys(stage))


def flat(params: Params, stage: str) -> dict[str, Any]:
    """The keys `stage` read, flat (`section.key` → value): what a submitted run's MLflow parent
    records, stage by stage (a local run logs the whole params)."""
    return _flatten(select(params, stage))


def view(params: Params, stage: str) -> Params:
    """`params` as `stage` sees it: only its declared keys (a copy). A view for `stage` (what a
    task's `load` made) is returned as it is: the params were validated once, in that task."""
    if params.view_of == stage:
        return params
    return _build(select(params, stage), stage, keys(stage))


def _build(tree: dict[str, Any], stage: str, declared: tuple[str, ...]) -> Params:
    whole = [k for k in declared if "." not in k]
    fields: dict[str, list[str]] = {}
    for key in declared:
        if "." in key:
            section, field = key.split(".")
            fields.setdefault(section, []).append(field)
    missing = [k for k in declared if not _present(tree, k)]
    missing += [f"{name}.{field}" for name in whole if name in tree and _section(name) is not None
                and isinstance(tree[name], dict) for field in _section(name).model_fields if field not in tree[name]]
    if missing:
        raise ConfigError(f"params_json of {stage} lacks {', '.join(missing)}: the pipeline package was compiled "
                          "by another gandistill version (compile it again: gandistill compile / submit), or its task "
                          f"did not pass on the typed inputs it received ({', '.join(KNOBS)})")
    problems: list[str] = []
    values: dict[str, Any] = {}
    for name in whole:
        model = _section(name)
        try:
            values[name] = (model.model_validate(tree[name]) if model is not None else  # a section: all its rules
                            TypeAdapter(Annotated[Params.model_fields[name].annotation,  # seed: its field's rules
                                                  Params.model_fields[name]]).validate_python(tree[name]))
        except ValidationError as exc:
            problems += [describe_error({**e, "loc": (name, *e["loc"])}, Params) for e in exc.errors()]
    for section, names in fields.items():
        model = _section(section)
        assert model is not None, section
        partial = model.model_construct()
        for field in model.model_fields:
            if field not in names:
                del partial.__dict__[field]
        for field in names:
            try:
                setattr(partial, field, tree[section][field])  # validate_assignment: the field's own rules
            except ValidationError as exc:
                problems += [describe_error({**e, "loc": (section, *e["loc"])}, Params) for e in exc.errors()]
        values[section] = partial
    if problems:
        raise ConfigError(f"params of {stage} are invalid ({len(problems)} problem{'s' * (len(problems) > 1)}):\n"
                          + "\n".join(problems) + "\nFix these keys in the params file, the --set overrides or "
                          f"the run's parameters ({', '.join(KNOBS)}).")
    params = Params.model_construct(**values)
    for name in Params.model_fields:
        if name not in values:
            del params.__dict__[name]
    params._view_of = stage
    return params


def _section(name: str) -> type[Section] | None:
    annotation = Params.model_fields[name].annotation
    return annotation if isinstance(annotation, type) and issubclass(annotation, Section) else None


def _present(tree: dict[str, Any], key: str) -> bool:
    section, _, field = key.partition(".")
    if section not in tree:
        return False
    if not field:
        return True
    node = tree[section]
    return isinstance(node, dict) and field in node


def check_knobs(values: dict[str, Any]) -> None:
    """The typed knobs of a run (`KNOBS` name → value) against the schema's rules for their keys:
    the first task of a submitted pipeline, so a bad value set in the KFP UI fails before anything
    trains. (The rest of the params were validated whole when the pipeline was compiled; no
    cross-key rule involves a knob.)"""
    unknown = sorted(set(values) - set(KNOBS))
    if unknown:
        raise ConfigError(f"unknown run parameters {unknown}; the typed knobs are {', '.join(KNOBS)}")
    tree: dict[str, Any] = {}
    for name, value in values.items():
        _put(tree, KNOBS[name], value)
    _build(tree, "this run", tuple(KNOBS[name] for name in values))


def check_task(values: dict[str, Any]) -> None:
    """The check_params task: `check_knobs`, a bad knob being one log line and exit 2. (Here, not
    in stages.entry: this module imports neither torch nor mlflow, so the task takes a second.)"""
    if not logging.getLogger().handlers:
        logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(message)s")
    log = logging.getLogger("gandistill")
    try:
        check_knobs(values)
    except ConfigError as exc:
        log.error("[check_params] %s", exc)
        raise SystemExit(exc.exit_code) from None
    log.info("[check_params] %s", ", ".join(f"{k}={v}" for k, v in values.items()))
