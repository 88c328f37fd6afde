"""Accuracy, fidelity to the teacher, calibration and per-class results on the test split —
for the teacher, the student and any baseline students, from one pass of each over the data."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from gandistill.data.dataset import as_float
from gandistill.evaluation import metrics as M
from gandistill.evaluation import plots
from gandistill.evaluation.predict import accuracy, predict_logits
from gandistill.evaluation.report import Figure, Section, Table, fmt
from gandistill.nets import count_parameters
from gandistill.stages.evaluate.inputs import STUDENT, TEACHER, Block, Inputs


@dataclass
class Classification:
    """One model's results on the test split."""

    acc: float
    ci: tuple[float, float]  # 95 % Wilson interval of acc
    cm: np.ndarray  # confusion matrix, rows = true class
    per_class: np.ndarray
    calibration: M.Calibration
    correct: np.ndarray  # per-sample correctness (for paired tests)
    logits: torch.Tensor


@dataclass
class AccuracyBlock(Block):
    classes: dict[str, Classification] = field(default_factory=dict)


def classify(logits: torch.Tensor, labels: torch.Tensor, num_classes: int, bins: int) -> Classification:
    preds = logits.argmax(1)
    cm = M.confusion_matrix(labels.numpy(), preds.numpy(), num_classes)
    correct = (preds == labels).numpy()
    return Classification(acc=accuracy(logits, labels), ci=M.wilson_interval(int(correct.sum()), len(labels)),
                          cm=cm, per_class=M.per_class_accuracy(cm),
                          calibration=M.calibration(logits, labels, bins), correct=correct, logits=logits)


def measure(ev: Inputs) -> AccuracyBlock:
    """Every model over the test split once; student-vs-teacher and baseline comparisons."""
    ep = ev.params.evaluate
    classes = {name: classify(predict_logits(model, ev.test_x, ep.batch_size), ev.test_y, ev.meta.num_classes,
                              ep.ece_bins) for name, model in ev.models.items()}
    t, s = classes[TEACHER], classes[STUDENT]
    metrics = {
        "teacher_test_acc": t.acc, "student_test_acc": s.acc,
        "student_test_acc_ci_low": s.ci[0], "student_test_acc_ci_high": s.ci[1],
        "acc_drop": t.acc - s.acc,
        "mcnemar_p_student_vs_teacher": M.mcnemar_p(t.correct, s.correct),
        "agreement": M.agreement(t.logits, s.logits),
        "kl_teacher_student": M.mean_kl(t.logits, s.logits),
        "ece_teacher": t.calibration.ece, "ece_student": s.calibration.ece,
        "test_samples": float(len(ev.test_y)),
    }
    baselines: dict[str, dict[str, float]] = {}
    for name in ev.baselines:
        c = classes[name]
        baselines[name] = {"test_acc": c.acc, "agreement": M.agreement(t.logits, c.logits),
                           "ece": c.calibration.ece, "params": float(count_parameters(ev.models[name])),
                           "mcnemar_p_vs_student": M.mcnemar_p(s.correct, c.correct)}
        metrics |= {f"baseline_{name}_{key}": value for key, value in baselines[name].items()}
    return AccuracyBlock(metrics=metrics, classes=classes, result={
        "class_names": list(ev.meta.class_names),
        "confusion_matrix": s.cm.tolist(), "confusion_matrix_teacher": t.cm.tolist(),
        "per_class_accuracy": {n: [None if np.isnan(v) else float(v) for v in c.per_class]
                               for n, c in classes.items()},
        "baselines": baselines,
    })


def _real_grid(x: torch.Tensor, y: torch.Tensor, preds: torch.Tensor, class_names: list[str],
               per_class: int = 6) -> dict[str, list[tuple[np.ndarray, str, bool]]]:
    """Per class: up to 2 misclassified test images first (the informative ones), then correct."""
    rows = {}
    for k, name in enumerate(class_names):
        idx = torch.nonzero(y == k).flatten()
        wrong = idx[preds[idx] != k][:2]
        right = idx[preds[idx] == k][: per_class - len(wrong)]
        rows[name] = [(as_float(x[i : i + 1])[0].numpy(), f"→{class_names[int(preds[i])]}", bool(preds[i] == k))
                      for i in torch.cat([wrong, right]).tolist()]
    return rows


def report(ev: Inputs, block: AccuracyBlock) -> AccuracyBlock:
    """Figures and the 'Fidelity and calibration' and 'Per-class accuracy' sections."""
    out, names = ev.out_dir, list(ev.meta.class_names)
    t, s = block.classes[TEACHER], block.classes[STUDENT]
    m = block.metrics
    block.figures = {
        "reliability": plots.reliability_diagram({TEACHER: t.calibration, STUDENT: s.calibration},
                                                 out / "reliability.png"),
        "confusion": plots.confusion_heatmap(s.cm, names, out / "confusion_student.png",
                                             "student confusion matrix (test)"),
        "per_class": plots.per_class_bars({n: c.per_class for n, c in block.classes.items()}, names,
                                          out / "per_class_accuracy.png"),
        "samples": plots.sample_grid(_real_grid(ev.test_x, ev.test_y, s.logits.argmax(1), names),
                                     out / "samples_test.png",
                                     "test images per class with the student's prediction (red = wrong)"),
    }
    per_class_rows = [[n] + [fmt(c.per_class[i], "%") for c in block.classes.values()] for i, n in enumerate(names)]
    block.sections = [
        Section("Fidelity and calibration", [
            f"Top-1 agreement {fmt(m['agreement'], '%')}; mean KL(teacher ‖ student) "
            f"{m['kl_teacher_student']:.4f} nats. ECE uses {ev.params.evaluate.ece_bins} equal-width confidence "
            "bins (Guo et al. 2017)."], [], [Figure(block.figures["reliability"], "reliability diagrams")]),
        Section("Per-class accuracy", [], [Table(["class", *block.classes.keys()], per_class_rows)],
                [Figure(block.figures["per_class"], "per-class test accuracy"),
                 Figure(block.figures["confusion"], "student confusion matrix (rows = true class)"),
                 Figure(block.figures["samples"], "test samples per class")]),
    ]
    return block


def block(ev: Inputs) -> AccuracyBlock:
    return report(ev, measure(ev))


def accuracy_table(ev: Inputs, block: AccuracyBlock) -> Table:
    """Test accuracy with its interval, agreement, ECE and size of every model (the summary's table)."""
    m = block.metrics
    rows = []
    for name, c in block.classes.items():
        label = {TEACHER: TEACHER, STUDENT: f"student ({ev.method})"}.get(name, f"baseline {name}")
        agreement = 1.0 if name == TEACHER else (m["agreement"] if name == STUDENT
                                                 else block.result["baselines"][name]["agreement"])
        rows.append([label, ev.info[name].get("arch", "imported" if name == TEACHER else "?"), fmt(c.acc, "%"),
                     f"{fmt(c.ci[0], '%')} – {fmt(c.ci[1], '%')}", fmt(agreement, "%"),
                     fmt(c.calibration.ece, "%"), fmt(count_parameters(ev.models[name]), "int")])
    return Table(["model", "arch", "test accuracy", "95 % CI (Wilson)", "agreement with teacher", "ECE",
                  "parameters"], rows)
