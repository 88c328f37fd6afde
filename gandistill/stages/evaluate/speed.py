"""Cost and speed: parameters, MACs, serialized sizes, and latency / throughput of the teacher
(FP32), the student (FP32) and the student's INT8 model, side by side.

FP32 models run on eager PyTorch and in the two formats export ships — the torch.export program
(.pt2, loaded back from its file) and ONNX Runtime; the INT8 model on ONNX Runtime (the format it
ships in). An imported TorchScript teacher has no .pt2 program (torch.export cannot read it).
Every runner is timed interleaved in this one process after warm-up
(`gandistill.evaluation.cost.benchmark`): batch-1 latency p50/p95 and throughput at batch 1, 32
and 256, ONNX Runtime with graph optimisations at their highest level (ORT_ENABLE_ALL) and the
thread count stated. The INT8 model is the run's one quantisation (`quantization.build_student_int8`),
kept in evaluate's output: export ships that file (checked by its digest); its test accuracy feeds
the accuracy-vs-latency (Pareto) figure.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import torch
from torch import nn

from gandistill import quantization
from gandistill.data.dataset import as_float
from gandistill.evaluation import backends, cost, plots
from gandistill.evaluation.report import Figure, Section, Table, fmt
from gandistill.nets import count_parameters
from gandistill.stages.evaluate.inputs import STUDENT, TEACHER, Block, Inputs

log = logging.getLogger(__name__)

PT2 = "torch_export"  # the .pt2 program's backend name in the speed table and metric keys
BACKENDS = ("eager", PT2, "onnxruntime")
THROUGHPUT_BATCHES = (1, 32, 256)
INT8 = "student_int8"  # the INT8 model's name in the speed table and metric keys
ORT = "onnxruntime"

Speed = dict[str, dict[str, dict[str, float]]]  # model -> backend -> {latency_p50_ms, …}


def _batch(x_uint8: torch.Tensor, n: int) -> torch.Tensor:
    """n test images (repeated when the split is smaller), as float pixels."""
    return as_float(x_uint8[:n].repeat(-(-n // len(x_uint8)), 1, 1, 1)[:n].clone())


def _runners(models: dict[str, nn.Module], example: torch.Tensor, opset: int, workdir: Path,
             int8_path: Path | None) -> tuple[dict[str, cost.Runner], dict[str, int]]:
    """A callable per (model, backend), plus each ONNX file's size in bytes."""
    runners: dict[str, cost.Runner] = {}
    onnx_bytes: dict[str, int] = {}
    for name, model in models.items():
        runners[f"{name}/eager"] = model
        if isinstance(model, torch.jit.ScriptModule):  # an imported TorchScript teacher: torch.export cannot read it
            log.info("[evaluate] the %s is TorchScript: no .pt2 program of it to time", name)
        else:
            runners[f"{name}/{PT2}"] = backends.load_pt2(backends.to_pt2(model, example, workdir / f"{name}.pt2"))
        path = backends.to_onnx(model, example, workdir / f"{name}.onnx", opset)
        onnx_bytes[name] = path.stat().st_size
        runners[f"{name}/{ORT}"] = backends.onnx_runner(backends.onnx_session(path))
    if int8_path is not None:
        onnx_bytes[INT8] = int8_path.stat().st_size
        runners[f"{INT8}/{ORT}"] = backends.onnx_runner(backends.onnx_session(int8_path))
    return runners, onnx_bytes


def _int8(ev: Inputs, path: Path) -> tuple[dict[str, float], dict[str, str]]:
    """Build the run's INT8 student (export ships this file), and score it on the test split."""
    ep = ev.params.export
    built = quantization.build_student_int8(ev.student, ev.method, ev.folders[STUDENT], ev.generator_dir,
                                            ev.data_dir, ev.test_x, path, ep.int8_calibration,
                                            ep.int8_calibration_samples, ev.params.seed, ep.onnx_opset)
    numbers = quantization.int8_accuracy(path, ev.student, ev.test_x, ev.test_y, ev.params.evaluate.batch_size)
    metrics = {"student_int8_test_acc": numbers["int8_test_acc"], "int8_acc_drop": numbers["int8_acc_drop"],
               "int8_agreement": numbers["int8_agreement"], "int8_max_abs_diff": numbers["int8_max_abs_diff"]}
    return metrics, built


def measure(ev: Inputs) -> tuple[Block, Speed]:
    """Size and MACs of teacher and student, the INT8 student, then everyone's speed."""
    example = _batch(ev.test_x, 2)
    batches = {n: _batch(ev.test_x, n) for n in THROUGHPUT_BATCHES}
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
    result: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        int8_path = ev.out_dir / quantization.INT8_FILE if ev.params.export.int8 else None
        if int8_path is not None:
            int8_metrics, result["int8"] = _int8(ev, int8_path)
            metrics |= int8_metrics
        runners, onnx_bytes = _runners(models, example, ev.params.export.onnx_opset, Path(tmp), int8_path)
        timed = cost.benchmark(runners, example[:1], batches, runs=ev.params.evaluate.latency_runs, warmup=10)
    speed: Speed = {}
    for key, values in timed.items():
        model, backend = key.split("/")
        speed.setdefault(model, {})[backend] = values
        metrics |= {f"{k}_{model}_{backend}": v for k, v in values.items()}
    metrics |= {f"onnx_bytes_{name}": float(size) for name, size in onnx_bytes.items()}
    for backend in [b for b in BACKENDS if b in speed[TEACHER] and b in speed[STUDENT]]:
        metrics[f"speedup_latency_{backend}"] = (speed[TEACHER][backend]["latency_p50_ms"]
                                                 / speed[STUDENT][backend]["latency_p50_ms"])
        metrics[f"speedup_throughput_{backend}"] = (speed[STUDENT][backend]["throughput_ips"]
                                                    / speed[TEACHER][backend]["throughput_ips"])
    if INT8 in speed:
        q, t, s = speed[INT8][ORT], speed[TEACHER][ORT], speed[STUDENT][ORT]
        metrics["speedup_latency_int8_vs_teacher"] = t["latency_p50_ms"] / q["latency_p50_ms"]
        metrics["speedup_latency_int8_vs_student"] = s["latency_p50_ms"] / q["latency_p50_ms"]
        for n in THROUGHPUT_BATCHES:
            metrics[f"speedup_throughput_b{n}_int8_vs_teacher"] = q[f"throughput_ips_b{n}"] / t[f"throughput_ips_b{n}"]
            metrics[f"speedup_throughput_b{n}_int8_vs_student"] = q[f"throughput_ips_b{n}"] / s[f"throughput_ips_b{n}"]
    metrics["threads"] = float(torch.get_num_threads())
    return Block(metrics=metrics, result=result | {"speed": speed}), speed


def _side_by_side(m: dict[str, float], speed: Speed) -> Table:
    """Teacher FP32, student FP32 and student INT8 on ONNX Runtime: the deployment comparison."""
    rows = []
    for name, label, acc in ((TEACHER, "teacher FP32", m["teacher_test_acc"]),
                             (STUDENT, "student FP32", m["student_test_acc"]),
                             (INT8, "student INT8", m.get("student_int8_test_acc"))):
        if name not in speed:
            continue
        v, t = speed[name][ORT], speed[TEACHER][ORT]
        rows.append([label, fmt(acc, "%"), fmt(v["latency_p50_ms"], "ms"), fmt(v["latency_p95_ms"], "ms"),
                     *(f"{v[f'throughput_ips_b{n}']:,.0f}" for n in THROUGHPUT_BATCHES),
                     fmt(t["latency_p50_ms"] / v["latency_p50_ms"], "x"),
                     fmt(v["throughput_ips_b256"] / t["throughput_ips_b256"], "x")])
    return Table(["model", "test accuracy", "p50 latency (batch 1)", "p95 latency (batch 1)",
                  *(f"images/s at batch {n}" for n in THROUGHPUT_BATCHES), "latency speed-up vs teacher",
                  "throughput speed-up vs teacher (batch 256)"], rows,
                 "ONNX Runtime, CPU execution provider, graph optimisations ORT_ENABLE_ALL")


def report(ev: Inputs, block: Block, speed: Speed, accuracy: Block) -> Block:
    """The 'Cost and speed' section: sizes, the FP32/INT8 deployment table, all backends, figures
    (accuracy: the accuracy block, whose test accuracies the side-by-side table and Pareto plot show)."""
    m = accuracy.metrics | block.metrics
    block.figures = {"speed": plots.speed_bars(speed, ev.out_dir / "speed.png")}
    points = {"teacher FP32": (speed[TEACHER][ORT]["latency_p50_ms"], m["teacher_test_acc"]),
              "student FP32": (speed[STUDENT][ORT]["latency_p50_ms"], m["student_test_acc"])}
    if INT8 in speed:
        points["student INT8"] = (speed[INT8][ORT]["latency_p50_ms"], m["student_int8_test_acc"])
    block.figures["pareto"] = plots.accuracy_vs_latency(points, ev.out_dir / "accuracy_vs_latency.png")
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
    if INT8 in speed:
        size_rows.append(["ONNX bytes, student INT8", fmt(m["onnx_bytes_teacher"], "int"),
                          fmt(m["onnx_bytes_student_int8"], "int"),
                          fmt(m["onnx_bytes_teacher"] / max(1.0, m["onnx_bytes_student_int8"]), "x")])
    backend_rows = [[model, backend, fmt(v["latency_p50_ms"], "ms"), fmt(v["latency_p95_ms"], "ms"),
                     f"{v['throughput_ips']:,.0f}"] for model, per in speed.items() for backend, v in per.items()]
    threads = int(m["threads"])
    paragraphs = [
        f"Timed in one process on {threads} thread(s) (PyTorch intra-op threads; ONNX Runtime intra-op "
        f"{threads}, inter-op 1), calls interleaved round-robin after warm-up: {ev.params.evaluate.latency_runs} "
        f"batch-1 calls per model for latency, then rounds at batch {', '.join(map(str, THROUGHPUT_BATCHES))} "
        "for throughput (median batch time). Speed figures are from this machine under its load at the time; "
        "ratios measured side by side are what transfer."]
    if INT8 in speed:
        info = block.result["int8"]
        verdict = quantization.speed_verdict(m["speedup_throughput_b256_int8_vs_student"])
        paragraphs.append(
            f"INT8 student: static QDQ quantisation (int8 per-channel weights, uint8 activations; "
            f"{info['layers']}) calibrated on {info['calibration_why']}; test accuracy "
            f"{fmt(m['student_int8_test_acc'], '%')} vs FP32 "
            f"{fmt(m['student_test_acc'], '%')} (drop {m['int8_acc_drop'] * 100:.2f} points), agreement with the FP32 "
            f"student {fmt(m['int8_agreement'], '%')}. At batch 256 it is "
            f"{m['speedup_throughput_b256_int8_vs_teacher']:.2f}× the teacher's throughput and "
            f"{m['speedup_throughput_b256_int8_vs_student']:.2f}× the FP32 student's: {verdict}.")
    block.sections = [Section("Cost and speed", paragraphs, [
        Table(["", TEACHER, STUDENT, "ratio"], size_rows), _side_by_side(m, speed),
        Table(["model", "backend", "p50 latency", "p95 latency", "images/s (batch 256)"], backend_rows)],
        [Figure(block.figures["pareto"], "test accuracy vs batch-1 latency (ONNX Runtime)"),
         Figure(block.figures["speed"], "latency and throughput per backend")])]
    return block


def block(ev: Inputs, accuracy: Block) -> Block:
    return report(ev, *measure(ev), accuracy)
