"""Each loss against values computed by hand (or from its defining formula in numpy)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gandistill import losses


def _softmax(v, t=1.0):
    e = np.exp(np.asarray(v, float) / t)
    return e / e.sum()


def test_kd_kl_matches_the_formula_with_t_squared():
    s, t = [1.0, 2.0, 0.5], [2.0, 0.0, 1.0]
    p_t, p_s = _softmax(t, 2.0), _softmax(s, 2.0)
    expected = 4.0 * float((p_t * (np.log(p_t) - np.log(p_s))).sum())
    got = losses.kd_kl(torch.tensor([s]), torch.tensor([t]), temperature=2.0)
    assert float(got) == pytest.approx(expected, rel=1e-5)
    assert float(losses.kd_kl(torch.tensor([t]), torch.tensor([t]), 3.0)) == pytest.approx(0.0, abs=1e-7)


def test_kd_kl_per_sample_gives_each_row_and_averages_to_kd_kl():
    s = torch.tensor([[1.0, 2.0, 0.5], [0.0, 0.0, 0.0]])
    t = torch.tensor([[2.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    p_t, p_s = _softmax(t[0], 2.0), _softmax(s[0], 2.0)
    per = losses.kd_kl_per_sample(s, t, temperature=2.0)
    assert per.shape == (2,)
    assert float(per[0]) == pytest.approx(4.0 * float((p_t * (np.log(p_t) - np.log(p_s))).sum()), rel=1e-5)
    assert float(per[1]) == pytest.approx(0.0, abs=1e-7)  # identical rows: no gap
    assert float(per.mean()) == pytest.approx(float(losses.kd_kl(s, t, 2.0)), rel=1e-6)


def test_kd_objective_mixes_soft_and_hard_terms():
    s, t, y = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([0])
    ce = -math.log(_softmax([1.0, 0.0])[0])
    soft = float(losses.kd_kl(s, t, 1.0))
    assert float(losses.kd_objective(s, t, y, 1.0, 0.25)) == pytest.approx(0.25 * soft + 0.75 * ce, rel=1e-5)
    assert float(losses.kd_objective(s, t, None, 1.0, 0.25)) == pytest.approx(soft, rel=1e-6)


def test_logit_l1_and_fitnet_hint():
    assert float(losses.logit_l1(torch.tensor([[1.0, -1.0]]), torch.tensor([[0.0, 1.0]]))) == pytest.approx(1.5)
    assert float(losses.fitnet_hint(torch.tensor([[1.0, 3.0]]), torch.tensor([[0.0, 1.0]]))) == pytest.approx(
        0.5 * (1 + 4) / 2)


def test_gan_losses_by_hand():
    real, fake = torch.tensor([2.0]), torch.tensor([-1.0])
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    assert float(losses.d_loss_bce(real, fake)) == pytest.approx(-math.log(sig(2)) - math.log(1 - sig(-1)), rel=1e-6)
    assert float(losses.g_loss_bce(fake)) == pytest.approx(-math.log(sig(-1)), rel=1e-6)
    assert float(losses.g_loss_bce(fake, saturating=True)) == pytest.approx(math.log(1 - sig(-1)), rel=1e-6)
    assert float(losses.d_loss_hinge(torch.tensor([0.5, 2.0]), torch.tensor([-2.0, 0.0]))) == pytest.approx(
        (0.5 + 0) / 2 + (0 + 1) / 2)
    assert float(losses.g_loss_hinge(torch.tensor([1.0, 3.0]))) == pytest.approx(-2.0)


def test_feature_matching_is_squared_mean_difference_per_dim():
    real = torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # mean (2, 3)
    fake = torch.tensor([[0.0, 0.0], [2.0, 2.0]], requires_grad=True)  # mean (1, 1)
    value = losses.feature_matching(real, fake)
    assert float(value) == pytest.approx((1 + 4) / 2)
    value.backward()
    assert fake.grad is not None


def test_rkd_distance_and_angle_vanish_for_scaled_copies_and_not_otherwise():
    torch.manual_seed(0)
    t = torch.randn(6, 4)
    assert float(losses.rkd_distance(3 * t, t)) == pytest.approx(0.0, abs=1e-6)
    assert float(losses.rkd_angle(3 * t, t)) == pytest.approx(0.0, abs=1e-6)
    assert float(losses.rkd_distance(torch.randn(6, 4), t)) > 1e-3


def test_rkd_distance_by_hand_three_points():
    t = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])  # distances 3, 4, 5 → mean 4
    s = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # distances 1, 1, √2 → mean (2+√2)/3
    mu_s = (2 + math.sqrt(2)) / 3
    diffs = [1 / mu_s - 3 / 4, 1 / mu_s - 4 / 4, math.sqrt(2) / mu_s - 5 / 4]
    huber = [0.5 * d * d if abs(d) < 1 else abs(d) - 0.5 for d in diffs]
    expected = 2 * sum(huber) / 9  # each pair twice in the 3×3 matrix, diagonal 0
    assert float(losses.rkd_distance(s, t)) == pytest.approx(expected, rel=1e-4)


def test_information_entropy_and_coverage():
    balanced = torch.zeros(4, 4)  # uniform softmax
    assert float(losses.information_entropy(balanced)) == pytest.approx(-math.log(4), rel=1e-5)
    assert float(losses.class_coverage(torch.softmax(balanced, 1))) == pytest.approx(1.0, abs=1e-6)
    collapsed = torch.tensor([[1.0, 0.0, 0.0]] * 5)
    assert float(losses.class_coverage(collapsed)) == pytest.approx(0.0, abs=1e-5)


def test_total_variation_by_hand():
    # one 1×2×2 image [[0, 1], [3, 5]]: vertical |3-0|, |5-1| → mean 3.5; horizontal |1-0|, |5-3| → mean 1.5
    x = torch.tensor([[[[0.0, 1.0], [3.0, 5.0]]]])
    assert float(losses.total_variation(x)) == pytest.approx(3.5 + 1.5)
    assert float(losses.total_variation(torch.full((2, 3, 4, 4), 0.7))) == 0.0  # flat images: no penalty


def test_dafl_terms():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    expected = (-math.log(_softmax([2, 0])[0]) - math.log(_softmax([0, 1])[1])) / 2
    assert float(losses.dafl_onehot(logits)) == pytest.approx(expected, rel=1e-6)
    assert float(losses.dafl_activation(torch.tensor([[1.0, -3.0]]))) == pytest.approx(-2.0)


def test_teacher_guidance_and_mode_seeking():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # p = (1/4, 3/4)
    assert float(losses.teacher_guidance(logits, torch.tensor([1]))) == pytest.approx(-math.log(0.75), rel=1e-6)
    images = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    z = torch.tensor([[0.0], [2.0]])
    assert float(losses.mode_seeking(images, z)) == pytest.approx(2.0 / 1.0, rel=1e-4)


def test_output_discriminator_is_bce_teacher_real_student_fake():
    assert float(losses.output_discriminator_loss(torch.tensor([0.0]), torch.tensor([0.0]))) == pytest.approx(
        2 * math.log(2), rel=1e-6)


def test_synthetic_selection_metric_punishes_collapsed_banks():
    from gandistill.stages.distill.selection import macro_agreement

    teacher = torch.tensor([0, 0, 0, 0])
    assert macro_agreement(teacher.clone(), teacher, 4) == pytest.approx(0.25)  # one class of four
    balanced = torch.tensor([0, 1, 2, 3])
    assert macro_agreement(torch.tensor([0, 1, 2, 0]), balanced, 4) == pytest.approx(0.75)


def test_attention_transfer_by_hand_and_its_invariances():
    # one sample, 2×1 positions: student energy Σ_c A² ∝ (1, 0), teacher ∝ (1, 1) → q_S = (1, 0),
    # q_T = (1/√2, 1/√2); L = ((1 − 1/√2)² + (1/√2)²) / 2 = 1 − 1/√2
    student = torch.tensor([[[[1.0], [0.0]]]])  # N=1, C=1, H=2, W=1
    teacher = torch.tensor([[[[1.0], [1.0]]], ]).expand(1, 3, 2, 1)  # three channels, same energy
    assert float(losses.attention_transfer(student, teacher)) == pytest.approx(1 - 1 / math.sqrt(2), rel=1e-6)
    g = torch.Generator().manual_seed(0)
    t = torch.randn(4, 16, 5, 5, generator=g)
    # scale and channel count do not matter, only where the energy sits
    assert float(losses.attention_transfer(5 * t[:, :8], torch.cat([t[:, :8], t[:, :8]], 1))) == pytest.approx(
        0.0, abs=1e-7)
    assert float(losses.attention_transfer(torch.randn(4, 8, 5, 5, generator=g), t)) > 1e-3
    # a larger teacher map is pooled to the student's size
    big = t.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # 10×10, each position copied 2×2
    assert float(losses.attention_transfer(t, big)) == pytest.approx(0.0, abs=1e-7)
    s = torch.randn(4, 8, 5, 5, generator=g, requires_grad=True)
    losses.attention_transfer(s, t).backward()
    assert s.grad is not None and float(s.grad.abs().sum()) > 0


def test_minimising_attention_transfer_moves_the_students_attention_onto_the_teachers():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 1, 10, 10, generator=g)
    teacher_map = torch.zeros(8, 4, 10, 10)
    teacher_map[:, :, :5, :5] = 1.0  # the teacher attends to the top-left quarter only
    conv = torch.nn.Conv2d(1, 3, 3, padding=1)
    where = torch.nn.Parameter(torch.ones(1, 1, 10, 10))  # a student that can learn where to look

    def student(images: torch.Tensor) -> torch.Tensor:
        return conv(images) * where

    optimiser = torch.optim.Adam([*conv.parameters(), where], lr=0.05)
    start = float(losses.attention_transfer(student(x), teacher_map))
    for _ in range(100):
        loss = losses.attention_transfer(student(x), teacher_map)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert float(loss) < 0.5 * start
    energy = student(x).pow(2).mean(1)
    assert float(energy[:, :5, :5].mean()) > 2 * float(energy[:, 5:, 5:].mean())
