"""Figures of the report's "Explain" sections (drawn like `plots`: matplotlib's object API, no
pyplot state; each function writes one PNG and returns its path)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from gandistill.evaluation.plots import DPI, _save, _subplots

COVERED, NOT_COVERED = "#2a7f3f", "#c0392b"


def coverage_vs_error(class_names: Sequence[str], per_class: list[dict[str, Any]], path: str | Path) -> Path:
    """Left: per class, the samples' recall of the real test images against the student's test
    error (a class far right and low is covered and learned). Right: precision, recall, student
    accuracy and teacher–student agreement per class."""
    k = len(class_names)
    get = lambda key: np.array([np.nan if r[key] is None else r[key] for r in per_class], dtype=np.float64)  # noqa: E731
    recall, precision, acc, agree = get("recall"), get("precision"), get("student_acc"), get("agreement")
    reference = get("reference_recall")
    fig, (left, right) = _subplots(1, 2, figsize=(min(20.0, max(10.0, 5 + 0.45 * k)), 4.0),
                                   gridspec_kw={"width_ratios": [1, 1.4]})
    error = (1 - acc) * 100
    dots = left.scatter(recall, error, c=precision, cmap="viridis", vmin=0, vmax=1, s=45, edgecolors="black",
                        linewidths=0.5, zorder=3)
    for c in range(k):
        if np.isfinite(recall[c]) and np.isfinite(error[c]):
            left.annotate(class_names[c], (recall[c], error[c]), textcoords="offset points", xytext=(5, 3), fontsize=8)
    if np.isfinite(reference).any():
        left.axvline(float(np.nanmean(reference)), color="grey", ls="--", lw=1,
                     label="recall of as many real train images")
        left.legend(fontsize=7, loc="upper right")
    left.set(xlabel="recall: share of the class's test images the samples cover", ylabel="student test error (%)",
             title="coverage against error, per class", xlim=(-0.03, 1.03))
    left.grid(alpha=0.3)
    fig.colorbar(dots, ax=left, label="precision")
    width = 0.2
    x = np.arange(k)
    for i, (label, values) in enumerate((("precision", precision), ("recall", recall), ("student accuracy", acc),
                                         ("agreement with teacher", agree))):
        right.bar(x + (i - 1.5) * width, np.nan_to_num(values), width=width, label=label)
    if k <= 40:
        right.set_xticks(x, class_names, rotation=90 if k > 10 else 0)
    right.scatter(x - 0.5 * width, reference, marker="_", s=120, color="black", zorder=3,
                  label="recall of real train (reference)")
    right.set(ylim=(0, 1.05), title="per class")
    right.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path)


class _Tiles:
    """Image tiles on one axes in a grid of cells (a tile plus a caption band above it): one
    axes instead of one per image keeps a 16 × 5 grid at a fraction of a second to draw."""

    def __init__(self, rows: int, cols: int, tile: int, extra_width: float = 0.0, inches_per_cell: float = 1.3):
        self.tile, self.cell_w, self.cell_h = tile, tile * 1.2, tile * 1.65
        self.width = cols * self.cell_w + extra_width * self.cell_w
        height = rows * self.cell_h + 0.4 * tile
        self.fig = Figure(figsize=(inches_per_cell * self.width / self.cell_w, inches_per_cell * height / self.cell_w))
        self.ax = self.fig.add_axes((0, 0, 1, 1))
        self.ax.set(xlim=(0, self.width), ylim=(height, 0))
        self.ax.axis("off")

    def origin(self, row: int, col: float) -> tuple[float, float]:
        return col * self.cell_w + 0.1 * self.tile, row * self.cell_h + 0.4 * self.tile + 0.55 * self.tile

    def image(self, row: int, col: float, rgb: np.ndarray, caption: str = "", colour: str = "black",
              frame: str | None = None) -> None:
        x, y = self.origin(row, col)
        self.ax.imshow(rgb, extent=(x, x + self.tile, y + self.tile, y), interpolation="nearest")
        if caption:
            self.ax.text(x + self.tile / 2, y - 0.06 * self.tile, caption, ha="center", va="bottom", fontsize=7.5,
                         color=colour)
        if frame is not None:
            self.ax.add_patch(Rectangle((x, y), self.tile, self.tile, fill=False, edgecolor=frame, linewidth=2.5))

    def text(self, row: int, col: float, text: str, colour: str = "black", size: float = 8.5) -> None:
        x, y = self.origin(row, col)
        self.ax.text(x, y + self.tile / 2, text, ha="left", va="center", fontsize=size, color=colour)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        self.fig.savefig(path, dpi=DPI)
        return path


def _rgb(img: np.ndarray) -> np.ndarray:
    """C×H×W in [0, 1] → H×W×3."""
    img = np.clip(np.asarray(img, dtype=np.float64), 0, 1)
    return np.repeat(img[0][..., None], 3, axis=2) if img.shape[0] == 1 else np.transpose(img[:3], (1, 2, 0))


def _heat_rgb(saliency_map: np.ndarray) -> np.ndarray:
    """An H×W map scaled to its own maximum, in the inferno colour map."""
    m = np.asarray(saliency_map, dtype=np.float64)
    return colormaps["inferno"](m / max(float(m.max()), 1e-12))[..., :3]


def atlas(rows: list[dict[str, Any]], kind: str, nearest: int, path: str | Path) -> Path:
    """One row per disagreement: the test image framed by the verdict — green: covered, not fit;
    red: never covered — then its nearest samples of the teacher's class (d = distance in the
    teacher's feature space), then the verdict with the samples' typical k-NN radius r and the
    discriminator's score percentile."""
    if not rows:
        fig, ax = _subplots(figsize=(6, 1.2))
        ax.axis("off")
        ax.text(0.5, 0.5, "teacher and student agree on every test image", ha="center", va="center")
        return _save(fig, path)
    tile = rows[0]["image"].shape[-1]
    grid = _Tiles(len(rows), 1 + nearest, tile, extra_width=2.2, inches_per_cell=1.4)
    for r, row in enumerate(rows):
        colour = COVERED if row["covered"] else NOT_COVERED
        grid.image(r, 0, _rgb(row["image"]), row["caption"], frame=colour)
        for c, (sample, d) in enumerate(zip(row["nearest"], row["distances"], strict=True)):
            grid.image(r, 1 + c, _rgb(sample), f"d={d:.2f}")
        if row["nearest"]:
            detail = f"r={row['typical_radius']:.2f}, nearest at {row['distances'][0] / row['typical_radius']:.1f} r"
        else:
            detail = f"no {kind} sample the\nteacher calls {row['teacher_class']}"
        if row["d_percentile"] is not None and np.isfinite(row["d_percentile"]):
            detail += f"\nD score: {row['d_percentile'] * 100:.0f}th percentile"
        grid.text(r, 1 + nearest, f"{'covered, not fit' if row['covered'] else 'never covered'}\n{detail}", colour)
    return grid.save(path)


def saliency(rows_by_set: dict[str, list[dict[str, Any]]], path: str | Path) -> Path:
    """Per image set (test images, samples), one example per class: image | teacher's map |
    student's map (each map scaled to its own maximum), the student's titled with the cosine
    similarity of the two maps."""
    sets = [name for name, rows in rows_by_set.items() if rows]
    n_rows = max((len(rows_by_set[name]) for name in sets), default=1)
    tile = next(iter(rows_by_set[sets[0]]))["image"].shape[-1] if sets else 28
    grid = _Tiles(n_rows, 3.4 * len(sets) + 0.5, tile, inches_per_cell=1.1)
    for s, name in enumerate(sets):
        left = 0.5 + 3.4 * s
        for r, row in enumerate(rows_by_set[name]):
            grid.text(r, left - 0.45, row["label"], size=9)
            grid.image(r, left, _rgb(row["image"]), name if r == 0 else "")
            grid.image(r, left + 1, _heat_rgb(row["teacher"]), "teacher" if r == 0 else "")
            grid.image(r, left + 2, _heat_rgb(row["student"]),
                       f"student, sim {row['similarity']:.2f}" if r == 0 else f"sim {row['similarity']:.2f}")
    return grid.save(path)


def knowledge_moved(moved: Any, class_names: Sequence[str], path: str | Path) -> Path | None:
    """Agreement with the teacher over the student's training (real validation images vs the
    samples it learned from), per class as a heat map, and the cGAN's FID over its training with
    the checkpoint distill used; None when nothing was recorded."""
    has_curves = len(moved.steps) and (np.isfinite(moved.val_agreement).any()
                                       or np.isfinite(moved.generated_agreement).any())
    has_classes = moved.per_class.size and np.isfinite(moved.per_class).any()
    has_gan = len(moved.gan_steps) > 0
    panels = [p for p, present in (("curves", has_curves), ("classes", has_classes), ("gan", has_gan)) if present]
    if not panels:
        return None
    fig, axes = _subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        if panel == "curves":
            for curve, label in ((moved.val_agreement, "real validation images"),
                                 (moved.generated_agreement, moved.generated_label)):
                if np.isfinite(curve).any():
                    ax.plot(moved.steps, curve * 100, marker=".", label=label)
            if moved.selected_step is not None:
                ax.axvline(moved.selected_step, color="grey", ls="--", lw=1, label="selected student")
            ax.set(xlabel="distill step", ylabel="agreement with teacher (%)", title="teacher–student agreement")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        elif panel == "classes":
            image = ax.imshow(moved.per_class.T * 100, aspect="auto", cmap="viridis", interpolation="nearest",
                              extent=(moved.steps[0], moved.steps[-1], len(class_names) - 0.5, -0.5))
            if len(class_names) <= 30:
                ax.set_yticks(range(len(class_names)), class_names, fontsize=7)
            ax.set(xlabel="distill step", ylabel="teacher class", title="agreement per class (real val, %)")
            fig.colorbar(image, ax=ax)
        else:
            ax.plot(moved.gan_steps, moved.gan_fid, marker=".", color="#8172B2")
            if moved.gan_used_step is not None:
                ax.axvline(moved.gan_used_step, color="grey", ls="--", lw=1)
                ax.scatter([moved.gan_used_step], [moved.gan_used_fid], color="red", zorder=3,
                           label=f"used: step {int(moved.gan_used_step)}, FID {moved.gan_used_fid:.3g}")
                ax.legend(fontsize=7)
            ax.set(xlabel="GAN step", ylabel="teacher-feature FID (val)", title="the generator over its training")
            ax.grid(alpha=0.3)
    return _save(fig, path)
