"""Accuracy against compute: draw bench/results/<results>-vs-time.png from <results>.json.

    python -m bench.plot                 # quality.json → quality-vs-time.png
    python -m bench.plot --results ablations-data-free

One column per (dataset, budget); one line per method (and override set): the mean over seeds of
the student's test accuracy, with a band from the lowest to the highest seed, against (row 1) the
training wall time of the method's own stages (for `gan`: the GAN's training time first, then
distillation) and (rows 2–3, the third zoomed on the top 4 points below the teacher) the samples
the student has seen — a clock every seed shares whatever the machine's load. Where seeds share
no wall-clock range (runs at different loads), row 1 draws each seed instead of a mean.
Test accuracy here is the benchmark's probe, recorded off the clock; the
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


def mean_band(seed_curves: list[list[dict]], x: str = "wall_s",
              points: int = 60) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Interpolate every seed's curve onto one grid of `x` over the span all seeds cover; None when
    that span is empty or a single point (seeds run at different loads can share no wall-clock
    range: their mean would be an invisible sliver, so the caller draws each seed instead)."""
    start = max(c[0][x] for c in seed_curves)
    end = min(c[-1][x] for c in seed_curves)
    if len(seed_curves) > 1 and end <= start:
        return None
    grid = np.linspace(start, max(end, start), points)
    ys = np.stack([np.interp(grid, [p[x] for p in c], [100 * p["test_acc"] for p in c]) for c in seed_curves])
    return grid, ys.mean(0), ys.min(0), ys.max(0)


# (x key, axis label, scale to the plotted unit): wall time as measured, and the student's samples —
# a machine-independent clock that every seed of a setting shares.
AXES = [("wall_s", "training wall time of the method's stages (min)", 1 / 60),
        ("samples", "samples the student has seen (millions)", 1e-6)]


def _draw_lines(ax, lines: dict[str, list[list[dict]]], x: str, scale: float) -> None:
    for label, seed_curves in sorted(lines.items()):
        band = mean_band(seed_curves, x)
        if band is None:  # no common range: each seed as its own line, never a mean over nothing
            colour = None
            for k, curve in enumerate(seed_curves):
                (line,) = ax.plot([p[x] * scale for p in curve], [100 * p["test_acc"] for p in curve],
                                  color=colour, linewidth=1,
                                  label=f"{label} ({len(seed_curves)} seeds, no common range: each seed)"
                                  if k == 0 else None)
                colour = line.get_color()
            continue
        grid, mean, low, high = band
        (line,) = ax.plot(grid * scale, mean, label=f"{label} ({len(seed_curves)} seeds)")
        ax.fill_between(grid * scale, low, high, color=line.get_color(), alpha=0.2)


def draw(name: str) -> Path:
    runs = json.loads((RESULTS / f"{name}.json").read_text())["runs"]
    panels = curves(runs)
    figure = Figure(figsize=(6.5 * len(panels), 13), layout="constrained")
    grid_axes = figure.subplots(3, max(1, len(panels)), squeeze=False)
    for column, ((dataset, budget), lines) in enumerate(sorted(panels.items())):
        per_seed = {r["seed"]: 100 * r["teacher_acc"] for r in runs.values()
                    if (r["dataset"], r["budget"]) == (dataset, budget)}
        teacher = sum(per_seed.values()) / len(per_seed)  # mean over the seeds' teachers
        for row, ax in enumerate(grid_axes[:, column]):
            x, xlabel, scale = AXES[min(row, 1)]
            _draw_lines(ax, lines, x, scale)
            ax.axhline(teacher, color="black", linestyle=":", linewidth=1, label=f"teacher {teacher:.2f} (mean)")
            zoomed = row == 2
            ax.set(title=f"{dataset}, {budget} budget" + (" (zoom)" if zoomed else ""), xlabel=xlabel,
                   ylabel="student test accuracy (%)",
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
