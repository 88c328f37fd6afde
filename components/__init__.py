"""Thin kfp v2 components, one module per stage.

Each module defines a plain function with typed kfp Input/Output artifacts whose body only
imports `gandistill.stages` and calls it; `build(image)` turns them into components that
run in `image` (one setting: `pipeline.image` in params.yaml). Component bodies travel
alone, so the gandistill package must be installed where they run (the image, or the local
venv for kfp.local).
"""

from __future__ import annotations

from types import SimpleNamespace

from gandistill_components.check_params import check_params
from gandistill_components.distill import distill
from gandistill_components.evaluate import evaluate
from gandistill_components.export import export
from gandistill_components.prepare_data import prepare_data
from gandistill_components.promote import promote, promote_gate
from gandistill_components.train_gan import train_gan
from gandistill_components.train_teacher import train_teacher
from gandistill_components.train_translator import train_translator
from kfp import dsl

FUNCTIONS = {
    "check_params": check_params,
    "prepare_data": prepare_data,
    "train_teacher": train_teacher,
    "train_gan": train_gan,
    "train_translator": train_translator,
    "distill": distill,
    "evaluate": evaluate,
    "export": export,
    "promote_gate": promote_gate,
    "promote": promote,
}


def build(image: str) -> SimpleNamespace:
    """Components for every stage, running in `image` (kfp is already in the image)."""
    return SimpleNamespace(**{
        name: dsl.component(func, base_image=image, install_kfp_package=False)
        for name, func in FUNCTIONS.items()
    })
