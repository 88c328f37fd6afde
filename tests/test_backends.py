"""The deployment formats' exporters (gandistill/evaluation/backends.py)."""

from __future__ import annotations

import warnings

import torch

from gandistill.evaluation import backends
from gandistill.nets import build_classifier


def test_the_dynamo_onnx_exporter_matches_pytorch_with_a_dynamic_batch(tmp_path):
    """The exporter PyTorch keeps when the (faster, deprecated) legacy one goes: proven here."""
    torch.manual_seed(0)
    model = build_classifier("lenet5_half", 1, (28, 28), 10, mean=[0.13], std=[0.31]).eval()
    x = torch.rand(5, 1, 28, 28)
    backends.to_onnx(model, x[:2], tmp_path / "m.onnx", legacy_first=False)
    run = backends.onnx_runner(backends.onnx_session(tmp_path / "m.onnx"))
    with torch.no_grad():
        for batch in (x[:1], x):  # other batch sizes than the example's: the batch axis is dynamic
            assert backends.parity(model(batch).numpy(), run(batch))["max_abs_diff"] < 1e-4


def test_only_the_legacy_exporters_own_deprecation_is_silenced(tmp_path):
    model = build_classifier("lenet5_half", 1, (28, 28), 10).eval()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        backends.to_onnx(model, torch.rand(2, 1, 28, 28), tmp_path / "m.onnx")
        backends.to_torchscript(model, torch.rand(2, 1, 28, 28))
    messages = [str(w.message) for w in seen]
    assert not any("legacy TorchScript-based ONNX export" in m for m in messages)
    assert any("torch.jit.trace" in m and "deprecated" in m for m in messages)  # TorchScript's: shown
