"""What a training task shows in the KFP UI (gandistill.evaluation.training_page): its final metrics
(system.Metrics) and its curves page (system.HTML), both from the stage's result. The compiled spec
(tests/test_compiled_spec.py) and a real kfp.local run (tests/integration/test_mlflow_server.py) check
that every training task outputs them; here, what they hold."""

from __future__ import annotations

import base64
import html
import io
import math
import re
from pathlib import Path

import numpy as np
import pytest
from helpers import artifact
from kfp import dsl

from gandistill.evaluation import plots, training_page
from gandistill.stages import entry

HISTORY = [{"step": float(step), "wall_s": 0.5 * step, "samples": 64.0 * step, "fid": 30.0 / step,
            "agreement": 0.5 + step / 100, "per_class": [0.1, 0.2]} for step in (10, 20, 30)]
RESULT = {"steps": 30, "best_step": 20, "wall_s": 12.5, "history": HISTORY, "selected_fid": 1.5,
          "final_metrics": {"selected_fid": 1.5, "selected_agreement": 0.7, "nan_metric": float("nan"),
                            "inf_metric": math.inf, "flag": True}}


def _image(page: str) -> np.ndarray:
    from matplotlib.image import imread

    data = re.search(r'src="data:image/png;base64,([^"]+)"', page)
    assert data is not None
    return imread(io.BytesIO(base64.b64decode(data.group(1))), format="png")


def test_the_final_metrics_are_the_stage_s_own_and_its_wall_time_finite_numbers_only() -> None:
    assert training_page.final_metrics(RESULT) == {"selected_fid": 1.5, "selected_agreement": 0.7, "wall_s": 12.5}
    assert training_page.final_metrics({}) == {}  # a result without them (an older result.json) shows none


def test_the_curves_page_draws_each_evaluated_metric_and_lists_the_numbers(tmp_path: Path) -> None:
    page = training_page.write_curves("train_gan", RESULT, tmp_path / "curves").read_text()
    assert "<title>train_gan: training curves</title>" in page
    assert "3 evaluations over 30 steps" in page and "model of step 20" in html.unescape(page)
    assert "<td>selected_fid</td><td>1.5</td>" in page and "nan_metric" not in page
    rows = re.findall(r"<tr><td>(\d[\d,]*)</td>", page)  # the numbers table: one row per evaluation
    assert rows == ["10", "20", "30"]
    assert "http://" not in page and "https://" not in page  # self-contained: opens offline, in KFP's iframe
    height, width = _image(page).shape[:2]
    assert width > height  # fid and agreement side by side: a panel each


def test_one_panel_per_metric_never_for_the_clock_columns(tmp_path: Path) -> None:
    one = plots.history_panels([{"step": 1.0, "fid": 3.0}, {"step": 2.0, "fid": 2.0}], tmp_path / "a.png", "x")
    two = plots.history_panels(HISTORY, tmp_path / "b.png", "x", selected_step=20)
    assert one is not None and two is not None
    from matplotlib.image import imread

    assert imread(two).shape[1] > 1.5 * imread(one).shape[1]  # fid and agreement side by side
    assert plots.history_panels([{"step": 1.0, "wall_s": 2.0, "samples": 8.0}], tmp_path / "c.png", "x") is None


def test_an_imported_teacher_says_why_it_has_no_curves(tmp_path: Path) -> None:
    result = {"source": "torchscript", "steps": 0, "wall_s": 2.0, "final_metrics": {"test_acc": 0.9}}
    page = training_page.write_curves("train_teacher", result, tmp_path / "curves").read_text()
    assert "No curves: the model was imported (torchscript), not trained." in page
    assert "<td>test_acc</td><td>0.9</td>" in page and "<img" not in page


def test_a_training_task_fills_both_outputs_from_its_result(tmp_path: Path) -> None:
    metrics, curves = artifact(dsl.Metrics, tmp_path / "metrics"), artifact(dsl.HTML, tmp_path / "curves")
    entry.show_training("distill", RESULT, metrics, curves)
    assert metrics.metadata == pytest.approx({"selected_fid": 1.5, "selected_agreement": 0.7, "wall_s": 12.5})
    assert (tmp_path / "curves").read_text().startswith("<!DOCTYPE html>")
