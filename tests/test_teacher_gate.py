"""A teacher that cannot teach stops the run after train_teacher, before the GAN and the student
spend their budget (train_teacher.check_can_teach); overridable with teacher.min_accuracy."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import ROOT

from gandistill.config import load_params
from gandistill.errors import TrainingError
from gandistill.stages import train_teacher
from gandistill.stages.train_teacher import teaching_threshold


def test_the_default_bar_is_halfway_from_chance_to_the_promotion_gate() -> None:
    assert teaching_threshold(None, 0.95, 10) == pytest.approx(0.525)
    assert teaching_threshold(None, 0.9, 4) == pytest.approx(0.575)
    assert teaching_threshold(None, 0.0, 10) == pytest.approx(0.1)  # a gate below chance: chance itself
    assert teaching_threshold(0.3, 0.95, 10) == 0.3 and teaching_threshold(0.0, 0.95, 10) == 0.0


def test_a_teacher_at_chance_stops_the_run_and_writes_nothing_then_the_override_resumes_it(
        tiny_dataset: Path, tmp_path: Path) -> None:
    """One optimiser step leaves the 4-class teacher near chance (25 %): train_teacher fails naming
    its accuracy, the bar and the knobs, and its output folder stays absent. Overriding the bar does
    not change the checkpoint's fingerprint: the re-run resumes from the trained steps."""
    params = load_params(ROOT / "params.yaml", ["runtime.threads=1", "teacher.epochs=0.01", "teacher.batch_size=32"])
    with pytest.raises(TrainingError) as err:
        train_teacher.run(params, tiny_dataset, tmp_path / "teacher")
    message = str(err.value)
    assert "below the 60.0% it needs to teach" in message and "halfway from chance (25.0%)" in message
    assert "teacher.epochs=0.01" in message and "teacher.min_accuracy=0" in message
    assert not (tmp_path / "teacher").exists() and not list(tmp_path.glob(".teacher.*"))  # staging removed
    params = load_params(ROOT / "params.yaml", ["runtime.threads=1", "teacher.epochs=0.01", "teacher.batch_size=32",
                                                "teacher.min_accuracy=0"])
    result = train_teacher.run(params, tiny_dataset, tmp_path / "teacher")
    assert result["resumed_from"] == result["steps"] and (tmp_path / "teacher" / "model.pt").is_file()
