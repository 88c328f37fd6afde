"""The teacher's feature-statistics prior (DeepInversion's R_feature)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gandistill.errors import ConfigError
from gandistill.nets import build_classifier
from gandistill.priors import FeatureStatisticsPrior


def test_batchnorm_teacher_prior_is_zero_on_a_batch_with_the_running_statistics_by_hand():
    bn = nn.BatchNorm2d(2).eval()
    bn.running_mean.copy_(torch.tensor([1.0, -2.0]))
    bn.running_var.copy_(torch.tensor([4.0, 0.25]))
    teacher = nn.Sequential(bn, nn.Flatten())
    prior = FeatureStatisticsPrior(teacher)
    assert prior.source == "batchnorm"
    # per channel exactly the running mean / (biased) variance: values mean ± std, half each
    x = torch.empty(4, 2, 1, 1)
    x[:, 0] = torch.tensor([3.0, -1.0, 3.0, -1.0]).view(4, 1, 1)
    x[:, 1] = torch.tensor([-1.5, -2.5, -1.5, -2.5]).view(4, 1, 1)
    _, loss = prior(x)
    assert float(loss) == pytest.approx(0.0, abs=1e-6)
    # shift channel 0's mean by 3 and double channel 1's spread: ‖(3, 0)‖ + ‖(0, 1 − 0.25)‖
    y = x.clone()
    y[:, 0] += 3
    y[:, 1] = (x[:, 1] + 2) * 2 - 2
    _, loss = prior(y)
    assert float(loss) == pytest.approx(3.0 + 0.75, abs=1e-5)


def test_prior_gradient_pulls_generated_images_towards_the_real_statistics():
    torch.manual_seed(0)
    teacher = build_classifier("resnet8_w8", 3, (16, 16), 4)
    teacher.train()
    with torch.no_grad():  # running statistics of "real" data: bright images
        for _ in range(20):
            teacher(torch.rand(64, 3, 16, 16) * 0.3 + 0.7)
    teacher.eval()
    prior = FeatureStatisticsPrior(teacher)
    fake = (torch.rand(64, 3, 16, 16) * 0.3).requires_grad_(True)  # dark images
    opt = torch.optim.Adam([fake], lr=0.02)
    first = None
    for _ in range(60):
        _, loss = prior(fake)
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.3 * first
    assert float(fake.mean()) > 0.15 + 0.1  # started at 0.15: moved toward the bright data


def test_teacher_without_batchnorm_measures_its_statistics_on_real_images():
    torch.manual_seed(0)
    teacher = build_classifier("lenet5", 1, (28, 28), 10).eval()
    real = torch.rand(300, 1, 28, 28)
    prior = FeatureStatisticsPrior(teacher, reference=real, batch_size=128)
    assert prior.source == "real_images" and len(prior.means) == 2  # conv1, conv2
    _, on_real = prior(real)
    _, on_black = prior(torch.zeros(300, 1, 28, 28))
    assert float(on_real) == pytest.approx(0.0, abs=1e-3)  # the same batch: the same statistics
    assert float(on_black) > 0.1
    logits = teacher(real[:5])
    assert torch.allclose(prior(real[:5])[0], logits)  # one pass gives the logits too
    assert prior._seen == []  # outside its own passes the hooks keep nothing


def test_no_batchnorm_and_no_data_is_a_clear_error():
    teacher = build_classifier("lenet5", 1, (28, 28), 10)
    with pytest.raises(ConfigError, match="BatchNorm"):
        FeatureStatisticsPrior(teacher)
