"""GAN sample quality measured with the teacher as the feature extractor.

The Inception network of IS/FID has never seen the user's domain (and is not available
offline), so — as in the data-free KD literature — the trained teacher plays its part:
features are its penultimate activations, class probabilities its softmax.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gandistill.evaluation.coverage import per_class_precision_recall
from gandistill.losses import class_coverage
from gandistill.runtime import Runtime


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Heusel et al., "GANs Trained by a Two Time-Scale Update Rule…", NeurIPS 2017 (FID).

    FID = ‖μ_a − μ_b‖² + Tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^{1/2}). The trace of the matrix square
    root is computed as Σ √λ_i of the symmetric PSD matrix Σ_a^{1/2} Σ_b Σ_a^{1/2}
    (same eigenvalues as Σ_a Σ_b), which avoids scipy and complex round-off.
    """
    a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    vals, vecs = np.linalg.eigh(cov_a)
    sqrt_a = (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T
    middle = sqrt_a @ cov_b @ sqrt_a
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * tr_sqrt)


def inception_score(probs: torch.Tensor, splits: int = 1) -> float:
    """Salimans et al. 2016: IS = exp(E_x KL(p(y|x) ‖ p(y))), here with the teacher's p(y|x).
    Ranges from 1 (useless) to K (confident and class-balanced)."""
    scores = []
    for chunk in probs.chunk(splits):
        marginal = chunk.mean(0, keepdim=True)
        kl = (chunk * (torch.log(chunk + 1e-12) - torch.log(marginal + 1e-12))).sum(1).mean()
        scores.append(float(torch.exp(kl)))
    return float(np.mean(scores))


@torch.no_grad()
def teacher_features(teacher: nn.Module, images: torch.Tensor,
                     batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """(penultimate features, softmax probs) of float images in [0, 1]."""
    feats, probs = [], []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        if hasattr(teacher, "forward_features"):
            logits, fs = teacher.forward_features(chunk)
            feats.append(fs[-1].flatten(1).float().cpu())
        else:  # TorchScript import: logits are the best features we have
            logits = teacher(chunk)
            feats.append(logits.float().cpu())
        probs.append(F.softmax(logits.float(), dim=1).cpu())
    return torch.cat(feats), torch.cat(probs)


@torch.no_grad()
def sample_balanced(generator: nn.Module, num_samples: int, num_classes: int, seed: int = 1234,
                    device: torch.device | str = "cpu",
                    runtime: Runtime | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`num_samples` images with labels 0, 1, …, K−1, 0, … (class-balanced) from a fixed seed,
    so every check of the same generator sees the same samples. With a distributed runtime
    each rank generates its part and every rank gets all of them."""
    gen = torch.Generator(device=device).manual_seed(seed)
    labels = torch.arange(num_samples, device=device) % num_classes
    z = torch.randn(num_samples, generator.nz, generator=gen, device=device)
    if runtime is not None:
        z, mine = runtime.eval_slice(z), runtime.eval_slice(labels)
    else:
        mine = labels
    images = torch.cat([generator(z[i : i + 500], mine[i : i + 500]) for i in range(0, len(z), 500)])
    if runtime is not None:
        images = runtime.gather(images, total=num_samples)
    return images, labels


def within_class_spread(images: torch.Tensor, labels: torch.Tensor, per_class: int = 64) -> float:
    """Mean pairwise pixel L2 distance between images of the same class (averaged over classes)."""
    spreads = []
    for label in labels.unique():
        members = images[labels == label][:per_class].flatten(1).float()
        if len(members) > 1:
            d = torch.cdist(members, members)
            spreads.append(d.sum() / (len(members) * (len(members) - 1)))
    return float(torch.stack(spreads).mean()) if spreads else float("nan")


@torch.no_grad()
def sample_quality(images: torch.Tensor, labels: torch.Tensor, teacher: nn.Module,
                   real_images: torch.Tensor, real_labels: torch.Tensor | None = None) -> dict[str, float]:
    """Conditioning agreement P[argmax teacher(G(z, y)) = y], class coverage (normalised
    entropy of the mean teacher softmax), mean teacher confidence, teacher-IS and
    teacher-FID of generated float images against real float images; with real labels also
    `diversity` = within-class pixel spread of generated / real samples (≈1 healthy, →0 when
    G ignores z: intra-class mode collapse, which class coverage cannot see) and the per-class
    precision / recall of Kynkäänniemi et al. 2019 in the teacher's features (`precision`,
    `recall`: means over classes; `recall_min`: the worst-covered class)."""
    fake_feats, probs = teacher_features(teacher, images)
    real_feats, _ = teacher_features(teacher, real_images.to(images.device))
    extra = {}
    if real_labels is not None:
        extra["diversity"] = within_class_spread(images.cpu(), labels.cpu()) / max(
            within_class_spread(real_images.cpu(), real_labels.cpu()), 1e-8)
        coverage = per_class_precision_recall(real_feats, real_labels.cpu(), fake_feats, labels.cpu(),
                                              probs.shape[1])
        extra |= {"precision": float(np.nanmean(coverage.precision)), "recall": float(np.nanmean(coverage.recall)),
                  "recall_min": float(np.nanmin(coverage.recall)) if np.isfinite(coverage.recall).any()
                  else float("nan")}
    return extra | {
        "agreement": float((probs.argmax(1) == labels.cpu()).float().mean()),
        "coverage": float(class_coverage(probs)),
        "teacher_confidence": float(probs.max(1).values.mean()),
        "inception_score": inception_score(probs),
        "fid": frechet_distance(fake_feats.numpy(), real_feats.numpy()),
    }


@torch.no_grad()
def generator_report(generator: nn.Module, teacher: nn.Module, real_images: torch.Tensor, num_samples: int,
                     num_classes: int, seed: int = 1234, device: torch.device | str = "cpu",
                     real_labels: torch.Tensor | None = None, runtime: Runtime | None = None) -> dict[str, float]:
    """Conditioning agreement, class coverage, diversity, teacher-IS and teacher-FID for
    `num_samples` class-balanced samples drawn with a fixed seed (comparable across checks)."""
    images, labels = sample_balanced(generator, num_samples, num_classes, seed, device, runtime)
    return sample_quality(images, labels, teacher, real_images, real_labels)
