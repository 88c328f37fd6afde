"""Figures of the report's "Explain" sections (drawn like `plots`: matplotlib's object API, no
pyplot state; each function writes one PNG and returns its path)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gandistill.evaluation.plots import _image, _save, _subplots

COVERED, NOT_COVERED = "#2a7f3f", "#c0392b"


def coverage_vs_error(class_names: Sequence[str], per_class: list[dict[str, Any]], path: str | Path) -> Path:
    """Left: per class, the samples' recall of the real test images against the student's test
    error (a class far right and low is covered and learned). Right: precision, recall, student
    accuracy and teacher–student agreement per class."""
    k = len(class_names)
    get = lambda key: np.array([np.nan if r[key] is None else r[key] for r in per_class], dtype=np.float64)  # noqa: E731
    recall, precision, acc, agree = get("recall"), get("precision"), get("student_acc"), get("agreement")
    fig, (left, right) = _subplots(1, 2, figsize=(min(20.0, max(10.0, 5 + 0.45 * k)), 4.0),
                                   gridspec_kw={"width_ratios": [1, 1.4]})
    error = (1 - acc) * 100
    dots = left.scatter(recall, error, c=precision, cmap="viridis", vmin=0, vmax=1, s=45, edgecolors="black",
                        linewidths=0.5, zorder=3)
    for c in range(k):
        if np.isfinite(recall[c]) and np.isfinite(error[c]):
            left.annotate(class_names[c], (recall[c], error[c]), textcoords="offset points", xytext=(5, 3), fontsize=8)
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
    right.set(ylim=(0, 1.05), title="per class")
    right.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def atlas(rows: list[dict[str, Any]], kind: str, nearest: int, path: str | Path) -> Path:
    """One row per disagreement: the test image, then its nearest samples of the teacher's class
    (d = distance in the teacher's feature space; r = the samples' typical k-NN radius), the
    verdict in green (covered, not fit) or red (never covered)."""
    if not rows:
        fig, ax = _subplots(figsize=(6, 1.2))
        ax.axis("off")
        ax.text(0.5, 0.5, "teacher and student agree on every test image", ha="center", va="center")
        return _save(fig, path)
    cols = 1 + nearest
    fig, axes = _subplots(len(rows), cols + 1, figsize=(1.35 * cols + 2.8, 1.45 * len(rows) + 0.6), squeeze=False,
                          gridspec_kw={"width_ratios": [1] * cols + [2.0]})
    for r, row in enumerate(rows):
        colour = COVERED if row["covered"] else NOT_COVERED
        _image(axes[r][0], row["image"])
        axes[r][0].set_title(row["caption"], fontsize=7)
        for spine in axes[r][0].spines.values():
            spine.set(edgecolor=colour, linewidth=2.5)
        for c in range(1, cols):
            ax = axes[r][c]
            ax.axis("off")
            if c - 1 < len(row["nearest"]):
                ax.axis("on")
                _image(ax, row["nearest"][c - 1])
                ax.set_title(f"d={row['distances'][c - 1]:.2f}", fontsize=7)
        text = axes[r][cols]
        text.axis("off")
        verdict = "covered, not fit" if row["covered"] else "never covered"
        detail = f"r={row['typical_radius']:.2f}" if row["nearest"] else \
            f"no {kind} sample the\nteacher calls {row['teacher_class']}"
        if row["d_percentile"] is not None and np.isfinite(row["d_percentile"]):
            detail += f"\nD score: {row['d_percentile'] * 100:.0f}th pct"
        text.text(0.02, 0.5, f"{verdict}\n{detail}", color=colour, fontsize=8, va="center", ha="left",
                  transform=text.transAxes)
    fig.suptitle(f"disagreements (test image, frame = verdict) and the nearest {kind} samples of the teacher's "
                 "class", fontsize=9)
    return _save(fig, path)


def _heat(ax: Any, m: np.ndarray) -> None:
    ax.imshow(m / max(float(m.max()), 1e-12), cmap="inferno", vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])


def saliency(rows_by_set: dict[str, list[dict[str, Any]]], path: str | Path) -> Path:
    """Per image set (test images, samples), one example per class: image | teacher's map |
    student's map (each map scaled to its own maximum), titled with their cosine similarity."""
    sets = [name for name, rows in rows_by_set.items() if rows]
    n_rows = max((len(rows_by_set[name]) for name in sets), default=1)
    fig, axes = _subplots(n_rows, 3 * max(len(sets), 1), figsize=(3.3 * max(len(sets), 1) + 0.4, 1.2 * n_rows + 0.7),
                          squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for s, name in enumerate(sets):
        for r, row in enumerate(rows_by_set[name]):
            a_img, a_t, a_s = axes[r][3 * s], axes[r][3 * s + 1], axes[r][3 * s + 2]
            for ax in (a_img, a_t, a_s):
                ax.axis("on")
            _image(a_img, row["image"])
            _heat(a_t, row["teacher"])
            _heat(a_s, row["student"])
            a_img.set_ylabel(row["label"], fontsize=8, rotation=0, labelpad=12)
            a_s.set_title(f"sim {row['similarity']:.2f}", fontsize=7)
            if r == 0:
                a_img.set_title(name, fontsize=8)
                a_t.set_title("teacher", fontsize=8)
                a_s.set_title(f"student\nsim {row['similarity']:.2f}", fontsize=7)
    fig.suptitle("where they look: SmoothGrad maps for the teacher's class", fontsize=9)
    return _save(fig, path)


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
