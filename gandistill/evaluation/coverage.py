"""Does a set of generated samples cover the real data, class by class? Improved precision and
recall (Kynkäänniemi et al., "Improved Precision and Recall Metric for Assessing Generative
Models", NeurIPS 2019), in whatever feature space the caller passes (gandistill uses the
teacher's penultimate features: the space in which the student is taught).

The manifold of a feature set Φ is estimated as the union of balls around each of its
points, each ball reaching that point's k-th nearest neighbour in Φ:

    f(φ, Φ) = 1  if ∃ φ' ∈ Φ:  ‖φ − φ'‖₂ ≤ ‖φ' − NN_k(φ', Φ)‖₂,  else 0
    precision(Φ_r, Φ_g) = (1/|Φ_g|) Σ_{φ_g ∈ Φ_g} f(φ_g, Φ_r)   — generated samples that look real
    recall(Φ_r, Φ_g)    = (1/|Φ_r|) Σ_{φ_r ∈ Φ_r} f(φ_r, Φ_g)   — real samples the generator covers

k = 3 as in the paper. Low recall for a class means the generator never produced the part of
that class the real data holds — a student that learns only from generated samples has never
been taught it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

K_NEAREST = 3


def knn_radii(feats: torch.Tensor, k: int = K_NEAREST) -> torch.Tensor:
    """Distance from each point to its k-th nearest other point of the same set (NaN when the
    set has no other point; with fewer than k others, the farthest of them)."""
    n = len(feats)
    if n < 2:
        return torch.full((n,), float("nan"), device=feats.device)
    d = torch.cdist(feats.double(), feats.double())
    # the 0 on the diagonal is each point's own distance: the k-th other point is at index k
    return d.sort(dim=1).values[:, min(k, n - 1)].float()


def covered(queries: torch.Tensor, support: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """f(q, Φ) for each query: inside the ball of at least one support point (bool, len(queries))."""
    if len(support) == 0 or len(queries) == 0:
        return torch.zeros(len(queries), dtype=torch.bool, device=queries.device)
    d = torch.cdist(queries.double(), support.double())
    return (d <= radii.double()[None, :]).any(dim=1)


def precision_recall(real_feats: torch.Tensor, fake_feats: torch.Tensor,
                     k: int = K_NEAREST) -> tuple[float, float]:
    """(precision, recall) of generated features against real ones; NaN where a set is too
    small (fewer than 2 points) to estimate its manifold."""
    # on the CPU, named: a metric's inputs may be numpy arrays, and torch.as_tensor would put them on
    # whatever device is the default (a training loop may set one)
    real_feats, fake_feats = (torch.as_tensor(f, device="cpu").float() for f in (real_feats, fake_feats))
    if len(real_feats) < 2 or len(fake_feats) < 2:
        return float("nan"), float("nan")
    precision = covered(fake_feats, real_feats, knn_radii(real_feats, k)).float().mean()
    recall = covered(real_feats, fake_feats, knn_radii(fake_feats, k)).float().mean()
    return float(precision), float(recall)


@dataclass
class ClassCoverage:
    """Per-class precision and recall (NaN for a class with fewer than 2 samples on either side)
    and how many real / generated samples each was measured on."""

    precision: np.ndarray
    recall: np.ndarray
    real_count: np.ndarray
    fake_count: np.ndarray


def per_class_precision_recall(real_feats: torch.Tensor, real_labels: torch.Tensor, fake_feats: torch.Tensor,
                               fake_labels: torch.Tensor, num_classes: int, k: int = K_NEAREST) -> ClassCoverage:
    """precision_recall of class c's generated samples against class c's real ones, for every c.
    Labels are the caller's choice: the true class for real data; the conditioning class of a
    cGAN, or the teacher's label for samples without one."""
    real_labels, fake_labels = (torch.as_tensor(y, device="cpu") for y in (real_labels, fake_labels))
    real_feats, fake_feats = (torch.as_tensor(f, device="cpu") for f in (real_feats, fake_feats))
    precision, recall = np.full(num_classes, np.nan), np.full(num_classes, np.nan)
    for c in range(num_classes):
        precision[c], recall[c] = precision_recall(real_feats[real_labels == c], fake_feats[fake_labels == c], k)
    return ClassCoverage(precision, recall,
                         np.bincount(real_labels.numpy(), minlength=num_classes)[:num_classes],
                         np.bincount(fake_labels.numpy(), minlength=num_classes)[:num_classes])
