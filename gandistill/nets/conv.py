"""A Conv2d whose input gradient skips oneDNN where oneDNN is slow: few input channels.

PyTorch runs every float convolution on the CPU through oneDNN, forward and backward. For a
layer that reads raw images (1 or 3 channels), oneDNN's *input*-gradient kernel — what a
generator trained through a frozen classifier needs (the cGAN's teacher guidance, data-free
distillation, translators) — was measured 4–8× slower than PyTorch's own im2col + GEMM path,
while its forward and weight gradient are as fast or faster (bench/results/conv-algorithms.md).
`Conv2d` keeps oneDNN for those and computes only the input gradient the other way; its forward,
weights, state dict and exports are nn.Conv2d's. On CUDA nothing changes (the switch is CPU's).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

aten = torch.ops.aten

# Input channels up to which the input gradient goes through im2col + GEMM (measured: 1 and 3).
FEW_CHANNELS = 3


class _ImageInputConv(torch.autograd.Function):
    """conv2d forward as usual; backward: the input gradient with oneDNN off, the weight and
    bias gradients with it on (each path where it was measured faster)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int],
                groups: int) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.settings = (stride, padding, dilation, groups)
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.settings
        need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
        common = ([weight.shape[0]] if ctx.has_bias else None, stride, padding, dilation, False, (0, 0), groups)
        grad_input = grad_weight = grad_bias = None
        if need_input:
            onednn = torch.backends.mkldnn.enabled
            torch.backends.mkldnn.enabled = False
            try:
                grad_input = aten.convolution_backward(grad, x, weight, *common, (True, False, False))[0]
            finally:
                torch.backends.mkldnn.enabled = onednn
        if need_weight or need_bias:
            _, grad_weight, grad_bias = aten.convolution_backward(
                grad, x, weight, *common, (False, need_weight, need_bias and ctx.has_bias))
        return grad_input, grad_weight, grad_bias, None, None, None, None


class Conv2d(nn.Conv2d):
    """nn.Conv2d; on the CPU, with ≤ FEW_CHANNELS input channels and an input that needs its
    gradient, the input gradient is computed by im2col + GEMM instead of oneDNN."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():  # a scripted classifier keeps nn.Conv2d's forward
            return self._conv_forward(x, self.weight, self.bias)
        else:
            return self._eager_forward(x)

    @torch.jit.unused
    def _eager_forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.requires_grad and torch.is_grad_enabled() and x.device.type == "cpu" and self.in_channels <= FEW_CHANNELS
                and self.padding_mode == "zeros" and isinstance(self.padding, tuple)):
            return _ImageInputConv.apply(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                                         self.groups)
        return self._conv_forward(x, self.weight, self.bias)
