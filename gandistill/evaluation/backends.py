"""Deployment formats of a classifier — TorchScript and ONNX — and their parity check.

Shared by the evaluate stage (which times every format) and the export stage (which ships
them), so what is timed is exactly what is shipped.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

INPUT_NAME = "images"
OUTPUT_NAME = "logits"


def to_torchscript(model: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """Trace the model (already-scripted models pass through). Classifiers here are static
    graphs, so tracing is exact; `check_inputs` re-runs a different batch size to catch a
    frozen batch dimension (a TracerWarning says why, so warnings are not silenced here).

    PyTorch 2.13 deprecates TorchScript (torch.jit.trace / freeze / save / load warn): it is
    still shipped (model.ts) for runtimes that load TorchScript, and works on the pinned
    torch (< 2.14); its successor, torch.export's .pt2, is what promote registers in MLflow."""
    if isinstance(model, torch.jit.ScriptModule):
        return model
    other = torch.cat([example, example[:1]])
    with torch.no_grad():
        traced = torch.jit.trace(model.eval(), example, check_inputs=[(other,)])
    return torch.jit.freeze(traced.eval())


LEGACY_ONNX_DEPRECATION = r"You are using the legacy TorchScript-based ONNX export"


def to_onnx(model: nn.Module, example: torch.Tensor, path: str | Path, opset: int = 18,
            legacy_first: bool = True) -> Path:
    """Export with a dynamic batch axis. The legacy TorchScript-based exporter (dynamo=False)
    is used first: for these static CNNs it is exact and ~10× faster than the dynamo exporter
    (1 s vs 10 s measured for LeNet-5 on 2 CPU cores). PyTorch deprecates it (its
    DeprecationWarning, the one warning silenced here, is this documented choice); the dynamo
    exporter — the default from PyTorch 2.9 and the one left when the legacy exporter goes — is
    the fallback, and `legacy_first=False` uses it directly (tests prove its parity)."""
    path = Path(path)
    model = model.eval()
    if legacy_first:
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.filterwarnings("ignore", message=LEGACY_ONNX_DEPRECATION, category=DeprecationWarning)
                torch.onnx.export(model, (example,), str(path), input_names=[INPUT_NAME],
                                  output_names=[OUTPUT_NAME],
                                  dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                                  opset_version=opset, dynamo=False)
            return path
        except Exception as exc:  # e.g. an op the legacy exporter lacks
            log.info("legacy ONNX exporter failed (%s); retrying with the dynamo exporter", exc)
    batch = torch.export.Dim("batch", min=1, max=65536)
    with torch.no_grad():
        program = torch.onnx.export(model, (example,), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                    dynamic_shapes=({0: batch},), opset_version=opset, dynamo=True)
        program.save(str(path))
    return path


def onnx_session(path: str | Path, threads: int | None = None) -> Any:
    """ONNX Runtime CPU session with graph optimisations at their highest level (ORT_ENABLE_ALL:
    constant folding, fusions, NCHWc layouts, QDQ → integer kernels); intra-op threads default
    to torch's so timings compare, one inter-op thread."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_runner(session: Any) -> Callable[[torch.Tensor], np.ndarray]:
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x.numpy()})[0]


def parity(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """max |a − b| over all logits, and the share of samples with the same argmax."""
    if not len(reference):
        return {"max_abs_diff": 0.0, "argmax_agreement": 1.0}
    return {"max_abs_diff": float(np.abs(reference - other).max()),
            "argmax_agreement": float((reference.argmax(1) == other.argmax(1)).mean())}


def serialized_bytes(model: nn.Module) -> int:
    """Bytes of the state dict as torch.save writes it: the weight payload a deployment ships."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes
