"""Memorisation audit of generated samples: are they copies of training images?

A GAN trained on the train split could emit near-copies of its images — a privacy leak for
anyone who ships the generator or its samples. Following the nearest-neighbour audits of
Webster et al. ("Detecting Overfitting of Deep Generative Networks via Latent Recovery",
CVPR 2019) and the "distance to closest record" test of synthetic-data work (e.g. Yale et
al. 2020), each generated sample's distance to its nearest *train* image is compared with
the same distance for *held-out real* images (test split), which the train set has never
"copied" by construction:

    d(x) = min_{t ∈ train} ‖φ(x) − φ(t)‖₂,   threshold τ = 1st percentile of d over real test

and the audit reports  f = P_{x∼G}[d(x) < τ].  A generator that does not memorise yields
f ≈ 1 % (like real held-out data); f ≫ 1 % flags copying. φ is the identity (pixels) and the
teacher's penultimate features (semantic near-duplicates that differ in a few pixels).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def nearest_distances(queries: torch.Tensor, reference: torch.Tensor,
                      chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """(distance, index) of each query row's nearest reference row, Euclidean, chunked so
    the full query×reference matrix never exists at once."""
    q = queries.flatten(1).float()
    r = reference.flatten(1).float()
    best_d = torch.full((len(q),), float("inf"))
    best_i = torch.zeros(len(q), dtype=torch.long)
    r_sq = (r * r).sum(1)
    q_sq = (q * q).sum(1, keepdim=True)
    for start in range(0, len(r), chunk):
        block = r[start : start + chunk]
        # ‖q−r‖² = ‖q‖² + ‖r‖² − 2 q·r: one matmul instead of a broadcast difference
        d2 = (q_sq + r_sq[start : start + chunk] - 2 * q @ block.T).clamp_min_(0)
        d, i = d2.min(1)
        better = d < best_d
        best_d = torch.where(better, d, best_d)
        best_i = torch.where(better, i + start, best_i)
    return best_d.sqrt(), best_i


@dataclass
class SpaceAudit:
    generated: np.ndarray  # nearest-train distance of each generated sample
    real: np.ndarray  # nearest-train distance of each held-out real sample
    nearest_index: np.ndarray  # train index nearest to each generated sample
    threshold: float  # 1st percentile of `real`

    @property
    def fraction_below(self) -> float:
        return float((self.generated < self.threshold).mean()) if len(self.generated) else float("nan")

    def summary(self, prefix: str) -> dict[str, float]:
        return {
            f"{prefix}_gen_median": float(np.median(self.generated)),
            f"{prefix}_real_median": float(np.median(self.real)),
            f"{prefix}_gen_min": float(self.generated.min()),
            f"{prefix}_threshold_p1": self.threshold,
            f"{prefix}_frac_below_p1": self.fraction_below,
        }


def audit_space(generated: torch.Tensor, real_heldout: torch.Tensor, train: torch.Tensor,
                percentile: float = 1.0) -> SpaceAudit:
    """Nearest-train distances of generated and held-out real points in one feature space."""
    d_gen, i_gen = nearest_distances(generated, train)
    d_real, _ = nearest_distances(real_heldout, train)
    threshold = float(np.percentile(d_real.numpy(), percentile))
    return SpaceAudit(d_gen.numpy(), d_real.numpy(), i_gen.numpy(), threshold)
