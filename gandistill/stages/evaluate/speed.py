"""Cost and speed of teacher and student: parameters, MACs, serialized sizes, and latency /
throughput for eager PyTorch, TorchScript and ONNX Runtime, all timed interleaved in this one
process after warm-up (see `gandistill.evaluation.cost.benchmark`)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import torch
from torch import nn

from gandistill.data.dataset import as_float
from gandistill.evaluation import backends, cost, plots
from gandistill.evaluation.report import Figure, Section, Table, fmt
from gandistill.nets import count_parameters
from gandistill.stages.evaluate.inputs import STUDENT, TEACHER, Block, Inputs

log = logging.getLogger(__name__)

BACKENDS = ("eager", "torchscript", "onnxruntime")
THROUGHPUT_BATCH = 256

Speed = dict[str, dict[str, dict[str, float]]]  # model -> backend -> {latency_p50_ms, …}


def _time_backends(models: dict[str, nn.Module], example: torch.Tensor, batch: torch.Tensor, runs: int,
                   opset: int, workdir: Path) -> tuple[Speed, dict[str, int]]:
    """Time every (model, backend) pair interleaved; also returns each model's ONNX size."""
    runners: dict[str, cost.Runner] = {}
    onnx_bytes: dict[str, int] = {}
    for name, model in models.items():
        runners[f"{name}/eager"] = model
        runners[f"{name}/torchscript"] = backends.to_torchscript(model, example)
        path = backends.to_onnx(model, example, workdir / f"{name}.onnx", opset)
        onnx_bytes[name] = path.stat().st_size
        runners[f"{name}/onnxruntime"] = backends.onnx_runner(backends.onnx_session(path))
    timed = cost.benchmark(runners, example[:1], batch, runs=runs, warmup=10)
    nested: Speed = {}
    for key, value in timed.items():
        model, backend = key.split("/")
        nested.setdefault(model, {})[backend] = value
    return nested, onnx_bytes


def measure(ev: Inputs) -> tuple[Block, Speed]:
    """Size and MACs of teacher and student, then their speed on every backend."""
    n_test = len(ev.test_y)
    example = as_float(ev.test_x[:2].clone())
    batch = as_float(ev.test_x[:THROUGHPUT_BATCH].repeat(-(-THROUGHPUT_BATCH // n_test), 1, 1, 1)
                     [:THROUGHPUT_BATCH].clone())
    models = {TEACHER: ev.teacher, STUDENT: ev.student}
    metrics: dict[str, float] = {}
    for name, model in models.items():
        metrics[f"params_{name}"] = float(count_parameters(model))
        metrics[f"size_bytes_{name}"] = float(backends.serialized_bytes(model))
        try:
            metrics[f"macs_{name}"] = float(cost.count_macs(model, example[:1]))
        except Exception as exc:  # an imported TorchScript teacher may hide its ops
            log.warning("[evaluate] cannot count MACs of the %s: %s", name, exc)
    metrics["compression_ratio"] = metrics["params_teacher"] / max(1.0, metrics["params_student"])
    metrics["size_ratio"] = metrics["size_bytes_teacher"] / max(1.0, metrics["size_bytes_student"])
    if metrics.get("macs_student"):
        metrics["macs_ratio"] = metrics.get("macs_teacher", float("nan")) / metrics["macs_student"]
    with tempfile.TemporaryDirectory() as tmp:
        speed, onnx_bytes = _time_backends(models, example, batch, ev.params.evaluate.latency_runs,
                                           ev.params.export.onnx_opset, Path(tmp))
    for name in models:
        metrics[f"onnx_bytes_{name}"] = float(onnx_bytes[name])
        for backend, values in speed[name].items():
            for key, value in values.items():
                metrics[f"{key}_{name}_{backend}"] = value
    for backend in BACKENDS:
        metrics[f"speedup_latency_{backend}"] = (speed[TEACHER][backend]["latency_p50_ms"]
                                                 / speed[STUDENT][backend]["latency_p50_ms"])
        metrics[f"speedup_throughput_{backend}"] = (speed[STUDENT][backend]["throughput_ips"]
                                                    / speed[TEACHER][backend]["throughput_ips"])
    metrics["threads"] = float(torch.get_num_threads())
    return Block(metrics=metrics, result={"speed": speed}), speed


def report(ev: Inputs, block: Block, speed: Speed) -> Block:
    """The 'Cost and speed' section: a size table, a timing table and the speed figure."""
    m = block.metrics
    block.figures = {"speed": plots.speed_bars(speed, ev.out_dir / "speed.png")}
    size_rows = [
        ["parameters", fmt(m["params_teacher"], "int"), fmt(m["params_student"], "int"),
         fmt(m["compression_ratio"], "x")],
        ["MACs / image", fmt(m.get("macs_teacher"), "int"), fmt(m.get("macs_student"), "int"),
         fmt(m.get("macs_ratio"), "x")],
        ["state-dict bytes", fmt(m["size_bytes_teacher"], "int"), fmt(m["size_bytes_student"], "int"),
         fmt(m["size_ratio"], "x")],
        ["ONNX bytes", fmt(m["onnx_bytes_teacher"], "int"), fmt(m["onnx_bytes_student"], "int"),
         fmt(m["onnx_bytes_teacher"] / max(1.0, m["onnx_bytes_student"]), "x")],
    ]
    speed_rows = [[model, backend, fmt(v["latency_p50_ms"], "ms"), fmt(v["latency_p95_ms"], "ms"),
                   f"{v['throughput_ips']:,.0f}"] for model, per in speed.items() for backend, v in per.items()]
    block.sections = [Section("Cost and speed", [
        f"Timed in one process on {torch.get_num_threads()} thread(s), {ev.params.evaluate.latency_runs} "
        f"interleaved batch-1 calls per backend after warm-up; throughput at batch {THROUGHPUT_BATCH}. Student "
        f"speed-up (p50 latency): eager {m['speedup_latency_eager']:.2f}×, TorchScript "
        f"{m['speedup_latency_torchscript']:.2f}×, ONNX Runtime {m['speedup_latency_onnxruntime']:.2f}×."],
        [Table(["", TEACHER, STUDENT, "ratio"], size_rows),
         Table(["model", "backend", "p50 latency", "p95 latency", "images/s"], speed_rows)],
        [Figure(block.figures["speed"], "latency and throughput")])]
    return block


def block(ev: Inputs) -> Block:
    return report(ev, *measure(ev))
