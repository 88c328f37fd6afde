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


def test_plot_never_averages_over_an_empty_time_range_and_draws_samples_too(tmp_path, monkeypatch):
    from bench import plot

    def curve(t0: float, t1: float) -> list[dict]:
        return [{"wall_s": t0 + (t1 - t0) * k / 4, "samples": 256 * 250 * k, "test_acc": 0.5 + 0.1 * k}
                for k in range(5)]

    disjoint = [curve(500, 600), curve(1500, 1600)]  # seeds at different loads: no common wall time
    assert plot.mean_band(disjoint) is None
    grid, mean, low, high = plot.mean_band(disjoint, "samples")  # the shared clock still averages
    assert grid[0] == 0 and grid[-1] == 256 * 1000 and mean[-1] == pytest.approx(90.0)
    overlapping = plot.mean_band([curve(0, 100), curve(50, 150)])
    assert overlapping is not None and overlapping[0][0] == 50 and overlapping[0][-1] == 100
    runs = {f"r{s}": {"dataset": "d", "budget": "default", "method": "gan", "overrides": [], "seed": s,
                      "teacher_acc": 0.99, "curve": c} for s, c in enumerate(disjoint)}
    monkeypatch.setattr(plot, "RESULTS", tmp_path)
    (tmp_path / "q.json").write_text(json.dumps({"runs": runs}))
    assert plot.draw("q").stat().st_size > 0
