"""The MNIST-M-style colour set: the blend formula, determinism, the shipped photographs and
`data.source=mnistm` through prepare_data and the training stages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import smoke_params

from gandistill.data import mnistm
from gandistill.errors import DataError
from gandistill.stages import prepare_data


def test_blend_is_the_absolute_difference_per_channel() -> None:
    photo = np.empty((30, 30, 3), dtype=np.uint8)
    photo[...] = (200, 100, 10)  # one colour: every patch is the same, so the result is known
    digits = np.array([[[0, 50], [150, 255]]], dtype=np.uint8)  # one 2×2 "digit"
    out = mnistm.blend(digits, [photo], np.random.default_rng(0))
    assert out.shape == (1, 3, 2, 2) and out.dtype == np.uint8
    # |200−0|, |200−50|, |200−150|, |200−255|; |100−…|; |10−…|
    assert out[0, 0].tolist() == [[200, 150], [50, 55]]
    assert out[0, 1].tolist() == [[100, 50], [50, 155]]
    assert out[0, 2].tolist() == [[10, 40], [140, 245]]


def test_blend_cuts_a_real_patch_of_the_photo() -> None:
    rows, cols = np.meshgrid(np.arange(40), np.arange(50), indexing="ij")
    photo = np.stack([rows * 5, cols * 5, np.full_like(rows, 7)], axis=-1).astype(np.uint8)  # position-coded
    digits = np.zeros((64, 4, 4), dtype=np.uint8)  # a blank digit leaves the patch itself
    out = mnistm.blend(digits, [photo], np.random.default_rng(3))
    tops, lefts = out[:, 0, 0, 0] // 5, out[:, 1, 0, 0] // 5
    for image, top, left in zip(out, tops, lefts, strict=True):
        assert np.array_equal(image.transpose(1, 2, 0), photo[top : top + 4, left : left + 4])
    assert len(set(zip(tops.tolist(), lefts.tolist(), strict=True))) > 30  # positions vary


def test_shipped_photographs_are_found_and_match_their_md5() -> None:
    files = mnistm.photo_files()
    assert [f.name for f in files] == ["china.jpg", "flower.jpg", "grace_hopper.jpg"]
    photos = mnistm.load_photos()
    assert all(p.ndim == 3 and p.shape[2] == 3 and min(p.shape[:2]) >= 400 for p in photos)


def test_the_photographs_decode_to_the_recorded_pixels() -> None:
    """The data version's pixel digest (what the colour and transfer benchmarks ran on): moving
    two photographs from scikit-learn's wheel into gandistill's kept every pixel."""
    _, _, version = mnistm.build(np.zeros((1, 28, 28), np.uint8), None)
    assert version["photo_pixels_md5"] == "9528ed9d4044d2dd4852b25202bb48b8"
    assert [p.parent.name for p in mnistm.photo_files()[:2]] == ["data", "data"]  # gandistill/data/, not sklearn


def test_a_changed_photograph_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mnistm, "PHOTOS", (("gandistill.data", "china.jpg", "0" * 32),))
    with pytest.raises(DataError, match=r"china.jpg: md5 .* differs .*make setup"):
        mnistm.photo_files()
    monkeypatch.setattr(mnistm, "PHOTOS", (("no_such_package_xyz", "a.jpg", "0" * 32),))
    with pytest.raises(DataError, match="no_such_package_xyz"):
        mnistm.photo_files()


def test_build_is_deterministic_given_the_seed() -> None:
    digits = np.random.default_rng(0).integers(0, 256, size=(50, 28, 28), dtype=np.uint8)
    a, a_test, version = mnistm.build(digits, digits[:10], seed=0)
    b, b_test, _ = mnistm.build(digits, digits[:10], seed=0)
    c, _, _ = mnistm.build(digits, digits[:10], seed=1)
    assert np.array_equal(a, b) and np.array_equal(a_test, b_test)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a[:10], a_test)  # train and test draw their own patches
    assert version["mnistm_recipe"] == mnistm.RECIPE and version["mnistm_seed"] == "0"
    assert version["photo:china.jpg"] == mnistm.PHOTOS[0][2]


def test_prepare_data_mnistm_keeps_mnist_splits_and_labels(tmp_path: Path, mnist_dir: Path) -> None:
    from gandistill.data.dataset import load_meta, load_split
    from gandistill.data.sources import load_mnist

    params = smoke_params("data.source=mnistm", f"data.path={mnist_dir}", "data.limit_train=null",
                          "data.limit_test=null")
    result = prepare_data.run(params, tmp_path / "data")
    meta = load_meta(tmp_path / "data")
    assert (meta.channels, meta.height, meta.width) == (3, 28, 28)
    assert meta.class_names == [str(i) for i in range(10)]
    counts = result["counts"]
    assert counts["train"] + counts["val"] == 60_000 and counts["test"] == 10_000  # MNIST's splits
    assert meta.version["mnistm_recipe"] == mnistm.RECIPE
    assert meta.version["train-images-idx3-ubyte"] == "6bbc9ace898e44ae57da46a324031adb"
    # Test follows MNIST's test split image for image: same labels, and strokes where MNIST has ink.
    test = load_split(tmp_path / "data", "test")
    digits = load_mnist(params.data)
    assert np.array_equal(test.y, digits.test_y)
    assert test.x.std(axis=(0, 2, 3)).min() > 0.1 * 255  # coloured backgrounds, not a grey copy
    json.loads((tmp_path / "data" / "meta.json").read_text())


def test_mnistm_trains_lenet_and_resnet_gan_stages(tmp_path: Path, mnist_dir: Path) -> None:
    """The smoke chain on the colour set: a LeNet pair and the ResNet cGAN (auto picks it for RGB)."""
    from gandistill.model_files import load_classifier, load_model_file
    from gandistill.stages import distill, train_gan, train_teacher

    params = smoke_params("data.source=mnistm", f"data.path={mnist_dir}", "teacher.epochs=1", "gan.steps=6",
                          "gan.eval_every=3", "distill.steps=6", "distill.eval_every=3")
    data = tmp_path / "data"
    prepare_data.run(params, data)
    train_teacher.run(params, data, tmp_path / "teacher")
    train_gan.run(params, data, tmp_path / "teacher", tmp_path / "gen")
    assert load_model_file(tmp_path / "gen")["arch"] == "resnet"
    result = distill.run(params, data, tmp_path / "teacher", tmp_path / "gen", tmp_path / "student")
    assert load_classifier(tmp_path / "student").in_channels == 3
    assert 0.0 <= result["test_acc"] <= 1.0
