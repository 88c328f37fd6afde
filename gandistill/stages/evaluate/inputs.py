"""What every block of the evaluation reads (loaded once) and what each block gives back."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gandistill.config import Params
from gandistill.data.dataset import DatasetMeta, load_meta, load_split, to_tensors
from gandistill.errors import DataError
from gandistill.evaluation import transfer
from gandistill.evaluation.report import Section
from gandistill.model_files import load_classifier, load_model_file
from gandistill.results import read_result

TEACHER, STUDENT = "teacher", "student"


@dataclass
class Block:
    """One block of the report: flat metrics (logged and written to result.json), the figures
    it drew, its report sections, any structured entries it adds to result.json, and any other
    files it wrote for MLflow (name → path in the output folder)."""

    metrics: dict[str, float] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)
    sections: list[Section] = field(default_factory=list)
    result: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)


@dataclass
class Inputs:
    """The test split and every model under evaluation, loaded once for all blocks.

    `models` holds "teacher", "student", then any baseline students by name; `folders` maps
    the same names (and "generator" / "translator", when given) to their artifact folders.
    `data_dir` is the split the generic blocks read: for a target-domain student (cross-domain
    transfer) the target domain's, with the teacher reading raw target images (source-only);
    `source_dir` is the prepared dataset the stage was given."""

    params: Params
    source_dir: Path
    data_dir: Path
    out_dir: Path
    meta: DatasetMeta
    test_x: torch.Tensor  # uint8, N×C×H×W
    test_y: torch.Tensor
    models: dict[str, nn.Module]
    folders: dict[str, Path]
    info: dict[str, dict[str, Any]]  # arch / method recorded next to each model
    student_result: dict[str, Any]

    @property
    def teacher(self) -> nn.Module:
        return self.models[TEACHER]

    @property
    def student(self) -> nn.Module:
        return self.models[STUDENT]

    @property
    def baselines(self) -> list[str]:
        return [name for name in self.models if name not in (TEACHER, STUDENT)]

    @property
    def generator_dir(self) -> Path | None:
        return self.folders.get("generator")

    @property
    def translator_dir(self) -> Path | None:
        return self.folders.get("translator")

    @property
    def method(self) -> str:
        return self.info[STUDENT].get("method", self.student_result.get("method", "?"))


def model_info(folder: Path) -> dict[str, Any]:
    """Architecture / method recorded next to a model (empty for imported TorchScript)."""
    try:
        blob = load_model_file(folder)
    except DataError:
        return {}
    return {k: blob[k] for k in ("arch", "method") if k in blob}


def load_inputs(params: Params, data_dir: str | Path, teacher_dir: str | Path, student_dir: str | Path,
                generator_dir: str | Path | None, out_dir: str | Path,
                baseline_dirs: dict[str, str | Path] | None = None,
                translator_dir: str | Path | None = None) -> Inputs:
    source_dir, out_dir = Path(data_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    folders = {TEACHER: Path(teacher_dir), STUDENT: Path(student_dir)}
    folders |= {name: Path(folder) for name, folder in (baseline_dirs or {}).items()}
    info = {name: model_info(folder) for name, folder in folders.items()}
    method = info[STUDENT].get("method")
    data_dir = transfer.evaluation_data(source_dir, method)
    test_x, test_y = to_tensors(load_split(data_dir, "test"))
    if len(test_y) == 0:
        raise DataError(f"{data_dir}: the test split is empty; re-run prepare_data with a test split")
    models = {name: load_classifier(folder).eval() for name, folder in folders.items()}
    models[TEACHER] = transfer.evaluation_teacher(models[TEACHER], source_dir, method)
    for name, folder in (("generator", generator_dir), ("translator", translator_dir)):
        if folder is not None:
            folders[name] = Path(folder)
    return Inputs(params=params, source_dir=source_dir, data_dir=data_dir, out_dir=out_dir, meta=load_meta(data_dir),
                  test_x=test_x, test_y=test_y, models=models, folders=folders, info=info,
                  student_result=read_result(student_dir))
