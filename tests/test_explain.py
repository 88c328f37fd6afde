"""Explain what the student learned: the analyses against hand-computed values, then the report
section on a tiny real run (prepare_data → train_teacher → train_gan → distill → evaluate on a
slice of MNIST), checked in headless Chromium."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import ROOT, smoke_params
from torch import nn

from gandistill.evaluation import explain as X

sys.path.insert(0, str(ROOT / "scripts"))
import chromium  # noqa: E402  (scripts/chromium.py: the DevTools-pipe client)

# -- the analyses ---------------------------------------------------------------------------


def test_disagreements_are_grouped_by_teacher_and_student_class_largest_first():
    teacher = torch.tensor([0, 1, 1, 2, 2, 2, 1, 0])
    student = torch.tensor([0, 2, 2, 1, 2, 0, 2, 1])
    assert X.disagreement_groups(teacher, student) == [((1, 2), [1, 2, 6]), ((0, 1), [7]), ((2, 0), [5]),
                                                       ((2, 1), [3])]
    assert X.disagreement_groups(teacher, teacher) == []


def test_class_support_finds_the_nearest_samples_of_a_class_and_its_manifold():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(60, 3, generator=g)
    labels = torch.arange(60) % 3
    support = X.ClassSupport.build(feats, labels, 4, k=2)
    queries = torch.randn(5, 3, generator=g)
    dist, idx = support.nearest(queries, 1, 4)
    brute = torch.cdist(queries, feats)
    brute[:, labels != 1] = float("inf")
    assert np.allclose(dist, brute.sort(1).values[:, :4].numpy(), atol=1e-5)
    assert idx.tolist() == brute.argsort(1)[:, :4].tolist()
    assert (labels[idx] == 1).all()
    assert support.nearest(queries, 3, 4)[0].shape == (5, 0)  # class 3 has no sample
    # a query on top of a class-2 sample is inside class 2's manifold, and outside class 3's (empty)
    on_top = feats[labels == 2][:1]
    assert support.covers(torch.cat([on_top, on_top + 100]), torch.tensor([2, 2])).tolist() == [True, False]
    assert support.covers(on_top, torch.tensor([3])).tolist() == [False]
    nearest = support.nearest_distance(torch.cat([queries[:2], on_top]), torch.tensor([1, 1, 3]))
    assert nearest[:2] == pytest.approx(dist[:2, 0], abs=1e-6) and math.isnan(nearest[2])


def test_percentile_and_spearman():
    assert X.percentile_within(np.array([0.0, 2.5, 9.0]), np.array([1.0, 2.0, 3.0, 4.0])).tolist() == [0, 0.5, 1]
    assert math.isnan(X.percentile_within(np.array([1.0]), np.array([]))[0])
    rho, p, n = X.spearman(np.array([0.1, 0.5, 0.9, np.nan]), np.array([3.0, 2.0, 1.0, 7.0]))
    assert (rho, n) == (pytest.approx(-1.0), 3) and 0 <= p <= 1
    assert math.isnan(X.spearman(np.array([1.0, 1.0, 1.0]), np.array([1.0, 2.0, 3.0]))[0])  # constant: no ranking


class Region(nn.Module):
    """A two-class model whose answer depends only on the pixels inside `mask`."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        evidence = (x * self.mask).flatten(1).sum(1)
        return torch.stack([evidence, -evidence], dim=1)


def test_smoothgrad_marks_the_pixels_a_model_reads_and_similarity_compares_them():
    top, bottom = torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8)
    top[..., :4, :], bottom[..., 4:, :] = 1, 1
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    target = torch.zeros(6, dtype=torch.long)
    maps_top = X.smoothgrad(Region(top), x, target)
    maps_bottom = X.smoothgrad(Region(bottom), x, target)
    assert maps_top.shape == (6, 8, 8)
    assert (maps_top[:, :4] > 0).all() and (maps_top[:, 4:] == 0).all()
    assert X.map_similarity(maps_top, maps_top) == pytest.approx(np.ones(6))
    assert X.map_similarity(maps_top, maps_bottom) == pytest.approx(np.zeros(6))
    assert X.map_similarity(torch.zeros(2, 3, 3), torch.ones(2, 3, 3)).tolist() == [0, 0]


def test_the_floor_pairs_each_image_with_another_of_its_class():
    labels = torch.tensor([0, 1, 0, 0, 2, 1])
    partner = X.other_member_of_class(labels)
    assert (labels[partner] == labels).all()
    assert partner.tolist() == [2, 5, 3, 0, 4, 1]  # class 2 has one member: itself


def test_learning_order_and_agreement_by_class():
    steps = np.array([100.0, 200.0, 300.0])
    curves = np.array([[0.9, 0.1, np.nan, 0.5], [1.0, 0.5, np.nan, 0.9], [1.0, 1.0, np.nan, 0.895]])
    mean, first = X.learning_order(steps, curves)
    assert mean[[0, 1, 3]] == pytest.approx([29 / 30, 1.6 / 3, 2.295 / 3]) and math.isnan(mean[2])
    # settled: from which step on it stays within 1 point of its final agreement
    assert first[[0, 1, 3]].tolist() == [200.0, 300.0, 200.0] and math.isnan(first[2])
    overall, per_class = X.agreement_by_class(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]), 4)
    assert overall == 0.75
    assert per_class[:3] == [1.0, 1.0, 0.5] and math.isnan(per_class[3])


# -- the report section on a tiny real run --------------------------------------------------

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, mnist_dir):
    """The pipeline's stages in-process on 1,000 MNIST training images: a teacher of 2 epochs, a
    cGAN of 150 steps and a gan student of 40 steps — far from converged, so teacher and student
    really disagree on many test images."""
    from gandistill import tracking
    from gandistill.stages import distill, evaluate, prepare_data, train_gan, train_teacher

    root = tmp_path_factory.mktemp("explain")
    mp = pytest.MonkeyPatch()  # module scope runs before the per-test isolation fixture
    mp.setenv("GANDISTILL_CHECKPOINT_ROOT", str(root / "checkpoints"))
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")  # a real MLflow store
    params = smoke_params(f"data.path={mnist_dir}", "gan.steps=150", "gan.eval_every=50",
                          "evaluate.explain_per_class=40", "evaluate.saliency_per_class=4")
    prepare_data.run(params, root / "data")
    train_teacher.run(params, root / "data", root / "teacher")
    train_gan.run(params, root / "data", root / "teacher", root / "gan")
    distill.run(params, root / "data", root / "teacher", root / "gan", root / "student")
    parent = tracking.start_parent_run("tiny")
    with tracking.stage_run("evaluate", parent) as tracker:
        result = evaluate.run(params, root / "data", root / "teacher", root / "student", root / "gan", root / "eval",
                              tracker)
    logged = tracking.client().get_run(tracker.run_id)
    artifacts = {a.path for a in tracking.client().list_artifacts(tracker.run_id, "evaluation")}
    mp.undo()
    return root, result | {"mlflow_metrics": logged.data.metrics, "mlflow_artifacts": artifacts}


EXPLAIN_SECTIONS = ("Explain: what the student learned, and why not the rest", "Explain: coverage against error, "
                    "per class", "Explain: disagreement atlas", "Explain: where teacher and student look",
                    "Explain: how the knowledge moved")


def test_the_explain_blocks_exist_with_finite_numbers(tiny_run):
    root, result = tiny_run
    m = result["metrics"]
    explain_metrics = {k: v for k, v in m.items() if k.startswith("explain_")}
    assert all(math.isfinite(v) for v in explain_metrics.values())
    for key in ("explain_disagreements", "explain_disagreements_covered_fraction", "explain_precision_mean",
                "explain_recall_mean", "explain_recall_reference_mean", "explain_saliency_similarity_test",
                "explain_saliency_floor_test", "explain_saliency_similarity_samples", "explain_final_val_agreement",
                "explain_final_generated_agreement", "explain_gan_fid_used", "explain_recall_class_0",
                "explain_agreement_class_9"):
        assert key in explain_metrics, key
    assert 0 < m["explain_disagreements"] == round((1 - m["agreement"]) * m["test_samples"])
    # each block's cost is recorded (bench/explain_cost.py reads it); no time is asserted
    assert {"accuracy", "explain", "speed", "gan_quality", "privacy", "curves"} <= set(result["block_seconds"])
    assert all(0 < s < result["wall_s"] for s in result["block_seconds"].values())
    details = json.loads((root / "eval" / "explain.json").read_text())
    assert details["learned_from"] == {"kind": "generated", "description": "samples of the trained cGAN",
                                       "samples": 400, "discriminator": True}
    assert len(details["per_class"]) == 10
    assert all(0 <= row["recall"] <= 1 for row in details["per_class"] if row["recall"] is not None)
    assert all(0 <= row["reference_recall"] <= 1 for row in details["per_class"])  # real train images: every class
    for name in ("explain_coverage", "explain_atlas", "explain_saliency", "explain_moved"):
        assert (root / "eval" / result["figures"][name]).stat().st_size > 5000
    page = Path(result["report_html"]).read_text()
    for title in EXPLAIN_SECTIONS:
        assert title in page
    # the numbers behind the answers are in MLflow: every explain metric, explain.json and the figures
    assert {k: v for k, v in result["mlflow_metrics"].items() if k.startswith("explain_")} == pytest.approx(
        explain_metrics)
    assert {"evaluation/explain.json", "evaluation/explain_atlas.png", "evaluation/explain_coverage.png",
            "evaluation/explain_saliency.png", "evaluation/explain_moved.png"} <= result["mlflow_artifacts"]


def test_the_atlas_lists_the_real_disagreements(tiny_run):
    root, result = tiny_run
    from gandistill.data.dataset import load_split
    from gandistill.evaluation.predict import predict_logits
    from gandistill.model_files import load_classifier

    details = json.loads((root / "eval" / "explain.json").read_text())
    test = load_split(root / "data", "test")
    x = torch.from_numpy(test.x)
    teacher = predict_logits(load_classifier(root / "teacher"), x).argmax(1)
    student = predict_logits(load_classifier(root / "student"), x).argmax(1)
    disagree = torch.nonzero(teacher != student).flatten().tolist()
    rows = details["disagreements"]
    assert sorted(row["test_index"] for row in rows) == disagree  # every one, and nothing else
    names = [str(c) for c in range(10)]
    for row in rows[:50]:
        i = row["test_index"]
        assert (row["teacher"], row["student"]) == (names[teacher[i]], names[student[i]])
        assert row["true"] == names[test.y[i]]
        # D's score against the class's agreed images (None only where the student agrees on none)
        assert row["d_percentile"] is None or 0 <= row["d_percentile"] <= 1
    counts = [group["count"] for group in details["groups"]]
    assert counts == sorted(counts, reverse=True) and sum(counts) == len(disagree)
    assert any(row["d_percentile"] is not None for row in rows)
    assert all(row["nearest_distance"] is not None for row in rows if row["covered"])


def test_the_knowledge_moved_curves_come_from_the_students_training(tiny_run):
    root, _ = tiny_run
    history = json.loads((root / "student" / "result.json").read_text())["history"]
    evals = [h for h in history if "val_agreement_per_class" in h]
    assert len(evals) == 2  # distill.eval_every=20 of 40 steps
    for entry in evals:
        assert len(entry["val_agreement_per_class"]) == 10 and 0 <= entry["val_agreement"] <= 1
        assert 0 <= entry["generated_agreement"] <= 1
    # the plots/ CSV of a run keeps scalar columns only
    from pipeline.runs import _csv

    header = _csv(history).splitlines()[0].split(",")
    assert "val_agreement" in header and "val_agreement_per_class" not in header


# -- in a real browser ----------------------------------------------------------------------

REQUIRE_BROWSER = os.environ.get("GANDISTILL_REQUIRE_CHROMIUM") == "1"  # .ci/run: a skip would hide the check
browser = pytest.mark.skipif(chromium.find_chromium() is None and not REQUIRE_BROWSER,
                             reason=f"needs {chromium.NEEDS}")


@browser
def test_the_report_renders_in_headless_chromium_without_a_broken_image_script_error_or_empty_section(tiny_run):
    _, result = tiny_run
    with chromium.Browser() as page:
        found = chromium.check_page(page, result["report_html"])
    assert found.problems == []
    titles = [s["title"] for s in found.sections]
    assert set(EXPLAIN_SECTIONS) <= set(titles)
    atlas = next(s for s in found.sections if s["title"] == "Explain: disagreement atlas")
    assert atlas["pictures"] == 1 and atlas["tables"] > 0  # the figure decoded and the groups are listed
    assert found.images == len(result["figures"])


@browser
def test_the_browser_check_fails_on_a_broken_image_a_script_error_and_an_empty_section(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><head><title>t</title></head><body>"
                    "<section id='a'><h2>Fine</h2><p>text</p></section>"
                    "<section id='b'><h2>Nothing here</h2></section>"
                    "<section id='c'><h2>Picture</h2><img alt='torn' src='data:image/png;base64,iVBORw0KGgoAAAA'>"
                    "</section><script>undefinedFunction();</script></body></html>")
    with chromium.Browser() as browser_:
        found = chromium.check_page(browser_, page)
    assert found.broken_images == ["torn"]
    assert found.empty_sections == ["Nothing here", "Picture"]  # a section whose only picture is broken is empty
    assert any("undefinedFunction" in e for e in found.script_errors)
    assert len(found.problems) == 4


# -- what the student learned from, by method ---------------------------------------------------

@pytest.mark.parametrize("method, kind", [("gan", "generated"), ("data_free", "generated"), ("noise", "noise"),
                                          ("kd", "real"), ("scratch", "real")])
def test_what_the_student_learned_from_follows_its_method(tmp_path, method, kind):
    from helpers import fast_params, make_generator, make_world, train_classifier

    from gandistill.data.dataset import load_meta
    from gandistill.model_files import save_free_generator
    from gandistill.stages.evaluate import explain
    from gandistill.stages.evaluate.inputs import load_inputs

    world = make_world(tmp_path, generator=method == "gan")
    meta = load_meta(world["data"])
    train_classifier(world["student"], world["data"], meta, "lenet5_half", steps=20, method=method)
    if method == "data_free":
        generator = make_generator(tmp_path / "scratch-generator")
        save_free_generator(generator, generator.state_dict(), world["student"])
    params = fast_params(explain_per_class=7)
    ev = load_inputs(params, world["data"], world["teacher"], world["student"],
                     world["generator"] if method == "gan" else None, tmp_path / "eval")
    source = explain.learned_from(ev)
    assert source.kind == kind
    assert len(source.images) == 7 * meta.num_classes
    assert float(source.images.min()) >= 0 and float(source.images.max()) <= 1
    assert source.discriminator is None  # make_generator saves no D; train_gan's does (the tiny run checks it)
