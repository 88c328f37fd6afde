"""Inference speed of teacher FP32, student FP32 and student INT8 (ONNX Runtime, CPU), per
teacher/student pair, with a per-operator profile of where the time goes.

    python -m bench.speed --part inference        (or: make bench-speed)

Same code path as the evaluate stage: the FP32 ONNX export of `gandistill.evaluation.backends`,
the INT8 quantisation of `gandistill.quantization` (QDQ, per-channel int8 weights, uint8
activations, leading layers below reduction size 128 or behind a max-pool kept in FP32), ONNX Runtime sessions
at ORT_ENABLE_ALL, and `gandistill.evaluation.cost.benchmark`
(all runners interleaved round-robin in one process after warm-up; batch-1 latency p50/p95,
throughput at batch 1/32/256 as the median of rounds). Speed does not depend on weight values,
so the models are freshly initialised and INT8 is calibrated on uniform random images: this
table is about speed; accuracy of the INT8 student is measured by every pipeline run
(evaluate/export) on real test data.
"""

from __future__ import annotations

import collections
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gandistill import quantization
from gandistill.evaluation import backends, cost
from gandistill.nets import build_classifier, count_parameters

PAIRS = {  # name -> (teacher arch, student arch, input C×H×W)
    "LeNet-5 → LeNet-5-half, 1×28×28 (the default pair, MNIST)": ("lenet5", "lenet5_half", (1, 28, 28)),
    "ResNet-20 → ResNet-8, 3×32×32 (CIFAR-sized)": ("resnet20", "resnet8", (3, 32, 32)),
}
BATCHES = (1, 32, 256)
MODELS = ("teacher FP32", "teacher INT8", "student FP32", "student INT8")


def _random_reader(shape: tuple[int, ...], n: int = 256, batch: int = 64) -> Any:
    rng = np.random.default_rng(0)
    return quantization._Reader(iter([rng.random((min(batch, n - i), *shape), dtype=np.float32)
                                      for i in range(0, n, batch)]))


def _kernel_events(path: Path, x: np.ndarray, runs: int = 10) -> list[dict[str, Any]]:
    """ONNX Runtime's per-node kernel timings over `runs` calls on `x` (after 3 warm-up calls)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        for _ in range(3 + runs):
            session.run(None, {backends.INPUT_NAME: x})
        events = json.loads(Path(session.end_profiling()).read_text())
    return [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]


def profile(path: Path, x: np.ndarray) -> dict[str, Any]:
    """Share of kernel time per operator type, and the first convolution's share and its time per
    image — the op that dominates narrow single-channel students (its cost hardly depends on the
    number of output channels, so it bounds what a narrower student can gain)."""
    nodes = _kernel_events(path, x)
    total = sum(e["dur"] for e in nodes) or 1
    per_op: collections.Counter[str] = collections.Counter()
    for e in nodes:
        per_op[e["args"]["op_name"]] += e["dur"]
    convs = [e["name"] for e in nodes if "Conv" in e["args"]["op_name"]]
    first = [e["dur"] for e in nodes if convs and e["name"] == convs[0]]
    calls = max(1, len(first))  # the profiler records every call, warm-up included: one event per call per node
    per_image = lambda us: us / (calls * len(x))  # noqa: E731  profiler durations are µs
    return {"per_op": {op: 100.0 * us / total for op, us in per_op.most_common()},
            "first_conv": 100.0 * sum(first) / total, "first_conv_us_per_image": per_image(sum(first)),
            "kernel_us_per_image": per_image(total)}


def cpu_times(runners: dict[str, Any], batches: dict[int, torch.Tensor], runs: int,
              throughput_runs: int) -> dict[str, dict[str, float]]:
    """Median CPU time of the calling thread per call (µs), interleaved like `cost.benchmark`. With
    one intra-op thread ONNX Runtime computes in the caller's thread, so this is the model's own
    compute, not the time other processes held the core: on a shared 2-core machine the ratios
    from it move far less with the load than wall-clock ones (both are reported)."""
    samples: dict[tuple[str, int], list[float]] = collections.defaultdict(list)
    for n, batch in batches.items():
        for _ in range(runs if n == 1 else throughput_runs):
            for name, run in runners.items():
                t0 = time.thread_time()
                run(batch)
                samples[(name, n)].append(time.thread_time() - t0)
    return {name: {f"cpu_us_b{n}": float(np.median(samples[(name, n)])) * 1e6 for n in batches} for name in runners}


def measure_pair(teacher_arch: str, student_arch: str, shape: tuple[int, int, int], runs: int,
                 throughput_runs: int) -> dict[str, Any]:
    c, h, w = shape
    torch.manual_seed(0)
    nets = {"teacher": build_classifier(teacher_arch, c, (h, w), 10).eval(),
            "student": build_classifier(student_arch, c, (h, w), 10).eval()}
    example = torch.rand(2, c, h, w)
    batches = {n: torch.rand(n, c, h, w) for n in BATCHES}
    out: dict[str, Any] = {"teacher": teacher_arch, "student": student_arch, "input": list(shape), "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        paths: dict[str, Path] = {}
        for role, net in nets.items():
            fp32 = backends.to_onnx(net, example, Path(tmp) / f"{role}.onnx")  # the dynamo graph, as export's INT8
            paths[f"{role} FP32"] = fp32
            paths[f"{role} INT8"] = quantization.quantize_onnx(fp32, Path(tmp) / f"{role}.int8.onnx",
                                                               _random_reader(shape))
            macs = cost.count_macs(net, example[:1])
            for kind in ("FP32", "INT8"):
                out["models"][f"{role} {kind}"] = {"params": count_parameters(net), "macs": macs,
                                                   "onnx_bytes": paths[f"{role} {kind}"].stat().st_size}
            out["models"][f"{role} INT8"]["layers"] = quantization.float_layers_text(paths[f"{role} INT8"])
        runners = {name: backends.onnx_runner(backends.onnx_session(paths[name])) for name in MODELS}
        load_before = os.getloadavg()
        timed = cost.benchmark(runners, batches[1], batches, runs=runs, warmup=10, throughput_runs=throughput_runs)
        out["load_avg_1min"] = [load_before[0], os.getloadavg()[0]]
        for name in MODELS:
            out["models"][name] |= timed[name]
        if torch.get_num_threads() == 1:
            cpu = cpu_times(runners, {n: batches[n] for n in (1, max(BATCHES))}, runs, throughput_runs)
            for name in MODELS:
                out["models"][name] |= cpu[name]
        big = batches[max(BATCHES)].numpy()
        out["profile_b256"] = {name: profile(paths[name], big) for name in MODELS}
    return out


# One convolution (+ ReLU) alone, FP32 vs INT8: where INT8 starts to pay (gandistill.quantization's
# MIN_INT8_REDUCTION) and what the first layers of the default pair cost by themselves.
# (label, in_channels, out_channels, kernel, input side)
LAYERS = (
    ("LeNet-5-half conv1", 1, 3, 5, 28), ("LeNet-5 conv1", 1, 6, 5, 28), ("ResNet stem", 3, 16, 3, 32),
    ("", 2, 8, 5, 14), ("LeNet-5-half conv2", 3, 8, 5, 14), ("", 4, 8, 5, 14), ("LeNet-5 conv2", 6, 16, 5, 14),
    ("", 8, 16, 5, 14), ("ResNet stage-1 conv", 16, 16, 3, 32), ("ResNet stage-2 conv", 32, 32, 3, 16),
)


def measure_layers(rounds: int) -> list[dict[str, Any]]:
    """CPU time per image at batch 256 of one Conv+ReLU, FP32 and INT8 (QDQ, every layer quantised,
    input quantise and output dequantise included: what a layer at the float/int8 border pays)."""
    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, cin, cout, k, side in LAYERS:
            net = torch.nn.Sequential(torch.nn.Conv2d(cin, cout, k, padding=k // 2), torch.nn.ReLU()).eval()
            fp32 = backends.to_onnx(net, torch.rand(2, cin, side, side), Path(tmp) / "layer.onnx")
            int8 = quantization.quantize_onnx(fp32, Path(tmp) / "layer.int8.onnx", _random_reader((cin, side, side)),
                                              min_reduction=0)
            runners = {kind: backends.onnx_runner(backends.onnx_session(p)) for kind, p in (("fp32", fp32),
                                                                                          ("int8", int8))}
            batch = torch.rand(256, cin, side, side)
            us = cpu_times(runners, {256: batch}, rounds, rounds)
            rows.append({"label": label, "in": cin, "out": cout, "kernel": k, "side": side, "reduction": cin * k * k,
                         "fp32_us_per_image": us["fp32"]["cpu_us_b256"] / 256,
                         "int8_us_per_image": us["int8"]["cpu_us_b256"] / 256})
    return rows


def run(runs: int = 200, throughput_runs: int = 15) -> dict[str, Any]:
    started = time.time()
    pairs = {name: measure_pair(*spec, runs=runs, throughput_runs=throughput_runs) for name, spec in PAIRS.items()}
    layers = measure_layers(throughput_runs) if torch.get_num_threads() == 1 else []
    return {"pairs": pairs, "layers": layers, "threads": torch.get_num_threads(), "runs": runs,
            "throughput_runs": throughput_runs, "wall_s": time.time() - started}


def markdown(result: dict[str, Any]) -> list[str]:
    rows = [
        "## Inference: teacher FP32 vs student FP32 vs student INT8 (ONNX Runtime, CPU)", "",
        f"ONNX Runtime {_ort_version()}, CPU execution provider, graph optimisations ORT_ENABLE_ALL, "
        f"{result['threads']} intra-op threads, 1 inter-op thread. All four models of a pair timed interleaved in "
        f"one process after warm-up: {result['runs']} batch-1 calls each for latency, {result['throughput_runs']} "
        "rounds per batch size for throughput (median batch time). Ratios are against the teacher FP32 of the same "
        "pair, measured side by side. Models freshly initialised and INT8 calibrated on random images (speed does "
        "not depend on the values; INT8 accuracy is measured on real data by every pipeline run).", ""]
    for name, pair in result["pairs"].items():
        models = pair["models"]
        teacher = models["teacher FP32"]
        rows += [f"### {name}", "",
                 f"Machine load (1-min average) before/after timing: {pair['load_avg_1min'][0]:.1f} / "
                 f"{pair['load_avg_1min'][1]:.1f} on {os.cpu_count()} cores.", "",
                 "| model | params | MACs/image | ONNX bytes | p50 ms (b1) | p95 ms (b1) | img/s b1 | img/s b32 | "
                 "img/s b256 | latency × teacher | throughput b256 × teacher |",
                 "|---|---|---|---|---|---|---|---|---|---|---|"]
        cpu_rows = ["", "CPU time of the calling thread (1 intra-op thread: the model's own compute, insensitive to "
                    "the time other processes held the core), medians of the same numbers of interleaved calls:", "",
                    "| model | µs per call (b1) | µs per image (b256) | b1 × teacher | b256 × teacher |",
                    "|---|---|---|---|---|"]
        for model, v in models.items():
            if "cpu_us_b1" not in v:
                continue
            cpu_rows.append(f"| {model} | {v['cpu_us_b1']:.1f} | {v['cpu_us_b256'] / 256:.2f} | "
                            f"{teacher['cpu_us_b1'] / v['cpu_us_b1']:.2f}× | "
                            f"{teacher['cpu_us_b256'] / v['cpu_us_b256']:.2f}× |")
        for model, v in models.items():
            rows.append(
                f"| {model} | {v['params']:,} | {v['macs']:,} | {v['onnx_bytes']:,} | {v['latency_p50_ms']:.3f} | "
                f"{v['latency_p95_ms']:.3f} | {v['throughput_ips_b1']:,.0f} | {v['throughput_ips_b32']:,.0f} | "
                f"{v['throughput_ips_b256']:,.0f} | {teacher['latency_p50_ms'] / v['latency_p50_ms']:.2f}× | "
                f"{v['throughput_ips_b256'] / teacher['throughput_ips_b256']:.2f}× |")
        if len(cpu_rows) > 5:
            rows += cpu_rows
        prof = pair["profile_b256"]
        shares = ", ".join(f"{m} {p['first_conv']:.0f} % ({p.get('first_conv_us_per_image', float('nan')):.2f} "
                           f"of {p.get('kernel_us_per_image', float('nan')):.2f} µs/image)" for m, p in prof.items())
        layers = "; ".join(f"{m}: {models[m]['layers']}" for m in models if "layers" in models[m])
        rows += ["", f"INT8 layers — {layers}.", "",
                 "Where the time goes at batch 256 (share of ONNX Runtime kernel time per operator type, from its "
                 f"profiler, wall time with profiling on; the first convolution alone: {shares}).", "",
                 "| student FP32 | | student INT8 | |", "|---|---|---|---|"]
        fp32, int8 = (list(pair["profile_b256"][k]["per_op"].items())[:6] for k in ("student FP32", "student INT8"))
        for i in range(max(len(fp32), len(int8))):
            left = fp32[i] if i < len(fp32) else ("", float("nan"))
            right = int8[i] if i < len(int8) else ("", float("nan"))
            rows.append(f"| {left[0]} | {left[1]:.1f} % | {right[0]} | {right[1]:.1f} % |")
        rows.append("")
    if result.get("layers"):
        rows += ["### One convolution alone: where INT8 pays", "",
                 f"Conv+ReLU, batch 256, CPU time per image (median of {result['throughput_runs']} interleaved calls); "
                 "INT8 includes quantising its input and dequantising its output; padding k // 2 (output the input's "
                 "size). Reduction size = in_channels × "
                 f"k × k; the INT8 export keeps leading layers below {quantization.MIN_INT8_REDUCTION} in FP32.", "",
                 "| layer | in → out, k, input | reduction | FP32 µs/image | INT8 µs/image | INT8 × FP32 speed |",
                 "|---|---|---|---|---|---|"]
        for r in result["layers"]:
            shape = f"{r['in']} → {r['out']}, {r['kernel']}×{r['kernel']}, {r['side']}×{r['side']}"
            fp32, int8 = r["fp32_us_per_image"], r["int8_us_per_image"]
            rows.append(f"| {r['label']} | {shape} | {r['reduction']} | {fp32:.2f} | {int8:.2f} | {fp32 / int8:.2f}× |")
        rows.append("")
    return rows


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__
