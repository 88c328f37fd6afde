"""GAN sample quality with the teacher as feature extractor: teacher-IS, teacher-FID against
real test images (read against the real-vs-real FID floor of val vs test), class coverage and
conditioning agreement — plus the generated samples both this block and the privacy audit use."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from gandistill.data.dataset import as_float, load_split
from gandistill.evaluation import plots
from gandistill.evaluation.gan_quality import frechet_distance, sample_balanced, sample_quality, teacher_features
from gandistill.evaluation.report import Figure, Section, Table, fmt
from gandistill.stages.common import load_generator
from gandistill.stages.evaluate.inputs import Block, Inputs

GAN_SEED_OFFSET = 7919  # evaluation samples differ from any the training stages drew


@dataclass
class Generated:
    images: torch.Tensor  # float, in the data's pixel range
    labels: torch.Tensor  # the conditioning class of each image


def sample(ev: Inputs) -> Generated:
    """Class-balanced samples of the generator, enough for the quality block and the audit."""
    assert ev.generator_dir is not None
    ep = ev.params.evaluate
    images, labels = sample_balanced(load_generator(ev.generator_dir), max(ep.gan_samples, ep.privacy_samples),
                                     ev.meta.num_classes, seed=ev.params.seed + GAN_SEED_OFFSET)
    return Generated(images, labels)


def measure(ev: Inputs, generated: Generated) -> Block:
    n = ev.params.evaluate.gan_samples
    real_test = as_float(ev.test_x[:n].clone())
    quality = sample_quality(generated.images[:n], generated.labels[:n], ev.teacher, real_test,
                             real_labels=ev.test_y[:n].cpu())
    metrics = {f"gan_{key}": value for key, value in quality.items()}
    metrics["gan_conditioning_agreement"] = metrics.pop("gan_agreement")
    val = load_split(ev.data_dir, "val")
    if len(val):
        # FID has a small-sample bias: read gan_fid against two *real* samples of similar size
        val_feats, _ = teacher_features(ev.teacher, as_float(torch.from_numpy(val.x[:n])))
        test_feats, _ = teacher_features(ev.teacher, real_test)
        metrics["fid_real_val_vs_test"] = frechet_distance(val_feats.numpy(), test_feats.numpy())
    return Block(metrics=metrics)


def report(ev: Inputs, block: Block, generated: Generated) -> Block:
    names = list(ev.meta.class_names)
    shown = min(len(generated.labels), ev.meta.num_classes * 6)
    preds = ev.teacher(generated.images[:shown]).argmax(1)
    rows: dict[str, list[tuple[np.ndarray, str, bool]]] = {n: [] for n in names}
    for i in range(shown):
        c, pred = int(generated.labels[i]), int(preds[i])
        rows[names[c]].append((generated.images[i].numpy(), f"T:{names[pred]}", pred == c))
    block.figures = {"samples_generated": plots.sample_grid(
        rows, ev.out_dir / "samples_generated.png",
        "generated images per conditioning class with the teacher's label (red = disagrees)")}
    m = block.metrics
    block.sections = [Section("GAN sample quality (teacher as feature extractor)", [
        "Inception Score and FID use the trained teacher in place of an Inception network (which "
        "has never seen this domain): IS from its softmax, FID from its penultimate features. "
        "Read FID against the real-vs-real floor (val vs test, same sample size). Precision and recall "
        "(Kynkäänniemi et al. 2019) in the same features, per class: a class with low recall has parts "
        "the generator never produced, which a student taught only on its samples has never seen."],
        [Table(["metric", "value"], [
            ["teacher-IS (1…K)", fmt(m["gan_inception_score"])],
            ["teacher-FID generated vs real test", fmt(m["gan_fid"])],
            ["teacher-FID real val vs real test (floor)", fmt(m.get("fid_real_val_vs_test"))],
            ["precision: generated samples inside the real manifold (mean over classes)", fmt(m["gan_precision"])],
            ["recall: real test images inside the generated manifold (mean over classes)", fmt(m["gan_recall"])],
            ["recall of the worst-covered class", fmt(m["gan_recall_min"])],
            ["within-class diversity, generated / real pixel spread", fmt(m["gan_diversity"])],
            ["class coverage (normalised entropy)", fmt(m["gan_coverage"])],
            ["conditioning agreement P[teacher(G(z,y)) = y]", fmt(m["gan_conditioning_agreement"], "%")],
            ["mean teacher confidence", fmt(m["gan_teacher_confidence"], "%")],
        ])], [Figure(block.figures["samples_generated"], "generated samples")])]
    return block


@torch.no_grad()
def block(ev: Inputs, generated: Generated) -> Block:
    return report(ev, measure(ev, generated), generated)
