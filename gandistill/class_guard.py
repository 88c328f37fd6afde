"""The translator's class guard (issue 22): stop a translator that loses the class, early, and say so.

A translator earns its cost only if the images it produces still show the class they will be
labelled with at least as often as the teacher reads raw target images correctly; otherwise plain
KD on the raw target images (the teacher labelling them directly) gives the student better labels.
Neither number may read a target label:

- the translator's class check: P[teacher(ad⁻¹(G(x_a))) = y_a] on held-out *source* images — the
  teacher's reading of the translated image (brought back to its input shape by the fixed adapter)
  against the source label (`class_preservation` / CycleGAN's `semantic_acc`);
- the teacher on raw target images: estimated from the teacher's confidence on unlabelled target
  images with ATC (`atc_estimate`), calibrated on held-out source images.

From a quarter of the translator's steps on, the guard compares them at every check; after
`translator.guard_patience` failed checks in a row it trips: training stops at once with a warning
(console, MLflow, the translator's result.json → the report), and then, by `translator.guard`:
"fallback" — the distill stage trains the student as plain KD on raw target images (target_kd's
recipe, the baseline the guard compared with) and says so in its result; "stop" — the stage fails
(TrainingError, exit 4) naming the numbers and the knobs; "off" — the numbers are logged only.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from gandistill.errors import TrainingError

log = logging.getLogger(__name__)

FALLBACK_METHOD = "target_kd"  # what the student learns as when the guard trips (translator.guard=fallback)


class GuardTripped(Exception):
    """Raised from a translator's eval when the guard trips; the stage saves what it has and reports."""


def atc_estimate(reference_conf: torch.Tensor, reference_correct: torch.Tensor, new_conf: torch.Tensor) -> float:
    """A classifier's accuracy on unlabelled data, estimated from its confidence (ATC, Garg et al. 2022,
    "Leveraging Unlabeled Data to Predict Out-of-Distribution Performance"): the threshold t with
    P_ref[conf > t] = its accuracy on labelled reference data; the estimate is P_new[conf > t]."""
    accuracy = reference_correct.float().mean().clamp(1e-4, 1 - 1e-4)
    threshold = torch.quantile(reference_conf.float(), 1 - accuracy)
    return float((new_conf > threshold).float().mean())


@torch.no_grad()
def estimate_teacher_on_target(teacher: nn.Module, to_a: nn.Module, val_a: torch.Tensor, val_a_labels: torch.Tensor,
                               val_b: torch.Tensor) -> float:
    """The teacher's accuracy on raw target images `val_b` (read through the fixed adapter `to_a`),
    estimated without a target label: ATC calibrated on held-out source images `val_a`."""
    reference = torch.softmax(teacher(val_a), 1)
    return atc_estimate(reference.amax(1), reference.argmax(1) == val_a_labels,
                        torch.softmax(teacher(to_a(val_b)), 1).amax(1))


def guard_symptom(class_kept: float, teacher_on_target: float, margin: float = 0.0) -> str | None:
    """The comparison itself: a message when the translation keeps the class less often than the
    teacher reads raw target images correctly (minus `margin`), else None."""
    if class_kept + margin >= teacher_on_target:
        return None
    return (f"the translator keeps the class in {100 * class_kept:.1f} % of translated source images (the teacher's "
            f"reading of the translation against the source label), below the {100 * teacher_on_target:.1f} % the "
            "teacher is estimated to read raw target images correctly (ATC, no target label): the translation loses "
            "the class")


class ClassGuard:
    """Counts failed checks in a row from a quarter of the steps on; `check` raises GuardTripped when it
    trips (translator.guard "fallback" / "stop"; with "off" it only records)."""

    def __init__(self, tp: Any):
        self.mode, self.patience, self.margin = tp.guard, tp.guard_patience, tp.guard_margin
        self.start = tp.steps // 4
        self.failed = 0
        self.tripped: dict[str, Any] | None = None
        self.last: dict[str, float] = {}

    def check(self, step: int, class_kept: float, teacher_on_target: float) -> None:
        self.last = {"class_kept": class_kept, "teacher_on_target_estimate": teacher_on_target, "step": step}
        symptom = guard_symptom(class_kept, teacher_on_target, self.margin) if step >= self.start else None
        self.failed = self.failed + 1 if symptom else 0
        if not symptom:
            return
        log.warning("[train_translator] step %d: class guard: %s (%d/%d)", step, symptom, self.failed, self.patience)
        if self.failed < self.patience or self.mode == "off" or self.tripped:
            return
        self.tripped = {"message": symptom, **self.last}
        if self.mode == "stop":
            raise TrainingError(f"train_translator stopped at step {step}: {symptom}. Set translator.guard=fallback "
                                "to train the student as plain KD on raw target images instead, or try another "
                                "translator (distill.method), a longer translator.steps or a larger "
                                "translator.task_weight")
        log.warning("[train_translator] class guard tripped at step %d: training stops here; the student will learn "
                    "as plain KD on raw target images (%s; translator.guard=fallback)", step, FALLBACK_METHOD)
        raise GuardTripped(symptom)

    def verdict(self) -> dict[str, Any]:
        """For the translator's result.json: what the guard saw and decided (distill reads `fallback`)."""
        if self.tripped is not None:
            return {"verdict": "tripped", "fallback": FALLBACK_METHOD if self.mode == "fallback" else None,
                    **self.tripped}
        return {"verdict": "passed" if self.mode != "off" else "off", "fallback": None, **self.last}
