"""Deployment formats of a classifier — a torch.export program (.pt2) and ONNX — and their
parity check.

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


PT2_FILE = "model.pt2"
BATCH = torch.export.Dim("batch", min=1, max=65536)  # the one dynamic axis of every exported format


def to_pt2(model: nn.Module, example: torch.Tensor, path: str | Path) -> Path:
    """A `torch.export` program (ExportedProgram, saved as .pt2) with a dynamic batch axis: what
    PyTorch 2.x serves going forward (TorchScript is deprecated). Load it with `load_pt2`."""
    path = Path(path)
    with torch.no_grad():
        program = torch.export.export(model.eval(), (example,), dynamic_shapes=({0: BATCH},))
    torch.export.save(program, str(path))
    return path


def load_pt2(path: str | Path) -> nn.Module:
    """The callable module of a saved torch.export program."""
    return torch.export.load(str(path)).module()


LEGACY_ONNX_DEPRECATION = r"You are using the legacy TorchScript-based ONNX export"


def to_onnx(model: nn.Module, example: torch.Tensor, path: str | Path, opset: int = 18,
            legacy: bool = False) -> Path:
    """Export with a dynamic batch axis through PyTorch's dynamo (torch.export-based) exporter,
    the default and the only one left once the TorchScript-based exporter goes: the FP32
    model.onnx that export ships (its parity proven on real images) and evaluate times, and the
    graph the INT8 student is quantised from (gandistill.quantization). The file keeps the graph
    and drops each node's metadata: the dynamo exporter records every node's Python stack trace
    and FX node: absolute source paths of the machine that exported it, and for a small classifier
    a tenth of the file (a quarter of its INT8 file).

    `legacy=True`, or an imported TorchScript model (a BYO teacher: only that exporter reads it),
    uses the TorchScript-based exporter, its deprecation notice silenced as this documented choice
    (tests compare the two graphs; bench.inference's recorded INT8 rows were measured on it)."""
    path = Path(path)
    if legacy or isinstance(model, torch.jit.ScriptModule):
        with warnings.catch_warnings(), torch.no_grad():
            warnings.filterwarnings("ignore", message=LEGACY_ONNX_DEPRECATION, category=DeprecationWarning)
            torch.onnx.export(model.eval(), (example,), str(path), input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                              opset_version=opset, dynamo=False)
        return path
    with torch.no_grad():
        program = torch.onnx.export(model.eval(), (example,), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                    dynamic_shapes=({0: BATCH},), opset_version=opset, dynamo=True, verbose=False)
    program.save(str(path))
    _drop_node_metadata(path)
    return path


def _drop_node_metadata(path: Path) -> None:
    import onnx

    model = onnx.load(str(path))
    for node in model.graph.node:
        del node.metadata_props[:]
    onnx.save(model, str(path))


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
