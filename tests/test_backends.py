"""The deployment formats' exporters (gandistill/evaluation/backends.py)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from gandistill.evaluation import backends
from gandistill.nets import build_classifier


def test_the_dynamo_onnx_exporter_and_the_pt2_program_match_pytorch_with_a_dynamic_batch(tmp_path):
    """Both formats export ships, from a batch of two, reproduce the model at other batch sizes."""
    torch.manual_seed(0)
    model = build_classifier("lenet5_half", 1, (28, 28), 10, mean=[0.13], std=[0.31]).eval()
    x = torch.rand(5, 1, 28, 28)
    run = backends.onnx_runner(backends.onnx_session(backends.to_onnx(model, x[:2], tmp_path / "m.onnx")))
    program = backends.load_pt2(backends.to_pt2(model, x[:2], tmp_path / "m.pt2"))
    with torch.no_grad():
        for batch in (x[:1], x):  # other batch sizes than the example's: the batch axis is dynamic
            assert backends.parity(model(batch).numpy(), run(batch))["max_abs_diff"] < 1e-4
            assert backends.parity(model(batch).numpy(), program(batch).numpy())["max_abs_diff"] < 1e-5


def test_exporting_a_trained_model_warns_of_nothing_deprecated(tmp_path):
    """The suite's own deprecations are gone from the export path: no TorchScript (torch.jit is
    deprecated in PyTorch 2.13), no legacy ONNX exporter."""
    model = build_classifier("lenet5_half", 1, (28, 28), 10).eval()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        backends.to_onnx(model, torch.rand(2, 1, 28, 28), tmp_path / "m.onnx")
        backends.load_pt2(backends.to_pt2(model, torch.rand(2, 1, 28, 28), tmp_path / "m.pt2"))
    deprecated = [str(w.message) for w in seen if issubclass(w.category, DeprecationWarning | FutureWarning)
                  and ("jit" in str(w.message) or "legacy" in str(w.message) or "TorchScript" in str(w.message))]
    assert deprecated == []


def test_an_imported_torchscript_model_still_exports_to_onnx(tmp_path):
    """A BYO TorchScript teacher is timed on ONNX Runtime: only the TorchScript-based exporter
    reads it; its deprecation notice is the one silenced, as documented in backends.to_onnx."""
    scripted = torch.jit.script(build_classifier("lenet5_half", 1, (28, 28), 10).eval())
    x = torch.rand(3, 1, 28, 28)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        run = backends.onnx_runner(backends.onnx_session(backends.to_onnx(scripted, x[:2], tmp_path / "t.onnx")))
    assert not any("legacy TorchScript-based ONNX export" in str(w.message) for w in seen)
    with torch.no_grad():
        assert backends.parity(scripted(x).numpy(), run(x))["max_abs_diff"] < 1e-4


def test_the_onnx_file_keeps_the_graph_not_the_exporting_machine_s_stack_traces(tmp_path):
    """The dynamo exporter annotates every node with its Python stack trace (absolute paths of this
    checkout): the shipped model.onnx, and the INT8 file quantised from it, carry none of it."""
    import onnx

    from gandistill.nets import classifiers

    model = build_classifier("resnet8_w8", 1, (28, 28), 10).eval()
    path = backends.to_onnx(model, torch.rand(2, 1, 28, 28), tmp_path / "m.onnx")
    graph = onnx.load(str(path)).graph
    assert {n.op_type for n in graph.node} >= {"Conv", "Gemm"}
    assert [n.name for n in graph.node if n.metadata_props] == []
    source_dir = str(Path(classifiers.__file__).parent).encode()
    assert source_dir not in path.read_bytes()
