"""Inference cost: parameters, multiply-accumulates, size and measured speed.

Speed is measured honestly: every (model, backend) pair is timed in the same process,
after warm-up, with calls *interleaved* round-robin so that slow drift of the machine
(thermal state, a noisy neighbour on a shared 2-core box) hits all pairs alike instead of
whichever happened to run last.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

Runner = Callable[[torch.Tensor], Any]


def count_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass over `example`, per sample.

    FlopCounterMode counts 2 FLOPs per MAC for matmul/conv (its convention), so MACs =
    FLOPs / 2. Element-wise ops (ReLU, pooling, normalisation) are not counted — the usual
    convention of MAC tables in the compression literature."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(example)
    return int(counter.get_total_flops() // 2 // max(1, example.shape[0]))


def benchmark(runners: dict[str, Runner], single: torch.Tensor, batches: dict[int, torch.Tensor], runs: int = 50,
              warmup: int = 5, throughput_runs: int | None = None) -> dict[str, dict[str, float]]:
    """Latency (batch 1; p50/p95 in ms) and throughput (images/s at each batch size in `batches`)
    for each named runner, calls interleaved round-robin after `warmup` untimed calls per runner.

    Keys per runner: latency_p50_ms, latency_p95_ms, throughput_ips_b<N> for every N, and
    throughput_ips (= at the largest N). Batch 1 throughput comes from its own timed loop, not
    from the latency samples, so every throughput uses the same median-of-rounds estimate."""
    throughput_runs = throughput_runs or max(3, runs // 10)
    with torch.inference_mode():
        for run in runners.values():
            for _ in range(warmup):
                run(single)
            for batch in batches.values():
                run(batch)
        lat: dict[str, list[float]] = {k: [] for k in runners}
        for _ in range(runs):
            for name, run in runners.items():
                t0 = time.perf_counter()
                run(single)
                lat[name].append(time.perf_counter() - t0)
        bulk: dict[tuple[str, int], list[float]] = {(k, n): [] for k in runners for n in batches}
        for _ in range(throughput_runs):
            for n, batch in batches.items():
                for name, run in runners.items():
                    t0 = time.perf_counter()
                    run(batch)
                    bulk[(name, n)].append(time.perf_counter() - t0)
    out = {}
    largest = max(batches)
    for name in runners:
        samples = np.array(lat[name]) * 1000
        out[name] = {"latency_p50_ms": float(np.percentile(samples, 50)),
                     "latency_p95_ms": float(np.percentile(samples, 95))}
        for n in batches:  # median batch time: robust to one descheduled call
            out[name][f"throughput_ips_b{n}"] = float(n / np.median(bulk[(name, n)]))
        out[name]["throughput_ips"] = out[name][f"throughput_ips_b{largest}"]
    return out
