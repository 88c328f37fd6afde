"""The image shape a data source will produce, read cheaply (headers, one image) before any
stage runs — so an architecture that cannot fit the data fails at `gandistill run`, not
after prepare_data. Torch-free. Returns None when the shape cannot be known without the
full load (a DVC repository at a revision, an unreadable file): prepare_data then checks
the fit on the loaded arrays, still before writing anything.
"""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import numpy as np

from gandistill.config import DataParams

MNIST_SHAPE = (1, 28, 28)
MNISTM_SHAPE = (3, 28, 28)  # gandistill.data.mnistm: MNIST digits blended into colour photo patches


def _idx_images_file(folder: Path) -> Path | None:
    from gandistill.data.idx import IDX_NAMES

    for stem in IDX_NAMES["train_x"]:
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _idx_shape(folder: Path) -> tuple[int, int, int] | None:
    file = _idx_images_file(folder)
    if file is None:
        return MNIST_SHAPE if folder.name == "mnist" else None
    opener = gzip.open if file.suffix == ".gz" else open
    with opener(file, "rb") as handle:
        header = handle.read(4 + 4 * 4)
    if len(header) < 8 or header[0] or header[1]:
        return None
    dims = [int(d) for d in np.frombuffer(header[4:], dtype=">u4")[: header[3]]]
    return _nchw(dims[1:])


def _nchw(sample_shape: list[int]) -> tuple[int, int, int] | None:
    """One image's shape (H×W, H×W×C or C×H×W) as C×H×W, by the same rule as data.images.to_nchw."""
    if len(sample_shape) == 2:
        return (1, *sample_shape)  # type: ignore[return-value]
    if len(sample_shape) == 3:
        if sample_shape[-1] in (1, 3):
            return (sample_shape[2], sample_shape[0], sample_shape[1])
        if sample_shape[0] in (1, 3):
            return tuple(sample_shape)  # type: ignore[return-value]
    return None


def _npz_shape(path: Path) -> tuple[int, int, int] | None:
    if not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as archive:
        if "x.npy" not in archive.namelist():
            return None
        with archive.open("x.npy") as handle:
            version = np.lib.format.read_magic(handle)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape = read(handle)[0]  # the header only, not the data
    return _nchw(list(shape[1:]))


def _imagefolder_shape(root: Path) -> tuple[int, int, int] | None:
    """The first image's shape (a folder may mix sizes only with data.resize, which then wins)."""
    from PIL import Image

    from gandistill.data.imagefolder import GREY_MODES, IMAGE_EXTENSIONS

    for file in sorted(root.rglob("*")):
        if file.is_file() and file.suffix.lower() in IMAGE_EXTENSIONS and not file.name.startswith("."):
            with Image.open(file) as image:
                width, height = image.size
                return (1 if image.mode in GREY_MODES else 3, height, width)
    return None


def input_shape(data: DataParams) -> tuple[int, int, int] | None:
    """C×H×W of the images `data` will produce (after data.resize), or None if not knowable cheaply."""
    path = Path(data.path)
    shape: tuple[int, int, int] | None
    try:
        if data.source == "mnist":
            shape = MNIST_SHAPE
        elif data.source == "mnistm":
            shape = MNISTM_SHAPE
        elif data.source == "idx":
            shape = _idx_shape(path) if path.is_dir() else None
        elif data.source == "npz":
            shape = _npz_shape(path) if path.is_file() else None
        elif data.source == "imagefolder":
            shape = _imagefolder_shape(path) if path.is_dir() else None
        else:  # dvc: only known once fetched
            shape = None
    except (OSError, ValueError):
        shape = None  # unreadable: prepare_data reports the fault with its own message
    if shape is not None and data.resize is not None:
        shape = (shape[0], data.resize, data.resize)
    return shape
