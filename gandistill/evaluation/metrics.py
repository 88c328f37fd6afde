"""Classification, fidelity and calibration metrics on logits (pure functions, no I/O).

Every function takes tensors already computed on the test split, so the evaluate stage runs
each model over the data once and derives everything from those logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats


def confusion_matrix(labels: torch.Tensor | np.ndarray, preds: torch.Tensor | np.ndarray,
                     num_classes: int) -> np.ndarray:
    """C[i, j] = number of samples of true class i predicted as class j (rows = truth)."""
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(preds, dtype=np.int64)
    counts = np.bincount(y * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    """Recall per class: C[i, i] / Σ_j C[i, j] (NaN for a class absent from the split)."""
    support = cm.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)


def agreement(logits_a: torch.Tensor, logits_b: torch.Tensor) -> float:
    """Top-1 fidelity (Stanton et al., "Does KD really work?", NeurIPS 2021):
    (1/n) Σ_i 1[argmax a_i = argmax b_i] — how often the student says what the teacher says."""
    return float((logits_a.argmax(1) == logits_b.argmax(1)).float().mean())


def mean_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float = 1.0) -> float:
    """Mean KL(p^T ‖ p^S) = (1/n) Σ_i Σ_k p^T_ik (log p^T_ik − log p^S_ik), in nats, with
    p = softmax(logits / τ). 0 iff the student reproduces the teacher's full distribution."""
    log_t = F.log_softmax(teacher_logits.double() / temperature, dim=1)
    log_s = F.log_softmax(student_logits.double() / temperature, dim=1)
    return float((log_t.exp() * (log_t - log_s)).sum(1).mean())


@dataclass
class Calibration:
    """Reliability-diagram data: per bin, the count, mean confidence and accuracy."""

    ece: float
    bin_edges: np.ndarray
    counts: np.ndarray
    confidence: np.ndarray  # NaN for empty bins
    accuracy: np.ndarray  # NaN for empty bins


def calibration(logits: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> Calibration:
    """Expected calibration error with equal-width confidence bins (Guo et al., "On
    Calibration of Modern Neural Networks", ICML 2017, eq. 3; 15 bins as in the paper):

        ECE = Σ_b (|B_b| / n) · |acc(B_b) − conf(B_b)|

    where B_b holds the samples whose top-1 confidence max_k p_ik falls in ((b−1)/M, b/M].
    """
    probs = F.softmax(logits.double(), dim=1)
    conf, pred = probs.max(1)
    correct = (pred == labels).double()
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin b covers (edges[b], edges[b+1]]; confidence is ≥ 1/K > 0, so nothing falls at 0.
    idx = np.clip(np.searchsorted(edges, conf.numpy(), side="left") - 1, 0, bins - 1)
    counts = np.bincount(idx, minlength=bins)
    conf_sum = np.bincount(idx, weights=conf.numpy(), minlength=bins)
    acc_sum = np.bincount(idx, weights=correct.numpy(), minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(counts > 0, conf_sum / np.maximum(counts, 1), np.nan)
        mean_acc = np.where(counts > 0, acc_sum / np.maximum(counts, 1), np.nan)
    n = max(1, len(labels))
    ece = float(np.abs(acc_sum - conf_sum).sum() / n)  # Σ |B_b|/n · |acc−conf| = Σ |Σ(correct−conf)| / n
    return Calibration(ece, edges, counts, mean_conf, mean_acc)


def wilson_interval(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927): the range of the accuracy
    that a test split of n samples can resolve. Better-behaved than p ± z·√(p(1−p)/n) near 0
    and 1, where classifiers live:

        (p + z²/2n ± z·√(p(1−p)/n + z²/4n²)) / (1 + z²/n),   z = Φ⁻¹(1 − (1 − confidence)/2)
    """
    if n == 0:
        return (float("nan"), float("nan"))
    ci = stats.binomtest(int(correct), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return (float(ci.low), float(ci.high))


def mcnemar_p(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """Exact two-sided McNemar test (McNemar 1947) on paired correctness: are two models'
    accuracies on the same test samples different? Uses only the discordant pairs
    n01 (a wrong, b right) and n10: under H0 each is Bin(n01 + n10, ½), so
    p = min(1, 2·P[Bin(n01+n10, ½) ≤ min(n01, n10)]) — scipy's exact binomial test."""
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    n01, n10 = int((~a & b).sum()), int((a & ~b).sum())
    if n01 + n10 == 0:
        return 1.0
    return float(stats.binomtest(min(n01, n10), n01 + n10, 0.5, alternative="two-sided").pvalue)
