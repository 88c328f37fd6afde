"""Explain what the student learned: which classes it is weak on, whether what it learned from
covered them, whether teacher and student look at the same evidence, and how the knowledge
moved during training (analyses: `gandistill.evaluation.explain`, `.coverage`).

"What it learned from" depends on the method: the trained cGAN's samples (gan, gan_real), the
generator a data-free method trained with it (data_free, dafl), noise images (noise), or real
training images (kd, scratch, … and the target-domain methods, on the target domain). Every
sample's class is the teacher's label on it: that is what the student was taught. Distances live
in the teacher's penultimate feature space, where the student is taught.

Budgets (the default pair, MNIST LeNet-5 → LeNet-5-half): `evaluate.explain_per_class` samples
per class on each side of the coverage and atlas measures, `evaluate.saliency_per_class` images
per class for the maps — a few seconds of CPU together (docs: README, issue 27's note).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gandistill import methods
from gandistill.data.dataset import as_float, load_split, noise_images
from gandistill.evaluation import explain as X
from gandistill.evaluation import explain_plots
from gandistill.evaluation.coverage import ClassCoverage, per_class_precision_recall
from gandistill.evaluation.gan_quality import sample_balanced, teacher_features
from gandistill.evaluation.report import Figure, Section, Table, fmt
from gandistill.files import atomic_write_text
from gandistill.model_files import load_discriminator, load_generator
from gandistill.quantization import free_generator_dir, generated_batches
from gandistill.stages.evaluate.accuracy import AccuracyBlock
from gandistill.stages.evaluate.inputs import STUDENT, TEACHER, Block, Inputs

log = logging.getLogger(__name__)

EXPLAIN_SEED_OFFSET = 6007  # samples differ from those any other block or stage drew
NEAREST_SHOWN = 3  # generated neighbours beside each atlas image
ATLAS_GROUPS, ATLAS_PER_GROUP, ATLAS_ROWS = 8, 3, 16
SALIENCY_SHOWN = 10  # classes drawn in the map figure (all classes are measured)
MAX_SAMPLES = 20_000  # many classes: fewer per class rather than an image tensor of gigabytes
LOW_D_PERCENTILE = 0.1  # a D score below this share of the class's real test images reads "low"
FILE = "explain.json"


@dataclass
class LearnedFrom:
    """A sample of what the student learned from, as float images in [0, 1]."""

    images: torch.Tensor
    kind: str  # "generated" | "real" | "noise"
    description: str
    discriminator: nn.Module | None = None  # the cGAN's D, when the samples are the cGAN's


def per_class_budget(ev: Inputs) -> int:
    """Samples per class on each side of the coverage measures (evaluate.explain_per_class,
    fewer when the classes are many)."""
    return max(2, min(ev.params.evaluate.explain_per_class, MAX_SAMPLES // ev.meta.num_classes))


def learned_from(ev: Inputs) -> LearnedFrom:
    k, per_class = ev.meta.num_classes, per_class_budget(ev)
    n, seed = k * per_class, ev.params.seed + EXPLAIN_SEED_OFFSET
    record = methods.METHODS.get(ev.method)
    if ev.generator_dir is not None and (record is None or record.needs_trained_gan):
        images, _ = sample_balanced(load_generator(ev.generator_dir), n, k, seed=seed)
        return LearnedFrom(images, "generated", "samples of the trained cGAN", load_discriminator(ev.generator_dir))
    free = free_generator_dir(ev.folders[STUDENT])
    if free is not None:
        images = torch.cat([torch.from_numpy(b) for b in generated_batches(free, n, seed, batch=500)])
        return LearnedFrom(images, "generated", "samples of the generator distill trained with the student")
    if record is not None and not record.real_data_anywhere:
        return LearnedFrom(noise_images(ev.meta, n, generator=torch.Generator().manual_seed(seed)), "noise",
                           "noise images with the data's pixel mean and std (what the student trained on)")
    images, _ = training_images(ev)
    return LearnedFrom(images, "real", "training images (the student learned from real data)")


def training_images(ev: Inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `per_class_budget` training images of each class (float) and their labels."""
    train = load_split(ev.data_dir, "train")
    keep = np.sort(np.concatenate([np.nonzero(train.y == c)[0][:per_class_budget(ev)]
                                   for c in range(ev.meta.num_classes)]))
    return as_float(torch.from_numpy(train.x[keep])), torch.from_numpy(train.y[keep])


def _first_per_class(labels: torch.Tensor, num_classes: int, n: int) -> torch.Tensor:
    """Positions of the first n members of each class (a fixed, reproducible subset)."""
    return torch.cat([torch.nonzero(labels == c).flatten()[:n] for c in range(num_classes)]).sort().values


@torch.no_grad()
def _discriminator_scores(disc: nn.Module, images: torch.Tensor, classes: torch.Tensor, batch: int = 128) -> np.ndarray:
    """D(x, y) logits, scored in batches of real images as D saw them in training (its
    minibatch-stddev feature reads the batch)."""
    return torch.cat([disc(images[i : i + batch], classes[i : i + batch])[0].float()
                      for i in range(0, len(images), batch)]).numpy()


@dataclass
class Analysis:
    """Everything measured, before it is drawn."""

    source: LearnedFrom
    sample_labels: torch.Tensor
    support: X.ClassSupport
    coverage: ClassCoverage
    reference: ClassCoverage  # as many real training images, in place of the samples: what recall can reach
    teacher_pred: torch.Tensor
    student_pred: torch.Tensor
    covered_test: np.ndarray  # per test image: inside the manifold of its teacher class's samples
    nearest_dist: np.ndarray  # per test image: distance to the nearest sample of its teacher class
    d_percentile: np.ndarray | None  # per test image: D score's share of its class's agreeing images below it
    groups: X.Groups
    saliency: dict[str, dict[str, Any]]


def analyse(ev: Inputs, acc: AccuracyBlock) -> Analysis:
    k = ev.meta.num_classes
    source = learned_from(ev)
    sample_feats, sample_probs = teacher_features(ev.teacher, source.images)
    sample_labels = sample_probs.argmax(1)
    test_images = as_float(ev.test_x.clone())
    test_feats, _ = teacher_features(ev.teacher, test_images)
    teacher_pred, student_pred = acc.classes[TEACHER].logits.argmax(1), acc.classes[STUDENT].logits.argmax(1)

    real = _first_per_class(ev.test_y, k, per_class_budget(ev))
    coverage = per_class_precision_recall(test_feats[real], ev.test_y[real], sample_feats, sample_labels, k)
    train_images, train_labels = training_images(ev)
    reference = per_class_precision_recall(test_feats[real], ev.test_y[real],
                                           teacher_features(ev.teacher, train_images)[0], train_labels, k)
    support = X.ClassSupport.build(sample_feats, sample_labels, k)
    d_percentile = None
    if source.discriminator is not None:
        d_percentile = _d_percentiles(source.discriminator, test_images, teacher_pred, student_pred, k)
    return Analysis(source, sample_labels, support, coverage, reference, teacher_pred, student_pred,
                    support.covers(test_feats, teacher_pred), support.nearest_distance(test_feats, teacher_pred),
                    d_percentile, X.disagreement_groups(teacher_pred, student_pred),
                    _saliency(ev, source, test_images, sample_labels))


def _d_percentiles(disc: nn.Module, images: torch.Tensor, teacher_pred: torch.Tensor, student_pred: torch.Tensor,
                   k: int) -> np.ndarray:
    """Each test image's D(x, teacher class) as its percentile among the images of that teacher
    class on which both models agree (NaN where they agree on none)."""
    scores = _discriminator_scores(disc, images, teacher_pred)
    agree = (teacher_pred == student_pred).numpy()
    out = np.full(len(scores), np.nan)
    for c in range(k):
        rows = (teacher_pred == c).numpy()
        out[rows] = X.percentile_within(scores[rows], scores[rows & agree])
    return out


def _saliency(ev: Inputs, source: LearnedFrom, test_images: torch.Tensor,
              sample_labels: torch.Tensor) -> dict[str, dict[str, Any]]:
    """SmoothGrad maps of teacher and student for the teacher's class, on a fixed set of test
    images and of samples of what the student learned from; similarity per image and its floor."""
    k, n = ev.meta.num_classes, ev.params.evaluate.saliency_per_class
    out = {}
    for name, images, true in (("test", test_images, ev.test_y), ("samples", source.images, sample_labels)):
        chosen = _first_per_class(true, k, n)
        x = images[chosen]
        with torch.no_grad():
            target = ev.teacher(x).argmax(1)
        seed = ev.params.seed + EXPLAIN_SEED_OFFSET
        t_maps, s_maps = X.smoothgrad(ev.teacher, x, target, seed=seed), X.smoothgrad(ev.student, x, target, seed=seed)
        labels = true[chosen]
        out[name] = {"images": x, "labels": labels, "teacher_maps": t_maps, "student_maps": s_maps,
                     "similarity": X.map_similarity(t_maps, s_maps),
                     "floor": X.map_similarity(t_maps, s_maps[X.other_member_of_class(labels)])}
    return out


def _per_class_mean(values: np.ndarray, labels: torch.Tensor, k: int) -> np.ndarray:
    labels_np = labels.numpy()
    return np.array([values[labels_np == c].mean() if (labels_np == c).any() else np.nan for c in range(k)])


# -- how the knowledge moved -------------------------------------------------------------------

@dataclass
class Moved:
    steps: np.ndarray
    val_agreement: np.ndarray  # NaN where not recorded
    generated_agreement: np.ndarray
    generated_label: str
    per_class: np.ndarray  # E × K agreement on real validation images, per teacher class
    selected_step: float | None
    gan_steps: np.ndarray
    gan_fid: np.ndarray
    gan_used_step: float | None
    gan_used_fid: float | None


def knowledge_moved(ev: Inputs) -> Moved:
    """Agreement curves the distill stage recorded at each evaluation, and the cGAN's FID curve
    with the checkpoint distill used (train_gan keeps the step with the best FID)."""
    from gandistill.results import read_result

    k = ev.meta.num_classes
    history = [h for h in ev.student_result.get("history") or [] if "step" in h]
    series = lambda key: np.array([float(h.get(key, np.nan)) for h in history])  # noqa: E731
    generated_key = "generated_agreement" if any("generated_agreement" in h for h in history) else \
        "synthetic_agreement"
    per_class = np.array([h.get("val_agreement_per_class") or [np.nan] * k for h in history], dtype=np.float64)
    gan = read_result(ev.generator_dir) if ev.generator_dir is not None else {}
    gan_history = [h for h in gan.get("history") or [] if "fid" in h]
    best = ev.student_result.get("best_step")
    return Moved(series("step"), series("val_agreement"), series(generated_key),
                 "generated" if generated_key == "generated_agreement" else "generated (macro, growing bank)",
                 per_class.reshape(len(history), k), float(best) if best is not None else None,
                 np.array([float(h["step"]) for h in gan_history]), np.array([float(h["fid"]) for h in gan_history]),
                 float(gan["best_step"]) if gan.get("best_step") is not None else None,
                 float(gan["selected_fid"]) if gan.get("selected_fid") is not None else None)


# -- the block ---------------------------------------------------------------------------------

def _key(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in str(name))


def measure(ev: Inputs, acc: AccuracyBlock) -> tuple[Analysis, Moved, dict[str, float], dict[str, Any]]:
    a = analyse(ev, acc)
    moved = knowledge_moved(ev)
    k, names = ev.meta.num_classes, list(ev.meta.class_names)
    t, s = acc.classes[TEACHER], acc.classes[STUDENT]
    agree = (a.teacher_pred == a.student_pred).numpy()
    per_class_agreement = _per_class_mean(agree.astype(float), ev.test_y, k)
    error = 1 - s.per_class
    rho, p, n_rho = X.spearman(a.coverage.recall, error)
    rho_d, p_d, _ = X.spearman(a.coverage.recall, 1 - per_class_agreement)
    dis = ~agree
    sal = {name: (float(v["similarity"].mean()), float(v["floor"].mean())) for name, v in a.saliency.items()}
    metrics: dict[str, float] = {
        "explain_disagreements": float(dis.sum()),
        "explain_disagreements_covered_fraction": float(a.covered_test[dis].mean()) if dis.any() else float("nan"),
        "explain_agreements_covered_fraction": float(a.covered_test[agree].mean()) if agree.any() else float("nan"),
        "explain_disagreement_nearest_distance_median": float(np.nanmedian(a.nearest_dist[dis])) if dis.any()
        else float("nan"),
        "explain_agreement_nearest_distance_median": float(np.nanmedian(a.nearest_dist[agree])) if agree.any()
        else float("nan"),
        "explain_precision_mean": float(np.nanmean(a.coverage.precision)),
        "explain_recall_mean": float(np.nanmean(a.coverage.recall)),
        "explain_recall_reference_mean": float(np.nanmean(a.reference.recall)),
        "explain_recall_vs_error_spearman": rho, "explain_recall_vs_error_p": p,
        "explain_recall_vs_disagreement_spearman": rho_d, "explain_recall_vs_disagreement_p": p_d,
    }
    for name, (sim, floor) in sal.items():
        metrics |= {f"explain_saliency_similarity_{name}": sim, f"explain_saliency_floor_{name}": floor}
    if a.d_percentile is not None and dis.any():
        metrics["explain_disagreement_d_percentile_median"] = float(np.nanmedian(a.d_percentile[dis]))
    real_sal = a.saliency["test"]
    sal_per_class = _per_class_mean(real_sal["similarity"], real_sal["labels"], k)
    per_class_rows = []
    for c in range(k):
        row = {"class": names[c], "student_acc": float(s.per_class[c]), "teacher_acc": float(t.per_class[c]),
               "agreement": float(per_class_agreement[c]), "precision": float(a.coverage.precision[c]),
               "recall": float(a.coverage.recall[c]), "reference_recall": float(a.reference.recall[c]),
               "real_n": int(a.coverage.real_count[c]),
               "samples_n": int(a.coverage.fake_count[c]), "saliency_similarity": float(sal_per_class[c])}
        per_class_rows.append(row)
        for key in ("precision", "recall", "agreement", "saliency_similarity"):
            metrics[f"explain_{key}_class_{_key(names[c])}"] = row[key]
    if moved.per_class.size:
        mean, first = X.learning_order(moved.steps, moved.per_class)
        for c in range(k):
            per_class_rows[c] |= {"mean_val_agreement_over_training": float(mean[c]),
                                  "settled_step": float(first[c])}
    for key, curve in (("val", moved.val_agreement), ("generated", moved.generated_agreement)):
        if np.isfinite(curve).any():
            metrics[f"explain_final_{key}_agreement"] = float(curve[np.isfinite(curve)][-1])
    if moved.gan_used_fid is not None:
        metrics["explain_gan_fid_used"] = moved.gan_used_fid
    # MLflow gets finite numbers only: an undefined value (a class without samples, a constant
    # ranking) is left out here and shows as "n/a" in the report and null in explain.json.
    metrics = {key: value for key, value in metrics.items() if np.isfinite(value)}
    details = {
        "learned_from": {"kind": a.source.kind, "description": a.source.description,
                         "samples": len(a.source.images), "discriminator": a.source.discriminator is not None},
        "per_class": per_class_rows,
        "correlation": {"recall_vs_error": {"spearman": rho, "p": p, "classes": n_rho},
                        "recall_vs_disagreement": {"spearman": rho_d, "p": p_d}},
        "saliency": {name: {"similarity": v[0], "floor": v[1]} for name, v in sal.items()},
        "groups": [{"teacher": names[tc], "student": names[sc], "count": len(rows),
                    "covered_fraction": float(a.covered_test[rows].mean()),
                    "test_indices": rows} for (tc, sc), rows in a.groups],
        "disagreements": [_disagreement_row(a, i, ev, names) for _, rows in a.groups for i in rows],
    }
    return a, moved, metrics, details


def _disagreement_row(a: Analysis, i: int, ev: Inputs, names: list[str]) -> dict[str, Any]:
    return {"test_index": i, "true": names[int(ev.test_y[i])], "teacher": names[int(a.teacher_pred[i])],
            "student": names[int(a.student_pred[i])], "nearest_distance": float(a.nearest_dist[i]),
            "covered": bool(a.covered_test[i]),
            "d_percentile": None if a.d_percentile is None else float(a.d_percentile[i])}


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_to_none(v) for v in obj]
    return obj


def block(ev: Inputs, acc: AccuracyBlock) -> Block:
    started = time.perf_counter()
    a, moved, metrics, details = measure(ev, acc)
    names = list(ev.meta.class_names)
    figures = {
        "explain_coverage": explain_plots.coverage_vs_error(names, details["per_class"],
                                                            ev.out_dir / "explain_coverage.png"),
        "explain_atlas": explain_plots.atlas(_atlas_rows(ev, a, names), a.source.kind, NEAREST_SHOWN,
                                             ev.out_dir / "explain_atlas.png"),
        "explain_saliency": explain_plots.saliency(_saliency_rows(a, names), ev.out_dir / "explain_saliency.png"),
    }
    moved_figure = explain_plots.knowledge_moved(moved, names, ev.out_dir / "explain_moved.png")
    if moved_figure is not None:
        figures["explain_moved"] = moved_figure
    path = ev.out_dir / FILE
    atomic_write_text(path, json.dumps(_nan_to_none(details), indent=1) + "\n")
    sections = [_answers(ev, a, metrics, details), _coverage_section(ev, details, figures),
                _atlas_section(ev, a, details, figures), _saliency_section(ev, a, details, figures),
                _moved_section(moved, details, names, figures)]
    wall_s = time.perf_counter() - started
    log.info("[evaluate] explain: %d disagreements, %s samples of %s, %.1f s", metrics["explain_disagreements"],
             len(a.source.images), a.source.kind, wall_s)
    return Block(metrics=metrics | {"explain_wall_s": wall_s}, figures=figures, sections=sections,
                 files={"explain": path},
                 result={"explain": {"file": FILE, "learned_from": details["learned_from"], "wall_s": wall_s}})


# -- what the report says ----------------------------------------------------------------------

def _atlas_rows(ev: Inputs, a: Analysis, names: list[str]) -> list[dict[str, Any]]:
    rows = []
    for (tc, sc), members in a.groups[:ATLAS_GROUPS]:
        for i in members[:ATLAS_PER_GROUP]:
            feats, _ = teacher_features(ev.teacher, as_float(ev.test_x[i : i + 1].clone()))
            dist, idx = a.support.nearest(feats, tc, NEAREST_SHOWN)
            d_pct = None if a.d_percentile is None else float(a.d_percentile[i])
            rows.append({"image": as_float(ev.test_x[i].clone()).numpy(),
                         "caption": f"#{i} true {names[int(ev.test_y[i])]}\nT {names[tc]} → S {names[sc]}",
                         "nearest": [a.source.images[j].numpy() for j in idx[0]],
                         "distances": dist[0].tolist(), "covered": bool(a.covered_test[i]),
                         "teacher_class": names[tc],
                         "typical_radius": a.support.typical_radius(tc), "d_percentile": d_pct})
            if len(rows) >= ATLAS_ROWS:
                return rows
    return rows


def _saliency_rows(a: Analysis, names: list[str]) -> dict[str, list[dict[str, Any]]]:
    """One example per class (the first), up to SALIENCY_SHOWN classes, for each image set."""
    out = {}
    for name, v in a.saliency.items():
        rows, seen = [], set()
        for j in np.argsort(v["labels"].numpy(), kind="stable").tolist():
            label = int(v["labels"][j])
            if label in seen or len(seen) >= SALIENCY_SHOWN:
                continue
            seen.add(label)
            rows.append({"image": v["images"][j].numpy(), "teacher": v["teacher_maps"][j].numpy(),
                         "student": v["student_maps"][j].numpy(), "label": names[label],
                         "similarity": float(v["similarity"][j])})
        out[name] = rows
    return out


def _pct(v: float) -> str:
    return fmt(v, "%")


def _answers(ev: Inputs, a: Analysis, m: dict[str, float], details: dict[str, Any]) -> Section:
    """The three questions in plain words, each with the numbers it rests on."""
    rows = details["per_class"]
    k = len(rows)
    by_acc = sorted(range(k), key=lambda c: (np.nan_to_num(rows[c]["student_acc"], nan=2.0), c))
    measured = [c for c in range(k) if np.isfinite(rows[c]["recall"])]
    recall_rank = {c: r + 1 for r, c in enumerate(sorted(measured, key=lambda c: -rows[c]["recall"]))}

    def coverage_of(c: int) -> str:
        if c not in recall_rank:
            return f"no {a.source.kind} sample the teacher calls {rows[c]['class']}"
        return f"recall {fmt(rows[c]['recall'])}, rank {recall_rank[c]} of {len(measured)}"

    weak = ", ".join(f"{rows[c]['class']} ({_pct(rows[c]['student_acc'])}; {coverage_of(c)})" for c in by_acc[:3])
    reference = (f"Mean recall {fmt(m.get('explain_recall_mean'))} against "
                 f"{fmt(m.get('explain_recall_reference_mean'))} for as many real training images (the reference: "
                 "what recall can reach at this sample size).")
    corr = details["correlation"]["recall_vs_error"]
    corr_text = (f"Spearman ρ = {corr['spearman']:.2f} (p = {corr['p']:.2g}, {corr['classes']} classes)"
                 if np.isfinite(corr["spearman"]) else "undefined (recall or error is the same for every class)")
    dis, cov_d, cov_a = m.get("explain_disagreements", 0.0), m.get("explain_disagreements_covered_fraction"), \
        m.get("explain_agreements_covered_fraction")
    real_sim = details["saliency"]["test"]
    learned = a.source.description
    return Section("Explain: what the student learned, and why not the rest", [
        f"The student learned from {learned}. Every distance, precision and recall below is measured in the "
        "teacher's penultimate feature space, where the student is taught; a sample's class is the teacher's label "
        "on it.",
        f"Weakest classes (student test accuracy; the generator's recall of that class, rank 1 = best covered): "
        f"{weak}. {reference} Coverage against error across classes: {corr_text} — a negative ρ means the "
        "classes the samples cover least are the ones the student gets wrong most.",
        f"Teacher and student disagree on {int(dis)} test images: {fmt(cov_d, '%')} of them lie inside the manifold "
        f"of the samples of the teacher's class (covered, but not fit), against {fmt(cov_a, '%')} of the images they "
        "agree on. Far fewer covered disagreements than agreements means the errors sit where the samples never "
        "went: more or better samples of those regions would help; as many covered as agreements means the "
        "student saw such inputs and did not fit them (a capacity or training limit).",
        f"Where they look (SmoothGrad maps for the teacher's class, cosine similarity): {fmt(real_sim['similarity'])} "
        f"on real test images against {fmt(real_sim['floor'])} for the same maps paired with a different image of "
        "the same class — above that floor, the student reads the same evidence in the image, not only the same "
        "class-typical region."])


def _coverage_section(ev: Inputs, details: dict[str, Any], figures: dict[str, Path]) -> Section:
    rows = [[r["class"], _pct(r["student_acc"]), _pct(r["teacher_acc"]), _pct(r["agreement"]), fmt(r["precision"]),
             fmt(r["recall"]), fmt(r["reference_recall"]), fmt(r["saliency_similarity"]),
             f"{r['real_n']} / {r['samples_n']}"] for r in details["per_class"]]
    return Section("Explain: coverage against error, per class", [
        "Precision: the share of the samples of a class that fall inside the real test images' manifold of that "
        "class; recall: the share of real test images of the class that fall inside the samples' manifold "
        "(k-nearest-neighbour balls, k = 3; Kynkäänniemi et al. 2019). Both depend on how many points there are: "
        "read recall against the reference — the recall of as many real training images of the class, the most "
        "that samples this many can reach. Agreement: teacher and student give the same answer, on test images "
        "of the class."],
        [Table(["class", "student acc", "teacher acc", "agreement", "precision", "recall", "recall of real train "
                "(reference)", "map similarity", "real / samples"], rows)],
        [Figure(figures["explain_coverage"], "coverage (recall) against the student's error, per class")])


def _atlas_section(ev: Inputs, a: Analysis, details: dict[str, Any], figures: dict[str, Path]) -> Section:
    group_rows = [[f"{g['teacher']} → {g['student']}", str(g["count"]), _pct(g["covered_fraction"])]
                  for g in details["groups"][:12]]
    d_text = ("The discriminator's score is given as its percentile among the real test images of the teacher's "
              f"class that both models agree on: below {LOW_D_PERCENTILE:.0%} (low) it does not recognise the image "
              "as a typical real one of that class." if a.d_percentile is not None else
              "No discriminator comes with these samples (it is kept only for a trained cGAN), so no D score.")
    paragraphs = [
        "Real test images on which the student disagrees with the teacher, grouped by (teacher class → student "
        f"class), largest groups first. Beside each: its {NEAREST_SHOWN} nearest {a.source.kind} samples of the "
        "teacher's class in the teacher's feature space, with their distance (d) against the typical k-NN radius "
        "of those samples (r). Covered = inside the samples' manifold (Kynkäänniemi et al. 2019): the student was "
        "taught such inputs and did not fit them; never covered = outside it: nothing like it was in what the "
        "student learned from. " + d_text]
    if not details["groups"]:
        paragraphs.append("Teacher and student agree on every test image: there is nothing to show here.")
    return Section("Explain: disagreement atlas", paragraphs,
                   [Table(["teacher → student", "test images", "covered"], group_rows,
                          "the largest groups (all of them: explain.json)")] if group_rows else [],
                   [Figure(figures["explain_atlas"], "disagreement atlas: test image, nearest samples of the "
                                                     "teacher's class")])


def _saliency_section(ev: Inputs, a: Analysis, details: dict[str, Any], figures: dict[str, Path]) -> Section:
    shown = {"test": "real test images", "samples": f"{a.source.kind} samples it learned from"}
    rows = [[shown[name], fmt(v["similarity"]), fmt(v["floor"])] for name, v in details["saliency"].items()]
    return Section("Explain: where teacher and student look", [
        "SmoothGrad (Smilkov et al. 2017): the input gradient of the log-probability of the teacher's class, "
        "averaged over noisy copies of the image (σ = 0.15), channels summed in absolute value — the pixels "
        f"whose change moves that answer most. {ev.params.evaluate.saliency_per_class} fixed images per class "
        "(the first of each class in the test split and among the samples); similarity = cosine of the two "
        "models' maps of the same image; floor = the same with the student's map of another image of the "
        "class."],
        [Table(["images", "mean similarity", "floor (mismatched images)"], rows)],
        [Figure(figures["explain_saliency"], "input-gradient maps of teacher and student")])


def _moved_section(moved: Moved, details: dict[str, Any], names: list[str], figures: dict[str, Path]) -> Section:
    paragraphs = ["Teacher–student agreement at each evaluation of the student's training, on real validation "
                  "images (measured only: a data-free method never selects on it) and on a fixed bank of the "
                  "samples it learned from; beside it, the cGAN's teacher-feature FID over its training and the "
                  "checkpoint distill used."]
    tables = []
    rows = details["per_class"]
    if moved.per_class.size and np.isfinite(moved.per_class).any():
        order = sorted(range(len(rows)), key=lambda c: -np.nan_to_num(rows[c]["mean_val_agreement_over_training"],
                                                                      nan=-1.0))
        first = [rows[c]["class"] for c in order[:3]]
        last = [rows[c]["class"] for c in order[-3:]]
        paragraphs.append(f"Learned first: {', '.join(first)}; last: {', '.join(last)} (classes ordered by their mean "
                          "agreement over the evaluations — the area under their curve).")
        tables.append(Table(["class", "mean agreement over training", "settled (within 1 point of final) from step"],
                            [[rows[c]["class"], _pct(rows[c]["mean_val_agreement_over_training"]),
                              fmt(rows[c]["settled_step"], "int")] for c in order]))
    else:
        paragraphs.append("This student's training recorded no per-class agreement (a student trained before "
                          "distill logged it, or an imported one): the curves show what it did record.")
    if moved.gan_used_step is not None:
        paragraphs.append(f"Generator checkpoint used: step {int(moved.gan_used_step)}, teacher-feature FID "
                          f"{fmt(moved.gan_used_fid)}.")
    figs = [Figure(figures["explain_moved"], "agreement over training, per class, and the GAN's FID")] \
        if "explain_moved" in figures else []
    return Section("Explain: how the knowledge moved", paragraphs, tables, figs)
