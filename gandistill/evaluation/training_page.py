"""What a training stage shows in the KFP UI — in its run and in the run comparison, where the
Scalar Metrics tab lines up `system.Metrics` artifacts and the HTML tab `system.HTML` ones:
its final metrics, and one self-contained HTML page with the curves of its loop (a panel per
evaluated metric against the step, the selected step marked, and the numbers as a table).

Both come from the stage's result (gandistill.stages.entry fills them on every training task):
the final metrics are the ones the stage logged on its MLflow run (the harness keeps them in the
result), so the two UIs show the same numbers.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

from gandistill.evaluation import plots
from gandistill.evaluation.report import Figure, Section, Table, fmt, write_html


def final_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The stage's final metrics (as on its MLflow run) and its wall time; finite numbers only
    (KFP keeps artifact metadata as a protobuf Struct: no NaN or infinity)."""
    numbers = {**(result.get("final_metrics") or {}), "wall_s": result.get("wall_s")}
    return {key: float(value) for key, value in numbers.items()
            if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)}


def _history_table(history: list[dict[str, Any]]) -> Table:
    columns = list(dict.fromkeys(key for entry in history for key, value in entry.items()
                                 if isinstance(value, int | float) and not isinstance(value, bool)))
    rows = [[fmt(entry.get(column), "int" if column in ("step", "samples") else "") for column in columns]
            for entry in history]
    return Table(columns, rows, "every evaluation of the loop")


def write_curves(stage: str, result: dict[str, Any], path: str | Path) -> Path:
    """`stage`'s curves page at `path` (one HTML file, its figure inlined: it opens offline)."""
    history = list(result.get("history") or [])
    selected = result.get("best_step")
    metrics = final_metrics(result)
    table = Table(["metric", "final value"], [[key, fmt(value)] for key, value in metrics.items()],
                  "as logged on the stage's MLflow run")
    with tempfile.TemporaryDirectory() as tmp:
        figure = plots.history_panels(history, Path(tmp) / "curves.png", stage, selected)
        if figure is None:
            source = result.get("source")
            why = f"the model was imported ({source}), not trained" if source not in (None, "train") else \
                "the loop recorded no evaluation"
            return write_html(f"{stage}: training curves", [Section("Curves", [f"No curves: {why}."], [table])],
                              path)
        steps = result.get("steps")
        note = f"{len(history)} evaluation{'s' * (len(history) != 1)}" + (f" over {steps} steps" if steps else "")
        if isinstance(selected, int | float):
            note += f"; the stage's result is the model of step {int(selected)}"
        return write_html(f"{stage}: training curves", [
            Section("Curves", [note + "."], [table], [Figure(figure, f"{stage}: each evaluated metric by step")]),
            Section("Numbers", [], [_history_table(history)])], path)
