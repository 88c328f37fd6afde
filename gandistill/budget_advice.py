"""After distillation, when the student ends far under its teacher: is the budget too small, or is
something else (the generator's samples, the student's size) the limit? One console line that says
which, from the student's own validation curve — issue 21 asked that a dataset needing more than the
defaults be told so, not left to guess.

The rule: a student within GAP_POINTS of its teacher on the validation split needs no advice. Past
that, a student whose best validation accuracy still rose by GAINING_POINTS or more over the last
quarter of its evaluations was cut off while learning: more steps should help. One whose curve had
flattened will not close the gap with more distillation steps alone; for a method that learns from a
trained generator, the generator's per-class recall (the share of real images its samples cover in
the teacher's feature space) says whether the samples are what limits it.

Only for a student that works in its teacher's domain: across domains the teacher's source accuracy
says nothing about the target.
"""

from __future__ import annotations

from typing import Any

GAP_POINTS = 2.0  # the product's bar: a student within 2 points of its teacher (issue 21's target)
GAINING_POINTS = 0.5  # best val accuracy gained over the last quarter of evaluations that says "still learning"
TAIL_FRACTION = 0.25
MIN_EVALUATIONS = 4  # fewer points than this are no curve


def late_gain_points(history: list[dict[str, Any]], key: str = "val_acc") -> float | None:
    """Points by which the best `key` of the last quarter of evaluations beats the best before it
    (negative: it fell back); None when there are fewer than MIN_EVALUATIONS."""
    values = [float(entry[key]) for entry in history if key in entry]
    if len(values) < MIN_EVALUATIONS:
        return None
    tail = max(1, round(len(values) * TAIL_FRACTION))
    return 100 * (max(values[-tail:]) - max(values[:-tail]))


def advice(student_val: float, teacher_val: float | None, history: list[dict[str, Any]], steps: int,
           generator_recall: float | None = None) -> str | None:
    """The console line for a student `student_val` against a teacher `teacher_val` (validation
    accuracies in [0, 1]) after `steps` distillation steps, or None when there is nothing to say."""
    if teacher_val is None:
        return None
    gap = 100 * (teacher_val - student_val)
    if gap <= GAP_POINTS:
        return None
    head = (f"the student ends {gap:.1f} points under its teacher on validation "
            f"({100 * student_val:.2f} vs {100 * teacher_val:.2f} %)")
    gain = late_gain_points(history)
    if gain is None:
        return None
    if gain >= GAINING_POINTS:
        return (f"{head} and was still gaining (+{gain:.2f} points over its last quarter of steps): the budget is "
                f"short for this data — raise distill.steps (now {steps}) or run with --profile full")
    why = (f"{head} and its curve had flattened ({gain:+.2f} points over its last quarter): more distillation "
           "steps alone will not close the gap")
    if generator_recall is not None:
        return (f"{why}; its generator's samples cover {100 * generator_recall:.0f} % of real validation images "
                "(per-class recall, the report's coverage section) — a low share means the samples limit the "
                "student: raise gan.steps or try another gan.arch")
    return f"{why} — a larger student (distill.student_arch) or another distill.method may"
