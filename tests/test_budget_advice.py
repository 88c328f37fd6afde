"""budget_advice: the console line that says whether a student far under its teacher was cut off
while learning or had stopped learning."""

from __future__ import annotations

import pytest

from gandistill.budget_advice import advice, late_gain_points


def _curve(*accuracies: float) -> list[dict[str, float]]:
    return [{"step": 250.0 * (i + 1), "val_acc": a} for i, a in enumerate(accuracies)]


# The default MNIST run's student (gandistill run --local, 40 evaluations): flat at the end.
MNIST_TAIL = _curve(0.9415, 0.9538, 0.9635, 0.9667, 0.9715, 0.9747, 0.9763, 0.9792, 0.9802, 0.9838, 0.9838, 0.9843)


def test_late_gain_compares_the_last_quarter_with_everything_before():
    assert late_gain_points(_curve(0.50, 0.60, 0.70, 0.80)) == pytest.approx(10.0)  # last 1 vs first 3
    assert round(late_gain_points(_curve(0.5, 0.7, 0.6, 0.62, 0.61, 0.65, 0.64, 0.66)), 6) == -4.0  # fell back
    assert late_gain_points(_curve(0.5, 0.6, 0.7)) is None  # three points are no curve
    assert late_gain_points([{"step": 1.0, "loss": 2.0}] * 8) is None  # nothing real was read while training


def test_a_student_within_two_points_of_its_teacher_gets_no_advice():
    assert advice(0.9843, 0.9912, MNIST_TAIL, 10000, generator_recall=0.61) is None
    assert advice(0.60, None, MNIST_TAIL, 10000) is None  # across domains: no teacher accuracy to compare


def test_a_student_cut_off_while_learning_is_told_to_train_longer():
    said = advice(0.75, 0.9635, _curve(0.40, 0.55, 0.62, 0.68, 0.72, 0.75), 1500, generator_recall=0.07)
    assert said.startswith("the student ends 21.4 points under its teacher on validation (75.00 vs 96.35 %)")
    assert "still gaining (+7.00 points" in said and "raise distill.steps (now 1500)" in said


def test_a_flat_student_hears_what_limits_it_instead_of_more_steps():
    flat = _curve(0.50, 0.60, 0.62, 0.62, 0.621, 0.622, 0.62, 0.622)
    said = advice(0.622, 0.87, flat, 10000, generator_recall=0.07)
    assert "its curve had flattened (+0.00 points" in said and "more distillation steps alone" in said
    assert "cover 7 % of real validation images" in said and "raise gan.steps" in said
    assert "distill.student_arch" in advice(0.622, 0.87, flat, 10000)  # no generator: the student or the method


def test_an_unreadable_teacher_result_drops_the_advice_not_the_student(tmp_path):
    from gandistill import methods
    from gandistill.stages.distill import _teacher_and_generator

    (tmp_path / "teacher").mkdir()
    (tmp_path / "teacher" / "result.json").write_text('{"val_acc": 0.99')  # cut short
    assert _teacher_and_generator(methods.get("gan"), tmp_path / "teacher", tmp_path / "none") == (None, None)
    (tmp_path / "teacher" / "result.json").write_text('{"val_acc": 0.99}')
    assert _teacher_and_generator(methods.get("gan"), tmp_path / "teacher", None) == (0.99, None)
    assert _teacher_and_generator(methods.get("cyclegan"), tmp_path / "teacher", None) == (None, None)  # target
