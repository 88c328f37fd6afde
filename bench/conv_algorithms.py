"""oneDNN or im2col + GEMM for the convolutions gandistill's networks have (issue #23).

    python -m bench.conv_algorithms [--batch 128 384]

PyTorch runs every float convolution on the CPU through oneDNN. On the first layers of small
classifiers — 1 or 3 input channels — oneDNN's input-gradient kernel was measured 4× slower than
PyTorch's own im2col + GEMM path (bench/results/limits.md, the GAN's teacher-guidance step).
This table times each direction of each first-layer shape (forward, input gradient, weight
gradient) both ways, 1 thread, the calling thread's CPU time (median), so the rule in
`gandistill.nets.conv` is a measured one. Writes bench/results/conv-algorithms.md/.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from bench import kernels
from bench.quality import git_commit, machine

RESULTS = Path(__file__).resolve().parent / "results"
aten = torch.ops.aten

# (name, C_in, C_out, kernel, padding, stride, side): the first and second convolutions of the
# networks `auto` picks (LeNet-5 / -half at 28 px, ResNet stems at 32 px) and of the conv cGAN's D.
SHAPES = [
    ("LeNet-5 conv1", 1, 6, 5, 2, 1, 28), ("LeNet-5-half conv1", 1, 3, 5, 2, 1, 28),
    ("LeNet-5 conv2", 6, 16, 5, 0, 1, 14), ("LeNet-5-half conv2", 3, 8, 5, 0, 1, 14),
    ("ResNet stem, grey", 1, 16, 3, 1, 1, 32), ("ResNet stem, colour", 3, 16, 3, 1, 1, 32),
    ("ResNet 16→16", 16, 16, 3, 1, 1, 32), ("conv D conv1, colour", 3, 32, 4, 1, 2, 32),
]


def directions(cin: int, cout: int, k: int, pad: int, stride: int, side: int, batch: int) -> dict[str, kernels.Kernel]:
    x = torch.randn(batch, cin, side, side)
    w = torch.randn(cout, cin, k, k)
    y = aten.convolution(x, w, None, (stride, stride), (pad, pad), (1, 1), False, (0, 0), 1)
    conv = (x, w, None, (stride, stride), (pad, pad), (1, 1), False, (0, 0), 1)
    back = (y, x, w, [cout], (stride, stride), (pad, pad), (1, 1), False, (0, 0), 1)
    spec = kernels._spec
    flops = 2 * y.numel() * cin * k * k
    return {"forward": kernels.Kernel(aten.convolution.default, spec(conv), flops),
            "input gradient": kernels.Kernel(aten.convolution_backward.default, spec((*back, (True, False, False))),
                                             flops),
            "weight gradient": kernels.Kernel(aten.convolution_backward.default,
                                              spec((*back, (False, True, True))), flops)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[128, 384])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    for batch in args.batch:
        for name, *shape in SHAPES:
            for direction, kernel in directions(*shape, batch).items():
                kernels.measure([kernel])
                onednn, im2col = kernel.best_s["fp32"], kernel.best_s["fp32 im2col"]
                rows.append({"layer": name, "shape": shape, "batch": batch, "direction": direction,
                             "mflop": kernel.flops / 1e6, "onednn_us": 1e6 * onednn, "im2col_us": 1e6 * im2col})
                print(f"[conv] b{batch} {name} {direction}: oneDNN {1e6 * onednn:.0f} µs, im2col {1e6 * im2col:.0f} µs",
                      file=sys.stderr, flush=True)
    report = {"command": "python -m bench.conv_algorithms " + " ".join(sys.argv[1:] if argv is None else argv),
              "machine": machine(), "git_commit": git_commit(), "load_average_before": load_before,
              "load_average_after": os.getloadavg(), "updated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "conv-algorithms.json").write_text(json.dumps(report, indent=2))
    lines = ["# oneDNN or im2col + GEMM, per convolution and direction", "",
             f"Command: `{report['command']}` — commit {report['git_commit']} — {report['machine']} — 1 thread, "
             f"CPU time of the calling thread (median) — load {load_before[0]:.1f} before, "
             f"{report['load_average_after'][0]:.1f} after — {report['updated']}", "",
             "| layer (C_in→C_out, k, side) | batch | direction | MFLOP | oneDNN µs | im2col µs | im2col / oneDNN |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        cin, cout, k, _, _, side = r["shape"]
        lines.append(f"| {r['layer']} ({cin}→{cout}, {k}×{k}, {side} px) | {r['batch']} | {r['direction']} | "
                     f"{r['mflop']:.1f} | {r['onednn_us']:.0f} | {r['im2col_us']:.0f} | "
                     f"{r['im2col_us'] / r['onednn_us']:.2f} |")
    (RESULTS / "conv-algorithms.md").write_text("\n".join(lines) + "\n")
    print((RESULTS / "conv-algorithms.md").read_text())


if __name__ == "__main__":
    main()
