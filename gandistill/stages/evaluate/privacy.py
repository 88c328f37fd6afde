"""Memorisation audit of the generator: nearest-train distances of generated samples against
those of held-out real test images, in pixel and teacher-feature space
(method: `gandistill.evaluation.privacy`)."""

from __future__ import annotations

import numpy as np
import torch

from gandistill.data.dataset import as_float, load_split
from gandistill.evaluation import plots
from gandistill.evaluation import privacy as audit
from gandistill.evaluation.gan_quality import teacher_features
from gandistill.evaluation.report import Figure, Section, Table, fmt
from gandistill.stages.evaluate.gan_quality import Generated
from gandistill.stages.evaluate.inputs import Block, Inputs

FLAG_FRACTION = 0.05  # above this share below the real 1st percentile, the report warns


def measure(ev: Inputs, generated: Generated) -> tuple[Block, dict[str, audit.SpaceAudit], dict[str, torch.Tensor]]:
    n = ev.params.evaluate.privacy_samples
    train = as_float(torch.from_numpy(load_split(ev.data_dir, "train").x))
    points = {"gen": generated.images[:n], "real": as_float(ev.test_x[:n].clone()), "train": train}
    pixel = audit.audit_space(points["gen"], points["real"], train)
    feats = {name: teacher_features(ev.teacher, x)[0] for name, x in points.items()}
    feature = audit.audit_space(feats["gen"], feats["real"], feats["train"])
    metrics = pixel.summary("privacy_pixel") | feature.summary("privacy_feature")
    return Block(metrics=metrics), {"pixel": pixel, "teacher features": feature}, points


def report(ev: Inputs, block: Block, audits: dict[str, audit.SpaceAudit], points: dict[str, torch.Tensor]) -> Block:
    pixel, feature = audits["pixel"], audits["teacher features"]
    closest = np.argsort(pixel.generated)[:8]
    block.figures = {
        "privacy_pairs": plots.privacy_pairs(
            points["gen"][closest].numpy(), points["train"][pixel.nearest_index[closest]].numpy(),
            pixel.generated[closest], pixel.threshold, ev.out_dir / "privacy_pairs.png"),
        "privacy_hist": plots.distance_histogram(
            {"pixel L2": (pixel.generated, pixel.real, pixel.threshold),
             "teacher-feature L2": (feature.generated, feature.real, feature.threshold)},
            ev.out_dir / "privacy_distances.png"),
    }
    flag = max(pixel.fraction_below, feature.fraction_below)
    verdict = ("no sign of memorisation: generated samples are no closer to training images than "
               "held-out real images are" if flag <= FLAG_FRACTION else
               f"WARNING: {flag * 100:.1f} % of generated samples are closer to a training image than "
               "99 % of held-out real images — inspect the closest pairs before sharing the generator")
    block.sections = [Section("Privacy audit (memorisation)", [
        "For each generated sample, the distance to its nearest training image; the same for held-out "
        "real test images. The threshold is the 1st percentile of the real distances, so a generator "
        "that does not copy puts about 1 % of its samples below it.", verdict],
        [Table(["space", "median gen→train", "median real→train", "min gen→train", "threshold (p1 real)",
                "generated below threshold"],
               [[space, fmt(np.median(a.generated)), fmt(np.median(a.real)), fmt(a.generated.min()),
                 fmt(a.threshold), fmt(a.fraction_below, "%")] for space, a in audits.items()])],
        [Figure(block.figures["privacy_hist"], "nearest-train distance distributions"),
         Figure(block.figures["privacy_pairs"], "closest generated/train pairs")])]
    return block


@torch.no_grad()
def block(ev: Inputs, generated: Generated) -> Block:
    return report(ev, *measure(ev, generated))
