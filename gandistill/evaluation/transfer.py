"""Evaluation of cross-domain transfer: a target-domain student side by side with what the
teacher alone, the translator alone and the baselines reach on the target test split.

Rows (all on the target test split, whose labels are read here and nowhere upstream):

| row | what it is |
|---|---|
| teacher on raw target (source-only) | the teacher reading target images converted to its input shape |
| teacher on G_BA(target) | the teacher reading target images translated to its domain |
| student | the distilled target-domain student (e.g. cyclegan) |
| plain KD on raw target | baseline `target_kd`: a student taught by the source-only teacher (DAFL's out-of-domain KD) |
| target-supervised | baseline `target_supervised`: trained on target labels — the upper bound |

plus the teacher on its own source test split for context, and sample grids of both translations.
`evaluate` calls `evaluation_data` / `evaluation_teacher` (which test split and which teacher its
generic tables use) and `evaluate_transfer` for this section; nothing else of it changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gandistill import methods
from gandistill.data.dataset import as_float, load_meta, load_split, target_folder, to_tensors
from gandistill.evaluation import plots
from gandistill.evaluation.predict import accuracy, predict_logits
from gandistill.evaluation.report import Figure, Section, Table, fmt
from gandistill.model_files import load_classifier
from gandistill.transfer import load_translator, source_only, through_translator

# The gains the issue sets as targets (fractions of accuracy): the report states whether they are met.
TARGET_GAIN_VS_SOURCE_ONLY = 0.25
TARGET_GAIN_VS_PLAIN_KD = 0.05
BASELINE_ROWS = {"target_kd": "plain KD on raw target", "target_supervised": "target-supervised (upper bound)"}


def is_target_student(method: str | None) -> bool:
    return method in methods.METHODS and methods.get(method).domain == "target"


def evaluation_data(data_dir: str | Path, method: str | None) -> Path:
    """The prepared dataset the generic evaluation reads: the target domain's for a target-domain
    student, otherwise `data_dir` itself."""
    return target_folder(data_dir) if is_target_student(method) else Path(data_dir)


def evaluation_teacher(teacher: nn.Module, data_dir: str | Path, method: str | None) -> nn.Module:
    """The teacher the generic evaluation compares with: for a target-domain student, the teacher
    reading raw target images (so its "teacher" rows are the source-only baseline)."""
    if not is_target_student(method):
        return teacher
    return source_only(teacher, load_meta(data_dir), load_meta(target_folder(data_dir)))


@dataclass
class TransferEvaluation:
    metrics: dict[str, float]
    section: Section
    figures: dict[str, Path] = field(default_factory=dict)
    rows: dict[str, float] = field(default_factory=dict)  # row label → target test accuracy


def _translation_grid(originals: torch.Tensor, translated: torch.Tensor, captions: list[tuple[str, bool]],
                      names: tuple[str, str], path: Path, title: str) -> Path:
    rows = {names[0]: [(img.numpy(), "", True) for img in originals],
            names[1]: [(img.numpy(), text, ok) for img, (text, ok) in zip(translated, captions, strict=True)]}
    return plots.sample_grid(rows, path, title)


def _one_per_class(y: torch.Tensor, k: int, per_class: int = 1) -> torch.Tensor:
    return torch.cat([torch.nonzero(y == c).flatten()[:per_class] for c in range(k)])


@torch.no_grad()
def evaluate_transfer(data_dir: str | Path, teacher_dir: str | Path, student_dir: str | Path,
                      translator_dir: str | Path | None, baseline_dirs: dict[str, str | Path] | None,
                      out_dir: str | Path, batch_size: int = 1000) -> TransferEvaluation:
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    target = target_folder(data_dir)
    meta_a, meta_b = load_meta(data_dir), load_meta(target)
    names = list(meta_b.class_names)
    test_b, test_b_y = to_tensors(load_split(target, "test"))
    test_a, test_a_y = to_tensors(load_split(data_dir, "test"))
    teacher = load_classifier(teacher_dir).eval()
    student = load_classifier(student_dir).eval()

    def acc(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
        return accuracy(predict_logits(model, x, batch_size), y)

    rows: dict[str, float] = {"teacher on its source test split": acc(teacher, test_a, test_a_y)}
    rows["teacher on raw target (source-only)"] = acc(source_only(teacher, meta_a, meta_b), test_b, test_b_y)
    translator = load_translator(translator_dir) if translator_dir is not None else None
    if translator is not None:
        rows["teacher on G_BA(target)"] = acc(through_translator(teacher, translator), test_b, test_b_y)
    rows["student"] = acc(student, test_b, test_b_y)
    for name, folder in (baseline_dirs or {}).items():
        if name in BASELINE_ROWS:
            rows[BASELINE_ROWS[name]] = acc(load_classifier(folder).eval(), test_b, test_b_y)

    source_only_acc = rows["teacher on raw target (source-only)"]
    student_acc = rows["student"]
    metrics = {
        "transfer_teacher_source_test_acc": rows["teacher on its source test split"],
        "transfer_source_only_acc": source_only_acc, "transfer_student_acc": student_acc,
        "transfer_gain_vs_source_only": student_acc - source_only_acc,
    }
    if "teacher on G_BA(target)" in rows:
        metrics["transfer_teacher_translated_acc"] = rows["teacher on G_BA(target)"]
    plain_kd = rows.get(BASELINE_ROWS["target_kd"])
    if plain_kd is not None:
        metrics["transfer_plain_kd_acc"] = plain_kd
        metrics["transfer_gain_vs_plain_kd"] = student_acc - plain_kd
    if BASELINE_ROWS["target_supervised"] in rows:
        metrics["transfer_supervised_acc"] = rows[BASELINE_ROWS["target_supervised"]]

    paragraphs = [
        f"Source domain {meta_a.source} ({'×'.join(map(str, meta_a.input_shape))}), target domain {meta_b.source} "
        f"({'×'.join(map(str, meta_b.input_shape))}); {len(test_b_y)} target test images. Target labels are read "
        "only here (and by the target-supervised baseline): the student and the translator never see one.",
        _verdict(student_acc - source_only_acc, TARGET_GAIN_VS_SOURCE_ONLY, "the source-only teacher on raw target "
                 "images"),
    ]
    if plain_kd is not None:
        gain = student_acc - plain_kd
        paragraphs.append(_verdict(gain, TARGET_GAIN_VS_PLAIN_KD, "plain KD on raw target images")
                          + ("" if gain >= TARGET_GAIN_VS_PLAIN_KD else
                             " The translator adds little over letting the teacher label target images directly."))
    figures: dict[str, Path] = {}
    if translator is not None:
        figures |= _grids(teacher, translator, meta_a, meta_b, test_a, test_a_y, test_b, test_b_y, names, out_dir)
    table = Table(["model (evaluated on the target test split unless named)", "accuracy"],
                  [[label, fmt(value, "%")] for label, value in rows.items()])
    section = Section("Cross-domain transfer", paragraphs, [table],
                      [Figure(path, caption) for caption, path in (
                          ("source → target: x_a and G_AB(x_a)", figures.get("translation_a_to_b")),
                          ("target → source: x_b and G_BA(x_b) with the teacher's label",
                           figures.get("translation_b_to_a"))) if path is not None])
    return TransferEvaluation(metrics, section, figures, rows)


def _verdict(gain: float, target: float, against: str) -> str:
    met = "meets" if gain >= target else "misses"
    return (f"The student is {gain * 100:+.2f} points against {against} ({met} the +{target * 100:.0f}-point "
            "target).")


def _grids(teacher: nn.Module, translator: Any, meta_a: Any, meta_b: Any, test_a: torch.Tensor,
           test_a_y: torch.Tensor, test_b: torch.Tensor, test_b_y: torch.Tensor, names: list[str],
           out_dir: Path) -> dict[str, Path]:
    k = len(names)
    idx_a = _one_per_class(test_a_y, k)
    x_a = as_float(test_a[idx_a])
    fake_b = translator.g_ab(x_a)
    a_caps = [(f"T:{names[int(p)]}", True) for p in teacher(x_a).argmax(1)]
    idx_b = _one_per_class(test_b_y, k)
    x_b = as_float(test_b[idx_b])
    fake_a = translator.g_ba(x_b)
    preds = teacher(fake_a).argmax(1)
    b_caps = [(f"T:{names[int(p)]}", bool(p == y)) for p, y in zip(preds, test_b_y[idx_b], strict=True)]
    return {
        "translation_a_to_b": _translation_grid(x_a, fake_b, a_caps, ("x_a", "G_AB(x_a)"),
                                                out_dir / "translation_a_to_b.png",
                                                "source test images and their translation to the target domain"),
        "translation_b_to_a": _translation_grid(x_b, fake_a, b_caps, ("x_b", "G_BA(x_b)"),
                                                out_dir / "translation_b_to_a.png",
                                                "target test images translated to the source domain, teacher's "
                                                "label (red = wrong)"),
    }


def summary_rows(metrics: dict[str, float]) -> dict[str, float | None]:
    """The side-by-side for run summaries (None where a row was not evaluated)."""
    keys = ("transfer_source_only_acc", "transfer_teacher_translated_acc", "transfer_student_acc",
            "transfer_plain_kd_acc", "transfer_supervised_acc", "transfer_teacher_source_test_acc")
    return {key.removeprefix("transfer_"): metrics.get(key) for key in keys}

