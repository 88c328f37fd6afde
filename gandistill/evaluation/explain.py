"""What the student learned from its teacher, where it did not, and why — the pure analyses
behind the report's "Explain" sections (the evaluate stage's `explain` block draws and logs them).

- Disagreements, grouped by (teacher class → student class), each located in the teacher's
  feature space against the samples the student learned from: inside the k-NN manifold of the
  teacher's class (covered, but the student did not fit it) or outside it (never covered) —
  the manifold test of `gandistill.evaluation.coverage`.
- Where they look: SmoothGrad input-gradient maps of teacher and student for the teacher's
  class, compared per image by cosine similarity, against a floor of mismatched pairs.
- How the knowledge moved: per-class teacher–student agreement over the student's training.

Inputs are tensors already computed by the caller; nothing here reads files or models' folders.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats
from torch import nn

from gandistill.evaluation.coverage import K_NEAREST, covered, knn_radii

# SmoothGrad (Smilkov et al. 2017): noise σ of 10–20 % of the input range sharpens the maps; a
# handful of samples already removes most of the single-gradient speckle.
SMOOTHGRAD_SAMPLES = 8
SMOOTHGRAD_SIGMA = 0.15


# -- disagreements ------------------------------------------------------------------------------

Groups = list[tuple[tuple[int, int], list[int]]]


def disagreement_groups(teacher_pred: torch.Tensor, student_pred: torch.Tensor) -> Groups:
    """Indices where the two disagree, grouped by (teacher class, student class): the largest
    group first (ties by class pair), indices ascending within a group."""
    where = torch.nonzero(teacher_pred != student_pred).flatten().tolist()
    pairs = Counter((int(teacher_pred[i]), int(student_pred[i])) for i in where)
    order = sorted(pairs, key=lambda pair: (-pairs[pair], pair))
    return [(pair, [i for i in where if (int(teacher_pred[i]), int(student_pred[i])) == pair]) for pair in order]


@dataclass
class ClassSupport:
    """The samples of each class the student learned from, in feature space, with the radius of
    each point's k-NN ball (the manifold estimate of Kynkäänniemi et al. 2019)."""

    feats: list[torch.Tensor]  # per class: n_c × D
    radii: list[torch.Tensor]  # per class: n_c
    index: list[torch.Tensor]  # per class: positions of those samples in the caller's array

    @classmethod
    def build(cls, feats: torch.Tensor, labels: torch.Tensor, num_classes: int, k: int = K_NEAREST) -> ClassSupport:
        index = [torch.nonzero(labels == c).flatten() for c in range(num_classes)]
        members = [feats[i] for i in index]
        return cls(members, [knn_radii(m, k) for m in members], index)

    def nearest(self, query: torch.Tensor, cls_: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(distances, caller indices) of the n nearest samples of class `cls_` to each query
        (rows N×min(n, n_c); empty when the class has no sample)."""
        members = self.feats[cls_]
        if len(members) == 0 or len(query) == 0:
            return np.zeros((len(query), 0)), np.zeros((len(query), 0), dtype=np.int64)
        d = torch.cdist(query.double(), members.double())
        dist, pos = d.topk(min(n, len(members)), dim=1, largest=False)
        return dist.float().numpy(), self.index[cls_][pos].numpy()

    def nearest_distance(self, query: torch.Tensor, classes: torch.Tensor) -> np.ndarray:
        """For each query row: the distance to the nearest sample of its class (NaN: no sample)."""
        out = np.full(len(query), np.nan)
        for c in classes.unique().tolist():
            rows = torch.nonzero(classes == c).flatten()
            dist, _ = self.nearest(query[rows], c, 1)
            if dist.shape[1]:
                out[rows.numpy()] = dist[:, 0]
        return out

    def covers(self, query: torch.Tensor, classes: torch.Tensor) -> np.ndarray:
        """For each query row: inside the k-NN manifold of the samples of its class?"""
        out = np.zeros(len(query), dtype=bool)
        for c in classes.unique().tolist():
            rows = torch.nonzero(classes == c).flatten()
            out[rows.numpy()] = covered(query[rows], self.feats[c], self.radii[c]).numpy()
        return out

    def typical_radius(self, cls_: int) -> float:
        """Median k-NN radius of the class's samples: the scale a distance is read against."""
        radii = self.radii[cls_]
        radii = radii[torch.isfinite(radii)]
        return float(radii.median()) if len(radii) else float("nan")


def percentile_within(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Share of `reference` strictly below each score (0 = lowest of all, 1 = highest)."""
    reference = np.sort(np.asarray(reference, dtype=np.float64))
    if len(reference) == 0:
        return np.full(len(scores), np.nan)
    return np.searchsorted(reference, np.asarray(scores, dtype=np.float64), side="left") / len(reference)


def spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, float, int]:
    """Spearman's rank correlation ρ and its two-sided p-value over the pairs where both are
    finite, and how many pairs that was; (NaN, NaN, n) when fewer than 3 pairs or either side
    is constant (no ranking to correlate)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    n = int(ok.sum())
    if n < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return float("nan"), float("nan"), n
    result = stats.spearmanr(x[ok], y[ok])
    return float(result.statistic), float(result.pvalue), n


# -- where they look -----------------------------------------------------------------------------

def smoothgrad(model: nn.Module, images: torch.Tensor, classes: torch.Tensor, samples: int = SMOOTHGRAD_SAMPLES,
               sigma: float = SMOOTHGRAD_SIGMA, seed: int = 0, batch_size: int = 256) -> torch.Tensor:
    """Smilkov et al., "SmoothGrad: removing noise by adding noise", 2017, on the input gradient
    of Simonyan et al. 2014 ("Deep Inside Convolutional Networks"):

        M_c(x) = Σ_channels | (1/n) Σ_{i=1..n} ∂ log p_c(x + ε_i) / ∂x |,   ε_i ~ N(0, σ²)

    for float images x in [0, 1] (N×C×H×W) and a class c per image; returns N×H×W maps. The
    log-probability (not the logit) makes maps of differently scaled models comparable; the
    same noise is drawn for every model, so two models are compared on the same inputs."""
    maps = []
    gen = torch.Generator().manual_seed(seed)
    for start in range(0, len(images), batch_size):
        x, c = images[start : start + batch_size], classes[start : start + batch_size]
        total = torch.zeros_like(x)
        for _ in range(samples):
            noisy = (x + sigma * torch.randn(x.shape, generator=gen)).requires_grad_(True)
            with torch.enable_grad():
                log_p = torch.log_softmax(model(noisy).float(), dim=1).gather(1, c.view(-1, 1)).sum()
                (grad,) = torch.autograd.grad(log_p, noisy)
            total += grad
        maps.append((total / samples).abs().sum(dim=1))
    return torch.cat(maps) if maps else torch.empty(0)


def map_similarity(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Cosine similarity of two sets of non-negative maps, per row (1 = same evidence in the same
    proportions, 0 = disjoint; 0 also where a map is all zero)."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    norms = a.norm(dim=1) * b.norm(dim=1)
    return torch.where(norms > 0, (a * b).sum(1) / norms.clamp_min(1e-300), torch.zeros_like(norms)).numpy()


def other_member_of_class(labels: torch.Tensor) -> torch.Tensor:
    """For each position, another position with the same label (the next one of that class,
    cyclically; itself when it is its class's only member): the mismatched pairing that gives
    map similarity its floor — how alike two maps of the same class are on different images."""
    partner = torch.arange(len(labels))
    for c in labels.unique():
        members = torch.nonzero(labels == c).flatten()
        partner[members] = members.roll(-1)
    return partner


# -- how the knowledge moved ---------------------------------------------------------------------

def learning_order(steps: np.ndarray, per_class: np.ndarray, tolerance: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """From per-class agreement curves (E evaluations × K classes, NaN where unmeasured): each
    class's mean agreement over the evaluations (higher = learned earlier and held; the area
    under its curve) and the first step from which on it stays within `tolerance` of its final
    value — by then it had learned what it would (NaN when never measured)."""
    steps, per_class = np.asarray(steps, dtype=np.float64), np.asarray(per_class, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN class: its mean is NaN, as documented
        mean = np.nanmean(per_class, axis=0)
    first = np.full(per_class.shape[1], np.nan)
    for c in range(len(first)):
        curve = per_class[:, c]
        finite = np.isfinite(curve)
        if not finite.any():
            continue
        final = curve[finite][-1]
        far = np.nonzero(finite & (np.abs(curve - final) > tolerance))[0]
        settled = np.nonzero(finite)[0]
        settled = settled[settled > far[-1]] if len(far) else settled
        first[c] = steps[settled[0]]
    return mean, first


def agreement_by_class(student_pred: torch.Tensor, teacher_pred: torch.Tensor,
                       num_classes: int) -> tuple[float, list[float]]:
    """Top-1 agreement overall and per teacher class (NaN for a class the teacher never
    predicted): what distill logs at each evaluation so the report can say which classes the
    student learned first."""
    same = (student_pred == teacher_pred).float()
    per_class = [float(same[teacher_pred == c].mean()) if bool((teacher_pred == c).any()) else float("nan")
                 for c in range(num_classes)]
    return float(same.mean()) if len(same) else float("nan"), per_class
