"""Accuracy against compute: draw bench/results/<results>-vs-time.png from <results>.json.

    python -m bench.plot                 # quality.json → quality-vs-time.png
    python -m bench.plot --results ablations-data-free

One column per (dataset, budget), the second row zoomed on the top 4 points below the teacher;
one line per method (and override set): the mean over seeds
of the student's test accuracy against the training wall time of the method's own stages
(for `gan`: the GAN's training time first, then distillation), with a band from the lowest
to the highest seed. Test accuracy here is the benchmark's probe, recorded off the clock; the
numbers in the tables are final-step or val-selected, never the best point of a curve.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

RESULTS = Path(__file__).resolve().parent / "results"


def _label(row: dict[str, Any]) -> str:
    return row["method"] + (f" ({' '.join(row['overrides'])})" if row["overrides"] else "")


def curves(runs: dict[str, dict[str, Any]]) -> dict[tuple[str, str], dict[str, list[list[dict]]]]:
    """(dataset, budget) -> label -> one curve per seed."""
    panels: dict[tuple[str, str], dict[str, list[list[dict]]]] = {}
    for run in runs.values():
        if run.get("curve"):
            panel = panels.setdefault((run["dataset"], run["budget"]), {})
            panel.setdefault(_label(run), []).append(run["curve"])
    return panels


def mean_band(seed_curves: list[list[dict]], points: int = 60) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                          np.ndarray]:
    """Interpolate every seed's curve onto one time grid (over the span all seeds cover)."""
    start = max(c[0]["wall_s"] for c in seed_curves)
    end = min(c[-1]["wall_s"] for c in seed_curves)
    grid = np.linspace(start, max(end, start), points)
    ys = np.stack([np.interp(grid, [p["wall_s"] for p in c], [100 * p["test_acc"] for p in c])
                   for c in seed_curves])
    return grid, ys.mean(0), ys.min(0), ys.max(0)


def draw(name: str) -> Path:
    runs = json.loads((RESULTS / f"{name}.json").read_text())["runs"]
    panels = curves(runs)
    figure = Figure(figsize=(6.5 * len(panels), 9), layout="constrained")
    grid_axes = figure.subplots(2, max(1, len(panels)), squeeze=False)
    for column, ((dataset, budget), lines) in enumerate(sorted(panels.items())):
        per_seed = {r["seed"]: 100 * r["teacher_acc"] for r in runs.values()
                    if (r["dataset"], r["budget"]) == (dataset, budget)}
        teacher = sum(per_seed.values()) / len(per_seed)  # mean over the seeds' teachers
        for row, ax in enumerate(grid_axes[:, column]):
            for label, seed_curves in sorted(lines.items()):
                grid, mean, low, high = mean_band(seed_curves)
                (line,) = ax.plot(grid / 60, mean, label=f"{label} ({len(seed_curves)} seeds)")
                ax.fill_between(grid / 60, low, high, color=line.get_color(), alpha=0.2)
            ax.axhline(teacher, color="black", linestyle=":", linewidth=1, label=f"teacher {teacher:.2f} (mean)")
            zoomed = row == 1
            ax.set(title=f"{dataset}, {budget} budget" + (" (zoom)" if zoomed else ""),
                   xlabel="training wall time of the method's stages (min)", ylabel="student test accuracy (%)",
                   ylim=(teacher - 4, teacher + 0.5) if zoomed else (max(0, ax.get_ylim()[0]), 100))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="lower right")
    out = RESULTS / f"{name}-vs-time.png"
    figure.savefig(out, dpi=110)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="quality")
    print(draw(parser.parse_args().results))


if __name__ == "__main__":
    main()
