"""Figures of the evaluation report, drawn with matplotlib's object API (no display needed).

Figures are built as `matplotlib.figure.Figure` objects and written with their own canvas, so
this module never touches pyplot's global state or switches the process-wide backend — a
library imported into a notebook or an application must not change how *it* plots.

Every function writes one PNG and returns its path; inputs are plain arrays so the figures
can be re-drawn from result.json without the models.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from gandistill.evaluation.metrics import Calibration

DPI = 100


def _subplots(nrows: int = 1, ncols: int = 1, **kwargs: Any) -> tuple[Figure, Any]:
    """A standalone figure and its axes (pyplot.subplots without pyplot's figure manager)."""
    fig = Figure(figsize=kwargs.pop("figsize", None))
    return fig, fig.subplots(nrows, ncols, **kwargs)


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)  # Figure.savefig draws on its own Agg canvas: no backend involved
    return path


def _image(ax: Any, img: np.ndarray) -> None:
    """Show a C×H×W image in [0, 1] (grey for one channel)."""
    img = np.clip(img, 0, 1)
    if img.shape[0] == 1:
        ax.imshow(img[0], cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(np.transpose(img, (1, 2, 0)))
    ax.set_xticks([])
    ax.set_yticks([])


def reliability_diagram(calibrations: dict[str, Calibration], path: str | Path) -> Path:
    """Accuracy vs confidence per bin (bars) against the diagonal of perfect calibration."""
    fig, axes = _subplots(1, len(calibrations), figsize=(4.2 * len(calibrations), 4), squeeze=False)
    for ax, (name, cal) in zip(axes[0], calibrations.items(), strict=True):
        edges = cal.bin_edges
        width = edges[1] - edges[0]
        acc = np.nan_to_num(cal.accuracy)
        ax.bar(edges[:-1], acc, width=width, align="edge", edgecolor="black", color="#4C72B0",
               label="accuracy")
        gap = np.nan_to_num(cal.confidence) - acc
        ax.bar(edges[:-1], gap, bottom=acc, width=width, align="edge", color="#DD8452", alpha=0.5,
               label="gap to confidence")
        ax.plot([0, 1], [0, 1], "k--", lw=1)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy",
               title=f"{name}: ECE {cal.ece * 100:.2f} % ({len(edges) - 1} bins)")
        ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def confusion_heatmap(cm: np.ndarray, class_names: Sequence[str], path: str | Path, title: str) -> Path:
    k = len(class_names)
    size = min(12, 2 + 0.45 * k)
    fig, ax = _subplots(figsize=(size, size))
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
        ax.set_xticks(range(k), class_names, rotation=90 if k > 10 else 0)
        ax.set_yticks(range(k), class_names)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    return _save(fig, path)


def per_class_bars(per_class: dict[str, np.ndarray], class_names: Sequence[str], path: str | Path) -> Path:
    k = len(class_names)
    fig, ax = _subplots(figsize=(max(6, 0.5 * k * len(per_class)), 3.5))
    width = 0.8 / len(per_class)
    for i, (name, acc) in enumerate(per_class.items()):
        ax.bar(np.arange(k) + i * width, np.nan_to_num(acc) * 100, width=width, label=name)
    lo = np.nanmin([np.nanmin(a) for a in per_class.values()]) * 100
    ax.set(ylim=(max(0, lo - 5), 100.5), ylabel="test accuracy (%)", title="per-class accuracy")
    ax.set_xticks(np.arange(k) + 0.4 - width / 2, class_names, rotation=90 if k > 10 else 0)
    ax.legend(fontsize=8)
    return _save(fig, path)


def sample_grid(rows: dict[str, list[tuple[np.ndarray, str, bool]]], path: str | Path, title: str) -> Path:
    """One row per class: (image, caption, ok) cells; captions of wrong predictions in red."""
    cols = max((len(v) for v in rows.values()), default=1)
    figsize = (1.1 * cols + 0.6, 1.15 * len(rows) + 0.4)
    fig, axes = _subplots(len(rows), cols, figsize=figsize, squeeze=False)
    for r, (label, cells) in enumerate(rows.items()):
        for c in range(cols):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(cells):
                img, caption, ok = cells[c]
                ax.axis("on")
                _image(ax, img)
                ax.set_title(caption, fontsize=7, color="black" if ok else "red")
        axes[r][0].set_ylabel(label, fontsize=8, rotation=0, labelpad=18)
        axes[r][0].axis("on")
        for spine in axes[r][0].spines.values():
            spine.set_visible(False)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def training_curves(histories: dict[str, list[dict[str, float]]], path: str | Path) -> Path | None:
    """One panel per stage: every numeric series of its loop history against the step."""
    histories = {k: v for k, v in histories.items() if v}
    if not histories:
        return None
    fig, axes = _subplots(1, len(histories), figsize=(4.5 * len(histories), 3.4), squeeze=False)
    for ax, (stage, history) in zip(axes[0], histories.items(), strict=True):
        steps = [h.get("step", i) for i, h in enumerate(history)]
        keys = sorted({k for h in history for k, v in h.items()
                       if k != "step" and isinstance(v, int | float)})
        for key in keys:
            ax.plot(steps, [h.get(key, np.nan) for h in history], marker=".", label=key)
        ax.set(xlabel="step", title=stage)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, path)


CLOCK_COLUMNS = ("step", "wall_s", "samples")  # a loop history's axes, not its curves


def history_panels(history: list[dict[str, Any]], path: str | Path, title: str,
                   selected_step: float | None = None) -> Path | None:
    """One small panel per numeric series of one loop's history against the step (series of
    different scales — FID and agreement — each on its own axis), the selected step marked."""
    keys = list(dict.fromkeys(k for h in history for k, v in h.items()
                              if k not in CLOCK_COLUMNS and isinstance(v, int | float) and not isinstance(v, bool)))
    if not keys:
        return None
    cols = min(4, len(keys))
    rows = -(-len(keys) // cols)
    fig, axes = _subplots(rows, cols, figsize=(3.3 * cols, 2.5 * rows + 0.4), squeeze=False)
    steps = [h.get("step", i) for i, h in enumerate(history)]
    for i, ax in enumerate(axes.flat):
        if i >= len(keys):
            ax.axis("off")
            continue
        ax.plot(steps, [h.get(keys[i], np.nan) for h in history], marker=".")
        if selected_step is not None:
            ax.axvline(selected_step, color="grey", ls="--", lw=1)
        ax.set_title(keys[i], fontsize=9)
        ax.tick_params(labelsize=7)
        ax.ticklabel_format(axis="y", useOffset=False)  # 0.99919 as itself, not 1e-6 + offset
        ax.grid(alpha=0.3)
    fig.suptitle(title + ("" if selected_step is None else " (dashed: the selected step)"), fontsize=10)
    return _save(fig, path)


def privacy_pairs(generated: np.ndarray, nearest_train: np.ndarray, distances: np.ndarray, threshold: float,
                  path: str | Path) -> Path:
    """The generated samples closest to a training image, each above its nearest neighbour."""
    n = len(generated)
    fig, axes = _subplots(2, max(n, 1), figsize=(1.2 * max(n, 1) + 0.5, 3), squeeze=False)
    for i in range(n):
        _image(axes[0][i], generated[i])
        color = "red" if distances[i] < threshold else "black"
        axes[0][i].set_title(f"d={distances[i]:.2f}", fontsize=7, color=color)
        _image(axes[1][i], nearest_train[i])
    axes[0][0].set_ylabel("generated", fontsize=8)
    axes[1][0].set_ylabel("nearest train", fontsize=8)
    fig.suptitle(f"closest generated/train pairs (pixel L2; red = below real-test 1st pct {threshold:.2f})",
                 fontsize=9)
    return _save(fig, path)


def distance_histogram(audits: dict[str, tuple[np.ndarray, np.ndarray, float]], path: str | Path) -> Path:
    """Nearest-train distance distributions: generated vs held-out real, per space."""
    fig, axes = _subplots(1, len(audits), figsize=(4.5 * len(audits), 3.2), squeeze=False)
    for ax, (space, (gen, real, threshold)) in zip(axes[0], audits.items(), strict=True):
        bins = np.linspace(0, max(gen.max(), real.max()) * 1.02, 40)
        ax.hist(real, bins=bins, alpha=0.6, density=True, label="real test → train")
        ax.hist(gen, bins=bins, alpha=0.6, density=True, label="generated → train")
        ax.axvline(threshold, color="red", ls="--", lw=1, label="real 1st percentile")
        ax.set(xlabel=f"nearest-train distance ({space})", title=space)
        ax.legend(fontsize=7)
    return _save(fig, path)


def speed_bars(speed: dict[str, dict[str, dict[str, float]]], path: str | Path) -> Path:
    """Batch-1 p50 latency and batch throughput per backend and model (a model timed on fewer
    backends, like the INT8 student on ONNX Runtime only, leaves the others empty)."""
    models = list(speed)
    backends = list(dict.fromkeys(b for per in speed.values() for b in per))
    fig, axes = _subplots(1, 2, figsize=(9.5, 3.4))
    width = 0.8 / len(models)
    for i, model in enumerate(models):
        x = np.arange(len(backends)) + i * width
        get = lambda key, m=model: [speed[m][b][key] if b in speed[m] else np.nan for b in backends]  # noqa: E731
        axes[0].bar(x, get("latency_p50_ms"), width=width, label=model)
        axes[1].bar(x, get("throughput_ips"), width=width, label=model)
    for ax, title in zip(axes, ("batch-1 latency p50 (ms)", "throughput (images/s, largest batch)"), strict=True):
        ax.set_xticks(np.arange(len(backends)) + 0.4 - width / 2, backends)
        ax.set_title(title)
        ax.legend(fontsize=8)
    return _save(fig, path)


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """Names of the points no other point beats on both axes (lower cost, higher accuracy),
    ordered by cost."""
    front = [n for n, (c, a) in points.items()
             if not any(c2 <= c and a2 >= a and (c2, a2) != (c, a) for c2, a2 in points.values())]
    return sorted(front, key=lambda n: points[n][0])


def accuracy_vs_latency(points: dict[str, tuple[float, float]], path: str | Path) -> Path:
    """Test accuracy against batch-1 latency, one point per model, the Pareto front joined."""
    fig, ax = _subplots(figsize=(5.2, 3.6))
    for name, (latency, acc) in points.items():
        ax.scatter([latency], [acc * 100], s=40, zorder=3)
        ax.annotate(name, (latency, acc * 100), textcoords="offset points", xytext=(6, 4), fontsize=8)
    front = pareto_front(points)
    ax.plot([points[n][0] for n in front], [points[n][1] * 100 for n in front], "k--", lw=1, alpha=0.6,
            label="Pareto front")
    ax.set(xlabel="batch-1 latency p50 (ms, ONNX Runtime)", ylabel="test accuracy (%)",
           title="accuracy vs latency")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)
