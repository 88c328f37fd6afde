"""Improved precision and recall (Kynkäänniemi et al. 2019) against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gandistill.evaluation.coverage import covered, knn_radii, per_class_precision_recall, precision_recall


def col(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).view(-1, 1)


def test_precision_and_recall_by_hand_in_one_dimension():
    real = col(0, 1, 2, 3)  # each real point's nearest other point is 1 away: radius 1 (k = 1)
    fake = col(0.5, 10)  # 0.5 is inside a real ball, 10 is not → precision 1/2
    # the two fake points are 9.5 apart: each fake ball has radius 9.5 and covers all of real → recall 1
    assert precision_recall(real, fake, k=1) == pytest.approx((0.5, 1.0))
    # k = 3: a real point's 3rd neighbour is 2 or 3 away; 10 stays outside every ball
    assert knn_radii(real, 3).tolist() == [3, 2, 2, 3]
    assert precision_recall(real, fake, k=3)[0] == pytest.approx(0.5)


def test_a_generator_that_drops_a_mode_loses_recall_not_precision():
    g = torch.Generator().manual_seed(0)
    left = torch.randn(400, 2, generator=g)
    right = torch.randn(400, 2, generator=g) + torch.tensor([20.0, 0.0])
    real = torch.cat([left, right])
    fake = torch.randn(400, 2, generator=g)  # only the left mode
    precision, recall = precision_recall(real, fake)
    assert precision > 0.9
    assert 0.4 < recall < 0.55  # the right half of the real data is never covered
    both = torch.cat([torch.randn(400, 2, generator=g), torch.randn(400, 2, generator=g) + torch.tensor([20.0, 0.0])])
    assert precision_recall(real, both)[1] > 0.9


def test_radius_with_fewer_points_than_k_and_covered_membership():
    assert knn_radii(col(0, 4), 3).tolist() == [4, 4]  # only one other point: its distance
    assert math.isnan(float(knn_radii(col(7), 3)[0]))
    support = col(0, 10)
    assert covered(col(0.5, 5, 9.9), support, torch.tensor([1.0, 0.2])).tolist() == [True, False, True]
    assert covered(col(1), col(), torch.empty(0)).tolist() == [False]


def test_per_class_measures_each_class_on_its_own_and_flags_missing_ones():
    real = col(0, 1, 2, 100, 101, 102)
    real_y = torch.tensor([0, 0, 0, 1, 1, 1])
    fake = col(0.5, 1.5, 50, 51, 5)
    fake_y = torch.tensor([0, 0, 1, 1, 2])  # class 1's samples sit far from class 1's real data
    cov = per_class_precision_recall(real, real_y, fake, fake_y, num_classes=3, k=1)
    assert cov.precision[0] == pytest.approx(1.0) and cov.recall[0] == pytest.approx(1.0)
    assert cov.precision[1] == 0.0 and cov.recall[1] == 0.0
    assert np.isnan(cov.precision[2]) and np.isnan(cov.recall[2])  # one sample, no real image: unmeasurable
    assert cov.real_count.tolist() == [3, 3, 0] and cov.fake_count.tolist() == [2, 2, 1]
