"""Quantisation-aware distillation (`distill.qat: true`): fake-quantise the student during the last
`distill.qat_fraction` of its steps, so that its weights settle where INT8 rounding costs least —
still trained on the method's own target (the teacher's soft labels for gan / kd). This is the
distill-for-quantisation recipe of Polino et al., "Model compression via distillation and
quantization" (ICLR 2018) and Mishra & Marr, "Apprentice" (ICLR 2018), applied as fine-tuning.

What is simulated mirrors the INT8 export (`gandistill.quantization`):

    weights of every Conv2d / Linear:  w̃ = s_c · clamp(round(w / s_c), −127, 127),  s_c = max|w_c| / 127
                                       (symmetric, per output channel c)
    inputs of every Conv2d / Linear and the logits:
                                       x̃ = s · (clamp(round(x / s) + z, 0, 255) − z),  s = (max − min) / 255
                                       (asymmetric uint8 per tensor; min/max a running average, as
                                        calibration's MinMax would see them)

Gradients pass straight through the rounding (the STE of torch.fake_quantize_*). Hooks, not module
swaps: the student's state_dict, checkpoints and FP32 export are untouched, and `remove()` leaves
plain float layers — export then quantises them for real. BatchNorm is not folded into the
preceding convolution during the simulation (ONNX Runtime folds it before quantising), so for BN
students the weight rounding is simulated approximately; LeNet students have no BatchNorm.
With `distill.student_ema` the hooks sit on the trained student, not on its EMA copy: the copy
(what is evaluated and returned) averages fake-quant-trained weights but is scored in float.
Data-parallel (torchrun): the running min/max are those of the global batch (one all-reduce per
observed tensor), so every rank rounds with the same scales one process would use.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gandistill.distributed import World, global_range

MOMENTUM = 0.01  # running min/max update per training batch (torch's MovingAverageMinMaxObserver)


def fake_quant_weight(w: torch.Tensor) -> torch.Tensor:
    """Symmetric int8 rounding per output channel (axis 0), straight-through gradients."""
    scale = w.detach().abs().flatten(1).amax(1).clamp_min(1e-8) / 127.0
    zero = torch.zeros(w.shape[0], dtype=torch.int32, device=w.device)
    return torch.fake_quantize_per_channel_affine(w, scale.float(), zero, 0, -127, 127)


class _Range:
    """Running min/max of a tensor stream (over all ranks' shards), and its uint8 fake quantisation."""

    def __init__(self, world: World | None = None) -> None:
        self.world = world or World()
        self.low: float | None = None
        self.high: float | None = None

    def __call__(self, x: torch.Tensor, training: bool) -> torch.Tensor:
        if training or self.low is None:
            low, high = global_range(x, self.world)
            if self.low is None or self.high is None:
                self.low, self.high = low, high
            else:
                self.low += MOMENTUM * (low - self.low)
                self.high += MOMENTUM * (high - self.high)
        low, high = min(self.low, 0.0), max(self.high, 0.0)  # zero must be exactly representable
        scale = max(high - low, 1e-8) / 255.0
        zero = int(min(255, max(0, round(-low / scale))))
        return torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, 255)


def _conv_forward(self: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    return self._conv_forward(x, fake_quant_weight(self.weight), self.bias)


def _linear_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, fake_quant_weight(self.weight), self.bias)


class FakeQuant:
    """Fake quantisation attached to a model's Conv2d / Linear layers until `remove()`."""

    def __init__(self, model: nn.Module, world: World | None = None):
        self.model = model
        layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
        if not layers:
            raise ValueError("distill.qat: the student has no Conv2d or Linear layer to quantise")
        self._handles: list[Any] = []
        self._patched: list[nn.Module] = []
        for layer in layers:
            seen = _Range(world)
            self._handles.append(layer.register_forward_pre_hook(
                lambda mod, args, seen=seen: (seen(args[0], mod.training), *args[1:])))
            layer.forward = types.MethodType(_conv_forward if isinstance(layer, nn.Conv2d) else _linear_forward,
                                             layer)
            self._patched.append(layer)
        logits = _Range(world)
        self._handles.append(model.register_forward_hook(lambda mod, args, out: logits(out, mod.training)))

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        for layer in self._patched:
            del layer.forward  # the instance attribute: the class's float forward is back
        self._handles, self._patched = [], []


class LastSteps:
    """Attach `FakeQuant` to `model` from step `start` on (also after a resume past `start`)."""

    def __init__(self, model: nn.Module, total_steps: int, fraction: float, world: World | None = None):
        self.model = model
        self.world = world
        self.start = max(0, min(total_steps - 1, round(total_steps * (1.0 - fraction))))
        self.active: FakeQuant | None = None

    def wrap(self, step_fn: Callable[[int], dict[str, Any]]) -> Callable[[int], dict[str, Any]]:
        def step(i: int) -> dict[str, Any]:
            if i >= self.start and self.active is None:
                self.active = FakeQuant(self.model, self.world)
            return step_fn(i)

        return step

    def remove(self) -> None:
        if self.active is not None:
            self.active.remove()
            self.active = None
