"""The evaluate / export / promote-gate kfp components' python_func, called with real artifacts."""

from __future__ import annotations

from gandistill_components.evaluate import evaluate
from gandistill_components.export import export
from gandistill_components.promote import promote_gate
from helpers import artifact, fast_params, make_world
from kfp import dsl


def test_components_chain_evaluate_export_promote(tmp_path):
    world = make_world(tmp_path, generator=False)
    params_json = fast_params().to_json()
    evaluation = artifact(dsl.Model, tmp_path / "evaluation")
    metrics, confusion = artifact(dsl.Metrics, tmp_path / "metrics"), artifact(dsl.ClassificationMetrics,
                                                                               tmp_path / "confusion")
    report = artifact(dsl.HTML, tmp_path / "report.html")
    evaluate(params_json, "", artifact(dsl.Dataset, world["data"]), artifact(dsl.Model, world["teacher"]),
             artifact(dsl.Model, world["student"]), evaluation, metrics, confusion, report, None)
    assert metrics.metadata["student_test_acc"] > 0.9
    assert len(confusion.metadata["confusionMatrix"]["rows"]) == 3
    assert "<html" in (tmp_path / "report.html").read_text()

    exported = artifact(dsl.Model, tmp_path / "exported")
    export(params_json, "", artifact(dsl.Dataset, world["data"]), artifact(dsl.Model, world["student"]),
           evaluation, exported)
    assert exported.metadata["onnx_argmax_agreement"] == 1.0

    # promote itself (registry writes, ~10 s of cold torch.export) is covered by test_promote.py
    assert promote_gate(params_json, "", evaluation) is True
