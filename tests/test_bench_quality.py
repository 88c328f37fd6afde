"""The quality benchmark's bookkeeping: a row holds the seeds of one setting and never mixes settings."""

from __future__ import annotations

import json

import pytest

from bench import quality


def _run(seed: int, lr: float = 0.003, code: str = "abc") -> dict:
    return {"dataset": "mnist", "budget": "default", "method": "kd", "overrides": [], "seed": seed,
            "params": {"seed": seed, "distill": {"lr": lr}}, "code": {"distill": code}, "final_acc": 0.9 + seed / 100,
            "selected_acc": None, "teacher_acc": 0.99, "wall_s": 1.0, "real_images_seen_by_student": 0,
            "git_commit": "c0ffee", "threads": 1, "command": "python -m bench.quality", "curve": []}


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setattr(quality, "RESULTS", tmp_path)
    return lambda: json.loads((tmp_path / "t.json").read_text())


def test_a_row_keeps_every_seed_of_one_setting(results):
    for seed in (0, 1, 2):
        quality.merge_result("t", _run(seed))
    (row,) = results()["rows"].values()
    assert row["seeds"] == [0, 1, 2] and row["final_mean"] == pytest.approx(0.91)


@pytest.mark.parametrize("changed", [{"lr": 0.01}, {"code": "other"}])
def test_a_run_with_other_settings_or_code_replaces_the_rows_runs(results, changed):
    quality.merge_result("t", _run(0))
    quality.merge_result("t", _run(1))
    quality.merge_result("t", _run(2, **changed))
    (row,) = results()["rows"].values()
    assert row["seeds"] == [2]
