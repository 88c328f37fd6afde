"""Shared fixtures: the repo root, smoke params, a tiny learnable image dataset on disk."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Checkpoints and MLflow go to the test's tmp folder, never the user's runs/ or mlflow.db."""
    monkeypatch.setenv("GANDISTILL_CHECKPOINT_ROOT", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")


def make_pattern_images(n: int, num_classes: int, size: int = 16, channels: int = 1,
                        seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class k = a bright bar at a class-specific position + noise: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % num_classes
    rng.shuffle(y)
    x = rng.integers(0, 60, size=(n, channels, size, size)).astype(np.uint8)
    for i, label in enumerate(y):
        row = (label * size) // num_classes
        x[i, :, row : row + max(1, size // num_classes), :] = 230
    return x, y.astype(np.int64)


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """A prepared dataset folder (train/val/test + meta.json), 16×16 grey, 4 classes."""
    from gandistill.data.dataset import DatasetMeta, Split, channel_stats, save_dataset

    x, y = make_pattern_images(600, 4, size=16)
    splits = {"train": Split(x[:400], y[:400]), "val": Split(x[400:500], y[400:500]),
              "test": Split(x[500:], y[500:])}
    mean, std = channel_stats(splits["train"].x)
    meta = DatasetMeta(class_names=["a", "b", "c", "d"], channels=1, height=16, width=16, mean=mean, std=std,
                       source="test")
    folder = tmp_path / "dataset"
    save_dataset(folder, splits, meta)
    return folder


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The real MNIST IDX files (fetched by `make test` before pytest runs)."""
    folder = ROOT / "data" / "mnist"
    if not (folder / "train-images-idx3-ubyte").is_file():
        from gandistill.data.fetch import fetch_mnist

        fetch_mnist(folder)
    return folder


def smoke_params(*overrides: str):
    from gandistill.config import load_params

    return load_params(ROOT / "params.yaml", list(overrides), "smoke")


os.environ.setdefault("MPLBACKEND", "Agg")
