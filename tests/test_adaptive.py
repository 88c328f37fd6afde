"""Student-adaptive generation: G' moves toward teacher–student disagreement, D holds it back."""

from __future__ import annotations

import torch
from torch import nn

from gandistill.adaptive import AdaptiveGenerator


class ShiftGenerator(nn.Module):
    """1×1×1 'images' x = b + 0.01·z: one learnable position b."""

    num_classes, nz = 2, 1

    def __init__(self):
        super().__init__()
        self.b = nn.Parameter(torch.tensor(0.1))

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (self.b + 0.01 * z).view(-1, 1, 1, 1)


class Linear1(nn.Module):
    def __init__(self, slope: float):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(slope))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x.flatten(1)[:, :1] * self.w
        return torch.cat([v, -v], dim=1)


class CentredDiscriminator(nn.Module):
    """Realness −x²: the 'data' sits at 0."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v = x.flatten(1)[:, 0]
        return -(v**2), v[:, None]


def run(disc_weight: float, steps: int = 80) -> tuple[float, nn.Module]:
    torch.manual_seed(0)
    teacher, student = Linear1(5.0), Linear1(0.0)  # the student says 50/50 everywhere: gap grows with |x|
    adaptive = AdaptiveGenerator(ShiftGenerator(), CentredDiscriminator(), teacher, lr=0.05, temperature=1.0,
                                 disc_weight=disc_weight)
    for _ in range(steps):
        adaptive.step(student, 16, torch.device("cpu"))
    return float(adaptive.generator.b.detach()), student


def test_without_the_discriminator_g_prime_runs_to_where_teacher_and_student_disagree_most():
    b, student = run(disc_weight=0.0)
    assert abs(b) > 0.5  # from 0.1: the KL between 5x-logits and the student's uniform grows with |x|
    assert float(student.w.detach()) == 0.0 and student.w.grad is None  # the student itself is never updated


def test_the_frozen_discriminator_keeps_g_prime_near_the_data():
    b, _ = run(disc_weight=50.0)
    assert abs(b) < 0.2


def test_the_original_generator_is_left_untouched():
    original = ShiftGenerator()
    adaptive = AdaptiveGenerator(original, CentredDiscriminator(), Linear1(5.0), lr=0.05, temperature=1.0,
                                 disc_weight=0.0)
    for _ in range(10):
        adaptive.step(Linear1(0.0), 8, torch.device("cpu"))
    assert float(original.b.detach()) == float(torch.tensor(0.1)) and float(adaptive.generator.b.detach()) != 0.1
