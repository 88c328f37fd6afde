"""Shared fixtures: the repo root, isolated state, a tiny learnable image dataset on disk.
Helper functions live in tests/helpers.py."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Checkpoints and MLflow go to the test's tmp folder, never the user's runs/ or mlflow.db.
    Afterwards MLflow's process-global URIs are cleared: mlflow.set_tracking_uri (promote calls it
    in-process) outranks MLFLOW_TRACKING_URI, so the next test's client would open this test's store;
    and an in-process MLflow server (tests/integration/test_faults.py) exports MLFLOW_REGISTRY_URI."""
    mlflow_env = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}
    monkeypatch.setenv("GANDISTILL_CHECKPOINT_ROOT", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    yield
    if "mlflow" in sys.modules:
        import mlflow

        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)  # type: ignore[arg-type]
    for key in [k for k in os.environ if k.startswith("MLFLOW_") and k not in mlflow_env]:
        del os.environ[key]  # monkeypatch then restores the values it changed


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """A prepared dataset folder (train/val/test + meta.json), 16×16 grey, 4 classes."""
    from helpers import make_pattern_images

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


os.environ.setdefault("MPLBACKEND", "Agg")
