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


def test_the_default_bar_is_a_quarter_of_the_way_from_chance() -> None:
    assert teaching_threshold(None, 10) == pytest.approx(0.325)
    assert teaching_threshold(None, 4) == pytest.approx(0.4375)
    assert teaching_threshold(None, 100) == pytest.approx(0.2575)
    assert teaching_threshold(0.9, 10) == 0.9 and teaching_threshold(0.0, 10) == 0.0


def test_a_teacher_at_chance_stops_the_run_and_writes_nothing_then_the_override_resumes_it(
        tiny_dataset: Path, tmp_path: Path) -> None:
    """One optimiser step at a vanishing learning rate leaves the 4-class teacher at its random
    initialisation, near chance (25 %): train_teacher fails naming
    its accuracy, the bar and the knobs, and its output folder stays absent. Overriding the bar does
    not change the checkpoint's fingerprint: the re-run resumes from the trained steps."""
    tiny = ["runtime.threads=1", "teacher.epochs=0.01", "teacher.batch_size=32", "teacher.lr=1e-9"]
    params = load_params(ROOT / "params.yaml", tiny)
    with pytest.raises(TrainingError) as err:
        train_teacher.run(params, tiny_dataset, tmp_path / "teacher")
    message = str(err.value)
    assert "below the 43.8% it needs to teach" in message and "from chance (25.0%) to 100 %" in message
    assert "teacher.epochs=0.01" in message and "teacher.min_accuracy=0" in message
    assert not (tmp_path / "teacher").exists() and not list(tmp_path.glob(".teacher.*"))  # staging removed
    params = load_params(ROOT / "params.yaml", [*tiny, "teacher.min_accuracy=0"])
    result = train_teacher.run(params, tiny_dataset, tmp_path / "teacher")
    assert result["resumed_from"] == result["steps"] and (tmp_path / "teacher" / "model.pt").is_file()
