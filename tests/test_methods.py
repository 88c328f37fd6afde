"""Every distillation method through the same distill stage (smoke budgets), and a short
real-training check that a student trained only on GAN samples learns MNIST."""

from __future__ import annotations

import pytest
import torch

from gandistill.methods import METHODS
from gandistill.stages import distill, prepare_data, train_gan, train_teacher
from gandistill.stages.distill import hard_sample_indices

try:
    from conftest import smoke_params
except ImportError:  # tests/ imported as a package
    from tests.conftest import smoke_params


@pytest.fixture(scope="module")
def world(tmp_path_factory, mnist_dir):
    root = tmp_path_factory.mktemp("methods")
    params = smoke_params(f"data.path={mnist_dir}")
    prepare_data.run(params, root / "data")
    train_teacher.run(params, root / "data", root / "teacher")
    train_gan.run(params, root / "data", root / "teacher", root / "gan")
    return root


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_runs_through_the_one_distill_stage(world, method, tmp_path):
    params = smoke_params(f"distill.method={method}", "distill.steps=12", "distill.eval_every=6",
                          "distill.hint_weight=0.5", "distill.rkd_distance_weight=0.5", "distill.rkd_angle_weight=0.5")
    generator = world / "gan" if method in ("gan", "gan_real") else None
    result = distill.run(params, world / "data", world / "teacher", generator, tmp_path / "student")
    assert result["method"] == method and result["steps"] == 12
    assert 0.0 <= result["test_acc"] <= 1.0 and (tmp_path / "student" / "model.pt").is_file()
    no_real = method in ("gan", "data_free", "dafl")
    assert (result["real_images_seen_by_student"] == 0) == no_real
    assert result["selected_on"] == ("final" if method in ("data_free", "dafl") else "val_acc")


def test_hard_sample_mining_keeps_the_hardest_and_fills_the_rest_at_random():
    gap = torch.tensor([0.1, 5.0, 0.2, 3.0, 0.0, 0.3, 4.0, 0.05])
    keep = hard_sample_indices(gap, n=5, n_hard=3)
    assert len(keep) == 5 and len(set(keep.tolist())) == 5
    assert set(keep[:3].tolist()) == {1, 3, 6}  # the three largest gaps
    assert not set(keep[3:].tolist()) & {1, 3, 6}
    assert hard_sample_indices(gap, n=8, n_hard=0).sort().values.tolist() == list(range(8))


def test_gan_distillation_with_hard_mining_runs(world, tmp_path):
    params = smoke_params("distill.method=gan", "distill.steps=6", "distill.eval_every=3", "distill.hard_fraction=0.5")
    result = distill.run(params, world / "data", world / "teacher", world / "gan", tmp_path / "student")
    assert result["steps"] == 6 and result["real_images_seen_by_student"] == 0


@pytest.mark.slow
def test_student_trained_only_on_gan_samples_beats_chance_by_far(tmp_path, mnist_dir):
    """Real training on a 3,000-image subset: teacher → MLP cGAN → student on generated samples only."""
    params = smoke_params(f"data.path={mnist_dir}", "data.limit_train=3000", "data.limit_test=1000",
                          "teacher.epochs=6", "gan.steps=1500", "gan.eval_every=500", "gan.eval_samples=500",
                          "distill.steps=600", "distill.eval_every=200")
    prepare_data.run(params, tmp_path / "data")
    teacher = train_teacher.run(params, tmp_path / "data", tmp_path / "teacher")
    gan = train_gan.run(params, tmp_path / "data", tmp_path / "teacher", tmp_path / "gan")
    student = distill.run(params, tmp_path / "data", tmp_path / "teacher", tmp_path / "gan", tmp_path / "student")
    assert teacher["test_acc"] > 0.9
    assert gan["selected_coverage"] > 0.8
    assert student["real_images_seen_by_student"] == 0
    assert student["test_acc"] > 0.6  # chance is 0.1
