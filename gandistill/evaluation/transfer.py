"""Evaluation of cross-domain transfer: a target-domain student side by side with what the
teacher alone, the translator alone and the baselines reach on the target test split.

Rows (all on the target test split, whose labels are read here and nowhere upstream):

| row | what it is |
|---|---|
| teacher on raw target (source-only) | the teacher reading target images converted to its input shape |
| teacher on G_BA(target) | cyclegan: the teacher reading target images translated to its domain |
| translator's task classifier on target | pixelda: the classifier trained on source and translated images |
| teacher on translated source (class kept) | the teacher reading ad⁻¹(G(x_a)) of the *source* test split |
| student | the distilled target-domain student (cyclegan, pixelda) |
| plain KD on raw target | baseline `target_kd`: a student taught by the source-only teacher (DAFL's out-of-domain KD) |
| translator-free augmented | baseline `source_augmented`: source images, colour-augmented, no translator |
| target-supervised | baseline `target_supervised`: trained on target labels — the upper bound |

plus the teacher on its own source test split for context; grids of the translations with the
label each translated image carries and the teacher's reading of it; and translated-vs-target
per-class feature statistics (does a translated "3" sit among real target "3"s?). `evaluate` calls
`evaluation_data` / `evaluation_teacher` (which test split and which teacher its generic tables use)
and `evaluate_transfer` for this section; nothing else of it changes.
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
from gandistill.nets.translator import ShapeAdapter
from gandistill.pixelda import PixelDATranslator
from gandistill.results import read_result
from gandistill.transfer import load_translator, source_only, through_translator

# The gains the issue sets as targets (fractions of accuracy): the report states whether they are met.
TARGET_GAIN_VS_SOURCE_ONLY = 0.25
TARGET_GAIN_VS_PLAIN_KD = 0.05
BASELINE_ROWS = {"target_kd": "plain KD on raw target",
                 "source_augmented": "translator-free augmented (source + colour)",
                 "target_supervised": "target-supervised (upper bound)"}
CLASS_KEPT_ROW = "teacher on translated source test images (class kept)"
TRANSLATED_VARIANTS = 3  # pixelda: translations of each source image with different noise in the grid


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
    baselines = {name: load_classifier(folder).eval() for name, folder in (baseline_dirs or {}).items()}

    def acc(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
        return accuracy(predict_logits(model, x, batch_size), y)

    rows: dict[str, float] = {"teacher on its source test split": acc(teacher, test_a, test_a_y)}
    rows["teacher on raw target (source-only)"] = acc(source_only(teacher, meta_a, meta_b), test_b, test_b_y)
    translator = load_translator(translator_dir) if translator_dir is not None else None
    metrics: dict[str, float] = {}
    if isinstance(translator, PixelDATranslator):
        rows["translator's task classifier on target"] = acc(translator.task, test_b, test_b_y)
        metrics["transfer_task_classifier_acc"] = rows["translator's task classifier on target"]
    elif translator is not None:
        rows["teacher on G_BA(target)"] = acc(through_translator(teacher, translator), test_b, test_b_y)
        metrics["transfer_teacher_translated_acc"] = rows["teacher on G_BA(target)"]
    if translator is not None:
        rows[CLASS_KEPT_ROW] = class_kept(teacher, translator, meta_a, test_a, test_a_y, batch_size)
        metrics["transfer_class_kept_acc"] = rows[CLASS_KEPT_ROW]
    rows["student"] = acc(student, test_b, test_b_y)
    for name, model in baselines.items():
        if name in BASELINE_ROWS:
            rows[BASELINE_ROWS[name]] = acc(model, test_b, test_b_y)

    source_only_acc = rows["teacher on raw target (source-only)"]
    student_acc = rows["student"]
    metrics |= {
        "transfer_teacher_source_test_acc": rows["teacher on its source test split"],
        "transfer_source_only_acc": source_only_acc, "transfer_student_acc": student_acc,
        "transfer_gain_vs_source_only": student_acc - source_only_acc,
    }
    plain_kd = rows.get(BASELINE_ROWS["target_kd"])
    if plain_kd is not None:
        metrics["transfer_plain_kd_acc"] = plain_kd
        metrics["transfer_gain_vs_plain_kd"] = student_acc - plain_kd
    augmented = rows.get(BASELINE_ROWS["source_augmented"])
    if augmented is not None:
        metrics["transfer_augmented_acc"] = augmented
        metrics["transfer_gain_vs_augmented"] = student_acc - augmented
    if BASELINE_ROWS["target_supervised"] in rows:
        metrics["transfer_supervised_acc"] = rows[BASELINE_ROWS["target_supervised"]]

    paragraphs = [
        f"Source domain {meta_a.source} ({'×'.join(map(str, meta_a.input_shape))}), target domain {meta_b.source} "
        f"({'×'.join(map(str, meta_b.input_shape))}); {len(test_b_y)} target test images. Target labels are read "
        "only here (and by the target-supervised baseline): the student and the translator never see one.",
        _verdict(student_acc - source_only_acc, TARGET_GAIN_VS_SOURCE_ONLY, "the source-only teacher on raw target "
                 "images"),
    ]
    guard = read_result(translator_dir).get("guard") if translator_dir is not None else None
    if guard:
        paragraphs.append(_guard_paragraph(guard))
    if plain_kd is not None:
        gain = student_acc - plain_kd
        paragraphs.append(_verdict(gain, TARGET_GAIN_VS_PLAIN_KD, "plain KD on raw target images")
                          + ("" if gain >= TARGET_GAIN_VS_PLAIN_KD else
                             " The translator adds little over letting the teacher label target images directly."))
    if augmented is not None:
        paragraphs.append(f"Against the translator-free augmented baseline (source images with random colour, no "
                          f"translator): {100 * (student_acc - augmented):+.2f} points — what the translator adds.")
    tables = [Table(["model (evaluated on the target test split unless named)", "accuracy"],
                    [[label, fmt(value, "%")] for label, value in rows.items()])]
    figures: dict[str, Path] = {}
    captions: dict[str, str] = {}
    if translator is not None:
        figures, captions = _grids(teacher, translator, meta_a, meta_b, test_a, test_a_y, test_b, test_b_y, names,
                                   out_dir)
        reader_name = "target_supervised" if "target_supervised" in baselines else "student"
        reader = baselines.get("target_supervised", student)
        stats = class_feature_stats(reader, translator, test_a, test_a_y, test_b, test_b_y, len(names))
        metrics["transfer_feature_class_match"] = float(stats.nearest_mean_match.mean())
        tables.append(stats.table(names, reader_name))
    section = Section("Cross-domain transfer", paragraphs, tables,
                      [Figure(figures[key], captions[key]) for key in figures])
    return TransferEvaluation(metrics, section, figures, rows)


def translate(translator: Any, x_a: torch.Tensor, z_seed: int | None = None) -> torch.Tensor:
    """Source images (float) in the target domain: G(x_a, z) (PixelDA; z drawn from `z_seed` when
    given) or G_AB(x_a) (CycleGAN)."""
    if isinstance(translator, PixelDATranslator):
        g = translator.generator
        z = None if z_seed is None else g.sample_noise(len(x_a), x_a.device, torch.Generator().manual_seed(z_seed))
        return g(x_a, z)
    return translator.g_ab(x_a)


def class_kept(teacher: nn.Module, translator: Any, meta_a: Any, test_a: torch.Tensor, test_a_y: torch.Tensor,
               batch_size: int = 1000) -> float:
    """P[teacher(ad⁻¹(translate(x_a))) = y_a] on the source test split: does the teacher still read the
    source class in the translated image (brought back to its input shape by the fixed adapter)?"""
    to_a = ShapeAdapter(tuple(translator.shape_b), meta_a.input_shape)
    hits = 0
    for i in range(0, len(test_a), batch_size):
        x = as_float(test_a[i:i + batch_size])
        hits += int((teacher(to_a(translate(translator, x, z_seed=i))).argmax(1) == test_a_y[i:i + batch_size]).sum())
    return hits / max(1, len(test_a))


@dataclass
class ClassFeatureStats:
    """Per class k, in a target-domain reader's penultimate features: how translated source images of
    class k sit against real target test images of class k."""

    cosine: torch.Tensor  # cos(mean feature of translated k, mean feature of real target k)
    spread_ratio: torch.Tensor  # mean distance to the class mean: translated / real target
    nearest_mean_match: torch.Tensor  # P[the nearest real-target class mean of a translated k is k]
    counts: torch.Tensor  # translated images of class k

    def table(self, names: list[str], reader: str) -> Table:
        rows = [[name, str(int(n)), f"{float(c):.3f}", f"{float(r):.2f}", fmt(float(m), "%")]
                for name, n, c, r, m in zip(names, self.counts, self.cosine, self.spread_ratio,
                                            self.nearest_mean_match, strict=True)]
        return Table(["class", "translated", "cos(class means)", "spread translated / target",
                      "nearest target class mean = own class"], rows,
                     caption=f"Translated source test images against real target test images, per class, in the "
                             f"penultimate features of the {reader} student (a reader of the target domain). A "
                             "translation that keeps the class and looks like the target has cosine near 1, a spread "
                             "ratio near 1 (below: less varied than the target) and its class's mean nearest.")


def _features(model: nn.Module, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    return torch.cat([model.forward_features(x[i:i + batch])[1][-1].flatten(1) for i in range(0, len(x), batch)])


def class_feature_stats(reader: nn.Module, translator: Any, test_a: torch.Tensor, test_a_y: torch.Tensor,
                        test_b: torch.Tensor, test_b_y: torch.Tensor, k: int, n: int = 2000) -> ClassFeatureStats:
    x_a = as_float(test_a[:n])
    fake = torch.cat([translate(translator, x_a[i:i + 500], z_seed=i) for i in range(0, len(x_a), 500)])
    f_t, y_t = _features(reader, fake), test_a_y[:n]
    f_b, y_b = _features(reader, as_float(test_b)), test_b_y
    means_b = torch.stack([f_b[y_b == c].mean(0) for c in range(k)])
    nearest = torch.cdist(f_t, means_b).argmin(1)
    cos, ratio, match, counts = [], [], [], []
    for c in range(k):
        ft, fb = f_t[y_t == c], f_b[y_b == c]
        counts.append(len(ft))
        if not len(ft):
            cos.append(float("nan")), ratio.append(float("nan")), match.append(float("nan"))
            continue
        mean_t = ft.mean(0)
        cos.append(float(torch.nn.functional.cosine_similarity(mean_t, means_b[c], dim=0)))
        ratio.append(float((ft - mean_t).norm(dim=1).mean() / (fb - means_b[c]).norm(dim=1).mean().clamp_min(1e-8)))
        match.append(float((nearest[y_t == c] == c).float().mean()))
    return ClassFeatureStats(torch.tensor(cos), torch.tensor(ratio), torch.tensor(match), torch.tensor(counts))


def _guard_paragraph(guard: dict[str, Any]) -> str:
    """The translator's class guard (gandistill.class_guard), as the report states it."""
    kept, reference = guard.get("class_kept"), guard.get("teacher_on_target_estimate")
    numbers = ("" if kept is None or reference is None else
               f"class kept {100 * kept:.1f} % against the teacher's ~{100 * reference:.1f} % on raw target images")
    if guard.get("verdict") == "tripped":
        then = (f"the student learned as {guard['fallback']} (plain KD on raw target images) instead"
                if guard.get("fallback") else "the run stopped")
        return (f"**The translator's class guard tripped** at step {guard.get('step')}: {guard.get('message')}. "
                f"Translator training stopped there and {then}.")
    return f"The translator's class guard passed ({numbers}, estimated without target labels)."


def _verdict(gain: float, target: float, against: str) -> str:
    met = "meets" if gain >= target else "misses"
    return (f"The student is {gain * 100:+.2f} points against {against} ({met} the +{target * 100:.0f}-point "
            "target).")


def _grids(teacher: nn.Module, translator: Any, meta_a: Any, meta_b: Any, test_a: torch.Tensor,
           test_a_y: torch.Tensor, test_b: torch.Tensor, test_b_y: torch.Tensor, names: list[str],
           out_dir: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """Source → translated (every translation captioned with the label it carries — the teacher's on
    the source image — and the teacher's reading of the translation, red where they differ); for
    CycleGAN also target → source with the teacher's label (red = wrong)."""
    k = len(names)
    idx_a = _one_per_class(test_a_y, k)
    x_a = as_float(test_a[idx_a])
    labels = teacher(x_a).argmax(1)
    to_a = ShapeAdapter(tuple(translator.shape_b), meta_a.input_shape)
    variants = TRANSLATED_VARIANTS if isinstance(translator, PixelDATranslator) else 1
    grid_rows = {"x_a": [(img.numpy(), f"label {names[int(y)]}", True) for img, y in zip(x_a, labels, strict=True)]}
    for v in range(variants):
        fake = translate(translator, x_a, z_seed=v)
        read = teacher(to_a(fake)).argmax(1)
        grid_rows[f"G(x_a){'' if variants == 1 else f', z{v + 1}'}"] = [
            (img.numpy(), f"{names[int(y)]}, T:{names[int(r)]}", bool(r == y))
            for img, y, r in zip(fake, labels, read, strict=True)]
    figures = {"translation_a_to_b": plots.sample_grid(
        grid_rows, out_dir / "translation_a_to_b.png",
        "source test images translated to the target domain: the label each carries, T: the teacher's reading")}
    captions = {"translation_a_to_b": "source → target: x_a and its translation(s), captioned with the label the "
                                      "translation carries (the teacher's on x_a) and the teacher's reading of the "
                                      "translation (red = the teacher reads another class)"}
    if not isinstance(translator, PixelDATranslator):
        idx_b = _one_per_class(test_b_y, k)
        x_b = as_float(test_b[idx_b])
        fake_a = translator.g_ba(x_b)
        preds = teacher(fake_a).argmax(1)
        b_caps = [(f"T:{names[int(p)]}", bool(p == y)) for p, y in zip(preds, test_b_y[idx_b], strict=True)]
        figures["translation_b_to_a"] = _translation_grid(
            x_b, fake_a, b_caps, ("x_b", "G_BA(x_b)"), out_dir / "translation_b_to_a.png",
            "target test images translated to the source domain, teacher's label (red = wrong)")
        captions["translation_b_to_a"] = "target → source: x_b and G_BA(x_b) with the teacher's label"
    return figures, captions


def summary_rows(metrics: dict[str, float]) -> dict[str, float | None]:
    """The side-by-side for run summaries (None where a row was not evaluated)."""
    keys = ("transfer_source_only_acc", "transfer_teacher_translated_acc", "transfer_task_classifier_acc",
            "transfer_class_kept_acc", "transfer_student_acc", "transfer_plain_kd_acc", "transfer_augmented_acc",
            "transfer_supervised_acc", "transfer_teacher_source_test_acc", "transfer_feature_class_match")
    return {key.removeprefix("transfer_"): metrics.get(key) for key in keys}

