"""Dataset sources selected by `data.source`: each returns raw arrays plus version facts.

A source returns train (and, if it has one, test) as uint8 N×C×H×W with int64 labels;
prepare_data then validates, carves val (and test when missing) and stores the result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gandistill.config import DataParams
from gandistill.data.fetch import MNIST_MD5, fetch_mnist, md5sum, verify_mnist
from gandistill.data.idx import read_idx
from gandistill.errors import DataError


@dataclass
class RawData:
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray | None
    test_y: np.ndarray | None
    class_names: list[str]
    version: dict[str, str] = field(default_factory=dict)


def _images_nchw(x: np.ndarray, where: str) -> np.ndarray:
    if x.ndim == 3:
        return x[:, None, :, :]
    if x.ndim == 4:
        return x
    raise DataError(f"{where}: images must be N×H×W or N×C×H×W, got shape {x.shape}")


IDX_NAMES = {
    "train_x": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train_y": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test_x": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "test_y": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


def _find_idx(folder: Path, role: str, required: bool) -> Path | None:
    for stem in IDX_NAMES[role]:
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            if candidate.is_file():
                return candidate
    if required:
        raise DataError(f"{folder}: no {IDX_NAMES[role][0]} (or .gz) found; data.path must be a folder "
                        "holding MNIST-format IDX files")
    return None


def load_idx_folder(folder: Path) -> RawData:
    if not folder.is_dir():
        raise DataError(f"{folder}: data folder not found; set data.path to a folder of IDX files")
    files = {role: _find_idx(folder, role, required=role.startswith("train")) for role in IDX_NAMES}
    arrays = {role: read_idx(path) if path else None for role, path in files.items()}
    train_x = _images_nchw(arrays["train_x"], str(files["train_x"]))
    test_x = _images_nchw(arrays["test_x"], str(files["test_x"])) if arrays["test_x"] is not None else None
    labels = [a for a in (arrays["train_y"], arrays["test_y"]) if a is not None]
    num_classes = int(max(int(a.max()) for a in labels)) + 1
    version = {path.name: md5sum(path) for path in files.values() if path is not None}
    return RawData(train_x, arrays["train_y"].astype(np.int64), test_x,
                   None if arrays["test_y"] is None else arrays["test_y"].astype(np.int64),
                   [str(i) for i in range(num_classes)], version)


def load_mnist(params: DataParams) -> RawData:
    folder = Path(params.path)
    if not all((folder / n).is_file() for n in MNIST_MD5):
        fetch_mnist(folder)
    elif params.verify_checksums:
        verify_mnist(folder)
    return load_idx_folder(folder)


def load_idx(params: DataParams) -> RawData:
    return load_idx_folder(Path(params.path))


SOURCES: dict[str, Callable[[DataParams], RawData]] = {
    "mnist": load_mnist,
    "idx": load_idx,
}


def load_source(params: DataParams) -> RawData:
    loader = SOURCES.get(params.source)
    if loader is None:
        raise DataError(f"data.source={params.source} is not available in this build "
                        f"(available: {', '.join(SOURCES)})")
    return loader(params)
