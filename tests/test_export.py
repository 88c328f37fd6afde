"""Export: proven parity of the torch.export program (.pt2) / ONNX, the failure path, atomic output,
model card."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from helpers import fast_params, make_world
from onnx import numpy_helper

from gandistill.errors import ExportError
from gandistill.evaluation import backends
from gandistill.model_files import load_classifier
from gandistill.results import write_result
from gandistill.stages import export


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    paths = make_world(root)
    paths["evaluation"] = root / "evaluation"
    write_result(paths["evaluation"], {"metrics": {"student_test_acc": 0.97, "teacher_test_acc": 0.99,
                                                   "agreement": 0.98, "test_samples": 60.0},
                                       "teacher": {"arch": "lenet5"}, "student": {"method": "gan"}})
    return paths


def tamper(src, dst, delta: float = 0.5) -> None:
    """Shift the first float weight tensor of an ONNX model: a silently wrong export."""
    model = onnx.load(str(src))
    for i, init in enumerate(model.graph.initializer):
        array = numpy_helper.to_array(init)
        if array.dtype == np.float32 and array.size > 10:
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(array + delta, init.name))
            break
    onnx.save(model, str(dst))


def test_export_writes_proven_files_and_model_card(world, tmp_path):
    out = tmp_path / "exported"
    result = export.run(fast_params(), world["data"], world["student"], world["evaluation"], out, None,
                        world["generator"])
    for name in ("model.pt", "model.pt2", "model.onnx", "model_card.md", "result.json", "example_input.npy"):
        assert (out / name).is_file(), name
    assert not (out / "model.ts").exists()  # TorchScript is deprecated: no longer shipped
    assert result["onnx_max_abs_diff"] <= 1e-4 and result["onnx_argmax_agreement"] == 1.0
    assert result["pt2_max_abs_diff"] <= 1e-4 and result["pt2_argmax_agreement"] == 1.0
    assert not list(tmp_path.glob(".exported*")), "temporary folders must not be left behind"
    # the ONNX batch axis is dynamic: any batch size runs and matches PyTorch
    student = load_classifier(world["student"])
    run = backends.onnx_runner(backends.onnx_session(out / "model.onnx"))
    x = torch.rand(5, 1, 16, 16)
    assert np.abs(run(x) - student(x).detach().numpy()).max() < 1e-4
    program = torch.export.load(str(out / "model.pt2")).module()  # how a user loads the .pt2
    assert np.abs(program(x).detach().numpy() - student(x).detach().numpy()).max() < 1e-5
    card = (out / "model_card.md").read_text()
    for text in ("## Intended use", "0123abcd.dir", "code commit", "## Limitations", "97.00 %", "`gan`",
                 "ONNX Runtime (opset 18)", "torch.export (`model.pt2`)"):
        assert text in card, text


def test_tampered_onnx_is_rejected_with_both_numbers(world, tmp_path):
    out = tmp_path / "exported"
    export.run(fast_params(), world["data"], world["student"], world["evaluation"], out, None,
                        world["generator"])
    tamper(out / "model.onnx", tmp_path / "bad.onnx")
    student = load_classifier(world["student"])
    batch = torch.from_numpy(np.load(out / "example_input.npy"))
    with pytest.raises(ExportError) as err:
        export.verify_exports(student, batch, tmp_path / "bad.onnx", out / "model.pt2", 1e-4)
    message = str(err.value)
    assert "ONNX" in message and "max |Δlogit|" in message and "argmax agreement" in message
    assert "parity_atol = 0.0001" in message


def test_failed_parity_leaves_no_output(world, tmp_path, monkeypatch):
    real_to_onnx = backends.to_onnx

    def broken_to_onnx(model, example, path, opset=18):
        real_to_onnx(model, example, path, opset)
        tamper(path, path, delta=2.0)
        return path

    monkeypatch.setattr(export.backends, "to_onnx", broken_to_onnx)
    out = tmp_path / "exported"
    with pytest.raises(ExportError, match="does not reproduce"):
        export.run(fast_params(), world["data"], world["student"], world["evaluation"], out, None,
                        world["generator"])
    assert not out.exists() and not list(tmp_path.iterdir())


def test_parity_check_numbers():
    ref = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    assert export.check_parity("x", ref, ref + 1e-6, 1e-4)["argmax_agreement"] == 1.0
    with pytest.raises(ExportError, match="argmax agreement = 50.00 %"):
        export.check_parity("x", ref, np.array([[1.0, 0.0], [1.0, 0.0]], dtype=np.float32), 10.0)
