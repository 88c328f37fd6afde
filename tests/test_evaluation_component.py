"""The evaluate / export / promote-gate kfp components' python_func, called with real artifacts."""

from __future__ import annotations

from gandistill_components.evaluate import evaluate
from gandistill_components.export import export
from gandistill_components.promote import promote_gate
from helpers import artifact, fast_params, make_world
from kfp import dsl


def test_components_chain_evaluate_export_promote(tmp_path):
    world = make_world(tmp_path, generator=False)
    params = fast_params()
    # no generator here: the INT8 model (evaluate times it, export ships it) is calibrated on real
    # training images, which a gan student allows
    params.export.int8_calibration = "real"
    params_json = params.to_json()
    evaluation = artifact(dsl.Artifact, tmp_path / "evaluation")
    metrics, confusion = artifact(dsl.Metrics, tmp_path / "metrics"), artifact(dsl.ClassificationMetrics,
                                                                               tmp_path / "confusion")
    report, summary = artifact(dsl.HTML, tmp_path / "report.html"), artifact(dsl.Markdown, tmp_path / "summary.md")
    # a baseline student as dsl.Collected delivers it: an artifact whose metadata names its method
    baseline = artifact(dsl.Model, world["teacher"])
    baseline.metadata["method"] = "scratch"
    evaluate(params_json, "", artifact(dsl.Dataset, world["data"]), artifact(dsl.Model, world["teacher"]),
             artifact(dsl.Model, world["student"]), evaluation, metrics, confusion, report, summary,
             seed=params.seed, baselines=[baseline])
    assert metrics.metadata["student_test_acc"] > 0.9
    assert metrics.metadata["baseline_scratch_test_acc"] == metrics.metadata["teacher_test_acc"]
    assert len(confusion.metadata["confusionMatrix"]["rows"]) == 3
    assert "<html" in (tmp_path / "report.html").read_text()
    headline = (tmp_path / "summary.md").read_text()
    assert "## Summary" in headline and "| baseline scratch" in headline and "## Cost and speed" in headline
    assert "![" not in headline  # the Markdown output has no figure links (they would not resolve)

    exported = artifact(dsl.Model, tmp_path / "exported")
    card = artifact(dsl.Markdown, tmp_path / "model_card.md")
    export(params_json, "", artifact(dsl.Dataset, world["data"]), artifact(dsl.Model, world["student"]),
           evaluation, exported, card, seed=params.seed, distill_steps=params.distill.steps)
    assert exported.metadata["onnx_argmax_agreement"] == 1.0
    assert (tmp_path / "model_card.md").read_text() == (tmp_path / "exported" / "model_card.md").read_text()

    # promote itself (registry writes, ~10 s of cold torch.export) is covered by test_promote.py
    assert promote_gate(params_json, "", evaluation) is True
