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
from gandistill.data.dvc_source import load_dvc
from gandistill.data.fetch import MNIST_MD5, fetch_mnist, md5sum, verify_mnist
from gandistill.data.idx import read_idx
from gandistill.data.imagefolder import load_imagefolder_dir
from gandistill.data.images import as_uint8, check_side_lengths, resize_nchw, to_nchw
from gandistill.data.npz import load_npz_file
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
    return to_nchw(as_uint8(x, where), where)


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


def load_npz(params: DataParams) -> RawData:
    return RawData(*load_npz_file(Path(params.path)))


def load_imagefolder(params: DataParams) -> RawData:
    # Resized while reading: folders may hold mixed sizes, which cannot be stacked first.
    return RawData(*load_imagefolder_dir(Path(params.path), params.resize))


SOURCES: dict[str, Callable[[DataParams], RawData]] = {
    "mnist": load_mnist,
    "idx": load_idx,
    "npz": load_npz,
    "imagefolder": load_imagefolder,
    "dvc": load_dvc,
}


def load_source(params: DataParams) -> RawData:
    """Load `data.source`, then apply `data.resize` and check the image size for every source."""
    loader = SOURCES.get(params.source)
    if loader is None:
        raise DataError(f"data.source={params.source} is not available in this build "
                        f"(available: {', '.join(SOURCES)})")
    raw = loader(params)
    where = f"data.source={params.source} ({params.path})"
    if params.resize is not None:
        raw.train_x = resize_nchw(raw.train_x, params.resize)
        if raw.test_x is not None:
            raw.test_x = resize_nchw(raw.test_x, params.resize)
        raw.version["resize"] = str(params.resize)
    if raw.train_x.ndim == 4:  # other shape faults are validate_raw's to report
        check_side_lengths(raw.train_x.shape[2], raw.train_x.shape[3], where)
    return raw
