"""Thin kfp v2 components, one module per stage.

Each module defines a plain function with typed kfp Input/Output artifacts whose body calls
`gandistill.stages.entry.run_task(<stage>, locals())`: the stage's record (gandistill.stage_records)
says what the arguments mean. `build(image)` turns every record's component (and check_params)
into components that run in `image` (one setting: `pipeline.image` in params.yaml). A training
stage's component also declares `metrics: Output[Metrics]` and `curves: Output[HTML]`
(stage_records.TRAINING_OUTPUTS): run_task fills them for the KFP UI. Component
bodies travel alone, so the gandistill package must be installed where they run (the image, or
the local venv for kfp.local).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from gandistill_components.check_params import check_params
from kfp import dsl

from gandistill import stage_records


def functions() -> dict[str, Callable[..., Any]]:
    """The component function of check_params and of every stage record, by name."""
    found: dict[str, Callable[..., Any]] = {"check_params": check_params}
    for name, stage in stage_records.STAGES.items():
        module, function = stage.component_path
        found[name] = getattr(importlib.import_module(module), function)
    return found


def build(image: str) -> SimpleNamespace:
    """Components for every stage, running in `image` (kfp is already in the image)."""
    return SimpleNamespace(**{
        name: dsl.component(func, base_image=image, install_kfp_package=False)
        for name, func in functions().items()
    })
