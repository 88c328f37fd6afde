"""Dataset sources selected by `data.source`: each returns a `RawData` (gandistill.data.raw):
uint8 N×C×H×W arrays, int64 labels, class names and the facts that version them.
`load_source` then applies `data.resize` and checks the image size for every source.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gandistill.config import DataParams
from gandistill.data import mnistm
from gandistill.data.dvc_source import load_dvc
from gandistill.data.fetch import fetch_mnist
from gandistill.data.idx import load_idx_folder
from gandistill.data.raw import RawData
from gandistill.data.imagefolder import load_imagefolder_dir
from gandistill.data.images import as_uint8, check_side_lengths, resize_nchw, to_nchw
from gandistill.data.npz import load_npz_file
from gandistill.errors import DataError
from gandistill.files import file_hash


def load_mnist(params: DataParams) -> RawData:
    return load_idx_folder(fetch_mnist(params.path, verify=params.verify_checksums))


def load_mnistm(params: DataParams) -> RawData:
    """The MNIST-M-style colour set (gandistill.data.mnistm), built in memory from the MNIST IDX
    files in `data.path` (fetched and md5-verified as for `mnist`); same splits and labels."""
    digits = load_mnist(params)
    train_x, test_x, version = mnistm.build(digits.train_x[:, 0], None if digits.test_x is None else digits.test_x[:, 0])
    return RawData(train_x, digits.train_y, test_x, digits.test_y, digits.class_names, digits.version | version)


def load_idx(params: DataParams) -> RawData:
    return load_idx_folder(Path(params.path))


def load_npz(params: DataParams) -> RawData:
    return RawData(*load_npz_file(Path(params.path)), label_names=("y", "y_test"))


def load_imagefolder(params: DataParams) -> RawData:
    # Resized while reading: folders may hold mixed sizes, which cannot be stacked first.
    return RawData(*load_imagefolder_dir(Path(params.path), params.resize))


SOURCES: dict[str, Callable[[DataParams], RawData]] = {
    "mnist": load_mnist,
    "mnistm": load_mnistm,
    "idx": load_idx,
    "npz": load_npz,
    "imagefolder": load_imagefolder,
    "dvc": load_dvc,
}


# Sources read from the MNIST IDX files in data.path: fetched when missing, md5- and DVC-checked.
MNIST_BACKED = ("mnist", "mnistm")


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
