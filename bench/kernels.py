"""What this CPU can compute: the sustained FLOP/s of a training step's own compute kernels.

`record(fn)` runs one call of `fn` (e.g. one training step) and records every matmul and
convolution ATen executes in it — forward and backward, with the exact shapes, strides and
dtypes — plus the FLOPs PyTorch's own counter assigns to each. `floor(records)` then replays
each distinct kernel alone, on random data of the same shapes, in every layout / number format
worth trying (as recorded, channels_last; FP32 and BF16), and keeps the fastest time of each.

The sum of those best times is the step's *kernel floor*: what the step would cost if it did
nothing but its matmuls and convolutions, each at the best speed this CPU and library reach
on that very shape. Everything a real step spends beyond it — element-wise ops, pooling,
losses, the optimiser, data movement, Python — is overhead that `bench.limits` breaks down.

Times are the calling thread's CPU time at 1 thread (the work itself, barely moved by other
processes on a shared machine); a 2-core bound is that divided by 2 (perfect parallelism, which
nothing beats).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

aten = torch.ops.aten
COMPUTE_OPS = {aten.convolution.default, aten.convolution_backward.default, aten.mm.default,
               aten.addmm.default, aten.bmm.default, aten.baddbmm.default}


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: torch.dtype

    def make(self, dtype: torch.dtype | None = None, channels_last: bool = False) -> torch.Tensor:
        """Random values in a tensor of this shape and stride (overlapping and broadcast
        strides included: the storage is sized for the strides, then viewed)."""
        dtype = dtype or self.dtype
        if not self.dtype.is_floating_point:
            return torch.zeros(self.shape, dtype=self.dtype)
        if channels_last and len(self.shape) == 4:
            return torch.randn(self.shape, dtype=dtype).contiguous(memory_format=torch.channels_last)
        extent = 1 + sum((n - 1) * s for n, s in zip(self.shape, self.stride, strict=True) if n > 0)
        return torch.randn(max(extent, 1), dtype=dtype).as_strided(self.shape, self.stride)


@dataclass
class Kernel:
    """One distinct matmul / convolution call of a step: its op, arguments and count per step."""

    op: Any
    args: tuple[Any, ...]
    flops: int
    calls: int = 1
    best_s: dict[str, float] = field(default_factory=dict)  # variant → seconds per call

    @property
    def name(self) -> str:
        return str(self.op).removeprefix("aten.").removesuffix(".default")

    def describe(self) -> str:
        shapes = ["×".join(map(str, a.shape)) for a in self.args if isinstance(a, TensorSpec)]
        return f"{self.name}({', '.join(shapes)})"

    def materialise(self, dtype: torch.dtype | None, channels_last: bool) -> tuple[Any, ...]:
        return tuple(a.make(dtype, channels_last) if isinstance(a, TensorSpec) else a for a in self.args)


def _spec(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return TensorSpec(tuple(value.shape), tuple(value.stride()), value.dtype)
    if isinstance(value, list | tuple):  # tuples: hashable, and ATen takes them for int[] arguments
        return tuple(_spec(v) for v in value)
    return value


def _flops(op: Any, args: tuple[Any, ...], out: Any) -> int:
    registry = torch.utils.flop_counter.flop_registry  # PyTorch's own FLOP formulas (shapes in, count out)
    if op.overloadpacket not in registry:
        return 0
    return int(registry[op.overloadpacket](*args, out_val=out))


class _Recorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.kernels: dict[tuple[Any, ...], Kernel] = {}

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func in COMPUTE_OPS and not kwargs:
            key = (func, _spec(args))
            if key in self.kernels:
                self.kernels[key].calls += 1
            else:
                self.kernels[key] = Kernel(func, key[1], _flops(func, args, out))
        return out


def record(fn: Callable[[], Any]) -> tuple[list[Kernel], int]:
    """The distinct compute kernels of one call of fn, and its total FLOPs (PyTorch's counter)."""
    with _Recorder() as recorder, FlopCounterMode(display=False) as counter:
        fn()
    return list(recorder.kernels.values()), int(counter.get_total_flops())


# name → (number format, channels_last, oneDNN on). Without oneDNN a convolution runs as
# im2col + MKL GEMM (or NNPACK), which can beat oneDNN on very few channels.
VARIANTS = {"fp32": (None, False, True), "fp32 channels_last": (None, True, True), "fp32 im2col": (None, False, False),
            "bf16": (torch.bfloat16, False, True), "bf16 channels_last": (torch.bfloat16, True, True)}
FP32 = tuple(v for v, (dtype, _, _) in VARIANTS.items() if dtype is None)
BF16 = tuple(v for v, (dtype, _, _) in VARIANTS.items() if dtype is torch.bfloat16)


def _cpu_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """Median CPU time of the calling thread per call (1 intra-op thread: the call's own work)."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start = time.thread_time()
        fn()
        times.append(time.thread_time() - start)
    return statistics.median(times)


def _bound_call(op: Any, args: tuple[Any, ...]) -> Callable[[], Any]:
    return lambda: op(*args)


def measure(kernels: list[Kernel], min_seconds: float = 0.02) -> None:
    """Fill each kernel's best_s for every variant that runs (at the caller's thread count)."""
    for kernel in kernels:
        is_conv = any(isinstance(a, TensorSpec) and len(a.shape) == 4 for a in kernel.args)
        for variant, (dtype, channels_last, onednn) in VARIANTS.items():
            if (channels_last or not onednn) and not is_conv:
                continue  # a matmul has no 4-D layout to change and does not run on oneDNN
            try:
                call = _bound_call(kernel.op, kernel.materialise(dtype, channels_last))
                with torch.backends.mkldnn.flags(enabled=onednn):
                    once = _cpu_seconds(call, 1)
                    repeats = max(5, min(200, int(min_seconds / max(once, 1e-6))))
                    kernel.best_s[variant] = _cpu_seconds(call, repeats)
            except RuntimeError:  # a kernel without this variant (e.g. a dtype the op refuses)
                continue


def floor_seconds(kernels: list[Kernel], variants: tuple[str, ...]) -> float:
    """Seconds per step of the kernels alone, each at its fastest of `variants`."""
    return sum(k.calls * min(k.best_s[v] for v in variants if v in k.best_s) for k in kernels
               if any(v in k.best_s for v in variants))


def gemm_rate(dtype: torch.dtype, n: int = 1024, seconds: float = 1.0) -> tuple[float, float]:
    """(GFLOP/s by wall time, GFLOP/s by the calling thread's CPU time) of an n×n×n matmul
    at the current thread count — the machine's sustained peak for large, friendly shapes."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    walls, cpus = [], []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(walls) < 5:
        w, c = time.perf_counter(), time.thread_time()
        a @ b
        walls.append(time.perf_counter() - w)
        cpus.append(time.thread_time() - c)
    flops = 2 * n**3
    return flops / statistics.median(walls) / 1e9, flops / statistics.median(cpus) / 1e9
