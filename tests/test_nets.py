"""Network shapes and parameter counts."""

from __future__ import annotations

import pytest
import torch

from gandistill.nets import ConditionalDiscriminator, ConditionalGenerator, build_classifier, count_parameters


def test_lenet5_pair_matches_the_papers_parameter_counts():
    teacher = build_classifier("lenet5", 1, (28, 28), 10)
    student = build_classifier("lenet5_half", 1, (28, 28), 10)
    assert count_parameters(teacher) == 61_706
    assert count_parameters(student) == 15_738
    assert count_parameters(teacher) / count_parameters(student) == pytest.approx(3.92, abs=0.01)


@pytest.mark.parametrize("arch,channels,size,classes", [
    ("lenet5", 1, (28, 28), 10), ("lenet5_half", 3, (32, 32), 3), ("resnet8", 3, (32, 32), 20),
    ("resnet20", 1, (16, 16), 4),
])
def test_classifiers_take_raw_pixels_and_return_logits_and_features(arch, channels, size, classes):
    model = build_classifier(arch, channels, size, classes, mean=[0.5] * channels, std=[0.25] * channels)
    x = torch.rand(3, channels, *size)
    logits, feats = model.forward_features(x)
    assert logits.shape == (3, classes)
    assert feats[-1].ndim == 2 and feats[0].ndim == 4
    assert torch.allclose(model(x), logits)


def test_lenet_refuses_tiny_images_with_a_hint():
    with pytest.raises(ValueError, match="use a resnet"):
        build_classifier("lenet5", 1, (8, 8), 10)


@pytest.mark.parametrize("channels,size", [(1, (28, 28)), (3, (32, 32)), (1, (8, 8)), (3, (24, 32))])
def test_conditional_gan_shapes(channels, size):
    gen = ConditionalGenerator(16, 5, channels, size, ngf=8)
    disc = ConditionalDiscriminator(5, channels, size, ndf=8)
    images, labels = gen.sample(4)
    assert images.shape == (4, channels, *size)
    assert images.min() >= 0 and images.max() <= 1
    logit, phi = disc(images, labels)
    assert logit.shape == (4,) and phi.shape == (4, 16)


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_normalised_generator_output_has_the_data_statistics_and_sigmoid_adds_no_state(arch):
    from gandistill.nets import build_gan

    mean, std = [0.1307], [0.3081]
    g, _ = build_gan(arch, 16, 10, 1, (28, 28), 8, 8, hidden=32, output="normalised", mean=mean, std=std)
    x, _ = g.sample(256)
    assert x.shape == (256, 1, 28, 28)
    assert float(x.mean()) == pytest.approx(mean[0], abs=1e-3)  # BatchNorm (train mode) then × std + mean
    assert float(x.std()) == pytest.approx(std[0], rel=1e-2)
    plain, _ = build_gan(arch, 16, 10, 1, (28, 28), 8, 8, hidden=32)
    pixels, _ = plain.sample(64)
    assert float(pixels.min()) >= 0.0 and float(pixels.max()) <= 1.0
    assert not any("to_pixels" in k for k in plain.state_dict())  # saved GANs load unchanged
    with pytest.raises(ValueError, match="sigmoid or normalised"):
        build_gan(arch, 16, 10, 1, (28, 28), 8, 8, hidden=32, output="tanh")
