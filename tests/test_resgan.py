"""The BigGAN-style ResNet generator / projection discriminator and DiffAugment."""

from __future__ import annotations

import pytest
import torch

from gandistill.augment import diff_augment
from gandistill.model_files import load_generator, save_generator
from gandistill.nets import build_gan
from gandistill.nets.gan import ConditionalGenerator, MLPGenerator
from gandistill.nets.resgan import ProjectionDiscriminator, ResNetGenerator, SharedConditionalBatchNorm, up_blocks_for


@pytest.mark.parametrize("channels,size", [(3, (28, 28)), (1, (32, 32)), (3, (8, 8)), (3, (24, 32)), (3, (64, 64))])
def test_resnet_gan_shapes_and_pixel_range(channels, size):
    gen, disc = build_gan("resnet", 16, 5, channels, size, 8, 8)
    images, labels = gen.sample(4)
    assert images.shape == (4, channels, *size)
    assert images.min() >= 0 and images.max() <= 1
    logit, phi = disc(images, labels)
    assert logit.shape == (4,) and phi.ndim == 2 and phi.shape[0] == 4


def test_up_blocks_keep_the_first_map_small():
    assert up_blocks_for((28, 28)) == 2 and up_blocks_for((32, 32)) == 2
    assert up_blocks_for((64, 64)) == 3 and up_blocks_for((128, 96)) == 4


def test_shared_conditional_bn_starts_as_plain_bn_and_conditions_on_the_vector():
    torch.manual_seed(0)
    cbn = SharedConditionalBatchNorm(4, cond_dim=6)
    x = torch.randn(8, 4, 3, 3)
    cond = torch.randn(8, 6)
    plain = torch.nn.functional.batch_norm(x, None, None, training=True)
    assert torch.allclose(cbn(x, cond), plain, atol=1e-5)  # gain 1, bias 0 at init
    with torch.no_grad():
        cbn.bias.weight.fill_(1.0)
    # bias = sum of the conditioning vector, per sample, added to every channel
    assert torch.allclose(cbn(x, cond) - plain, cond.sum(1)[:, None, None, None].expand_as(x), atol=1e-5)


def test_generator_output_depends_on_the_class_through_the_shared_embedding():
    torch.manual_seed(0)
    gen = ResNetGenerator(8, 3, 3, (28, 28), ngf=8).eval()
    for block in gen.blocks:  # give the conditional BNs a non-zero dependence on [z, embed(y)]
        torch.nn.init.normal_(block.bn1.gain.weight, std=0.5)
    z = torch.randn(1, 8).repeat(3, 1)
    images = gen(z, torch.arange(3))
    assert not torch.allclose(images[0], images[1])
    assert gen.embed.weight.shape == (3, 32)


def test_projection_discriminator_adds_the_class_projection():
    torch.manual_seed(0)
    disc = ProjectionDiscriminator(4, 3, (28, 28), ndf=8).eval()
    x = torch.rand(2, 3, 28, 28)
    logit_a, phi = disc(x, torch.tensor([0, 0]))
    logit_b, _ = disc(x, torch.tensor([1, 1]))
    embed = disc.embed.weight  # spectral-normalised at access
    assert torch.allclose(logit_a - logit_b, (phi * (embed[0] - embed[1])).sum(1), atol=1e-4)


def test_resnet_generator_saves_and_loads_back(tmp_path):
    gen, _ = build_gan("resnet", 16, 4, 3, (28, 28), 8, 8)
    gen.eval()
    save_generator(gen, tmp_path)
    loaded = load_generator(tmp_path)
    z, y = torch.randn(3, 16), torch.tensor([0, 1, 3])
    assert torch.equal(gen(z, y), loaded(z, y))


def test_diff_augment_keeps_shape_and_gradients_and_each_op_acts():
    torch.manual_seed(0)
    x = torch.rand(16, 3, 16, 16, requires_grad=True)
    out = diff_augment(x)
    assert out.shape == x.shape
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # differentiable: G's gradients pass through
    flat = torch.full((8, 1, 16, 16), 0.8)
    cut = diff_augment(flat, ["cutout"])
    # cutout: one half-side square per sample set to the paper's zero (mid-grey 0.5 in [0, 1] pixels)
    assert ((cut == 0.5).flatten(1).sum(1) > 0).all() and ((cut == 0.5).flatten(1).sum(1) <= 64).all()
    assert torch.allclose(cut[cut != 0.5], torch.tensor(0.8))
    ramp = torch.arange(16.0).view(1, 1, 1, 16).expand(32, 1, 16, 16) / 16
    moved = diff_augment(ramp, ["translation"])
    shifts = {int(torch.round((moved[i, 0, 8, 8] - ramp[i, 0, 8, 8]) * 16)) for i in range(32)}
    assert shifts <= set(range(-2, 3)) and len(shifts) > 1  # integer shifts of at most 1/8 of 16 px
    coloured = diff_augment(flat.expand(8, 3, 16, 16), ["color"])
    assert not torch.allclose(coloured, flat.expand(8, 3, 16, 16))
    with pytest.raises(ValueError, match="unknown DiffAugment"):
        diff_augment(x, ["flip"])


def test_resnet_discriminator_saves_and_loads_back_with_its_generator(tmp_path):
    from gandistill.model_files import discriminator_record, load_discriminator

    gen, disc = build_gan("resnet", 16, 4, 3, (28, 28), 8, 8)
    disc.eval()
    save_generator(gen, tmp_path, extra={"discriminator": discriminator_record(disc, disc.state_dict(), 8, 8, True)})
    loaded = load_discriminator(tmp_path)
    x, y = torch.rand(4, 3, 28, 28), torch.tensor([0, 1, 2, 3])
    assert torch.allclose(disc(x, y)[0], loaded(x, y)[0])


@pytest.mark.parametrize(("channels", "size", "expected"), [
    (1, (28, 28), MLPGenerator),            # grey digits: the cheap MLP pair, as before
    (3, (28, 28), ResNetGenerator),         # colour: the ResNet pair
    (1, (64, 64), ResNetGenerator),         # larger than 32 px
])
def test_auto_picks_the_resnet_pair_for_colour_or_larger_images(channels, size, expected):
    gen, disc = build_gan("auto", 16, 4, channels, size, 32, 32)
    assert isinstance(gen, expected)
    assert isinstance(disc, ProjectionDiscriminator) == (expected is ResNetGenerator)
    # the data-free generator (normalised output) has no ResNet form: auto keeps the conv one there
    free, _ = build_gan("auto", 16, 4, 3, (28, 28), 16, 16, output="normalised", mean=[0.5] * 3, std=[0.25] * 3)
    assert isinstance(free, ConditionalGenerator)


def test_resnet_widths_are_sized_for_a_cpu():
    gen, disc = build_gan("resnet", 16, 4, 3, (28, 28), 32, 32)
    assert [b.up.out_channels for b in gen.blocks] == [32, 16]  # 64 → 32 → 16 channels
    assert [b.conv1.out_channels for b in disc.blocks] == [16, 32]


def test_auto_gives_each_gan_pair_its_measured_recipe(repo_root):
    from gandistill import archs
    from gandistill.config import load_params

    def resolved(shape, *overrides, profile=None):
        params = load_params(repo_root / "params.yaml", list(overrides), profile=profile)
        gp = archs.resolve_gan(params, *shape).gan
        return gp.arch, gp.loss, gp.augment, gp.teacher_weight

    colour_recipe = ("resnet", "hinge", ["color", "translation", "cutout"], 0.0)
    assert resolved((1, 28, 28)) == ("mlp", "bce", [], 0.2)  # MNIST: the cGAN paper's pair, as before
    assert resolved((3, 28, 28)) == colour_recipe
    assert resolved((1, 64, 64)) == colour_recipe
    assert resolved((1, 28, 28), profile="colour") == colour_recipe  # the profile forces the pair on grey data
    # What the user set is kept; only `auto` follows the pair.
    assert resolved((3, 28, 28), "gan.loss=bce", "gan.teacher_weight=0.1") == (
        "resnet", "bce", ["color", "translation", "cutout"], 0.1)
    assert resolved((1, 28, 28), "gan.augment=[translation]")[2] == ["translation"]
