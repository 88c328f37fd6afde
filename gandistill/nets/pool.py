"""2×2 max pooling that is fast on the CPU for the few-channel maps of small classifiers.

PyTorch's CPU `max_pool2d` goes through `max_pool2d_with_indices` on every call, a kernel that
is slow on few channels: on LeNet-5's 6×28×28 maps it cost ~10× taking the maximum of the
four strided sub-grids, and it was the largest single operator of a distillation step
(bench/results/limits.md). `max_pool2x2` takes that maximum instead and, only when a gradient is
wanted, the index of each window's first maximum in row-major order — `max_pool2d`'s own rule —
for `max_pool2d`'s own backward kernel: values and gradients are `max_pool2d`'s. Exports and
compilers (torch.export, ONNX, TorchScript) and other devices see `F.max_pool2d` itself.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def _quarters(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The four strided sub-grids of the 2×2 windows, in window order (rows dropped past an even size, as
    max_pool2d floors)."""
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    return x[..., 0:h:2, 0:w:2], x[..., 0:h:2, 1:w:2], x[..., 1:h:2, 0:w:2], x[..., 1:h:2, 1:w:2]


class _MaxPool2x2(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        a, b, c, d = _quarters(x)
        out = torch.maximum(torch.maximum(a, b), torch.maximum(c, d))
        if ctx.needs_input_grad[0]:  # max_pool2d's indices: the first maximum of each window, row-major
            # offset in the window: 0 if a is the max, else 1 if b, else width if c, else width + 1
            width = x.shape[-1]
            not_a, not_b, not_c = (a != out).long(), (b != out).long(), (c != out).long()
            offset = not_a * (1 + not_b * (width - 1 + not_c))
            rows = torch.arange(out.shape[-2], device=x.device)[:, None] * (2 * width)
            ctx.save_for_backward(x, offset + rows + torch.arange(out.shape[-1], device=x.device) * 2)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        x, indices = ctx.saved_tensors
        return torch.ops.aten.max_pool2d_with_indices_backward(grad, x, [2, 2], [2, 2], [0, 0], [1, 1], False,
                                                               indices)


def max_pool2x2(x: torch.Tensor) -> torch.Tensor:
    """F.max_pool2d(x, 2), computed from strided maxima on the CPU in eager mode."""
    if torch.jit.is_scripting():  # a scripted classifier (e.g. a user's TorchScript export) keeps the op
        return F.max_pool2d(x, 2)
    else:
        return _eager_max_pool2x2(x)


@torch.jit.unused
def _eager_max_pool2x2(x: torch.Tensor) -> torch.Tensor:
    if (x.device.type != "cpu" or x.dim() != 4 or torch.jit.is_tracing() or torch.compiler.is_compiling()
            or torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export()):
        return F.max_pool2d(x, 2)
    return _MaxPool2x2.apply(x)
