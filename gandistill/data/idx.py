"""Read IDX files (the MNIST family's format) with numpy.

Layout: a 4-byte magic `0x00 0x00 <dtype code> <ndim>`, then `ndim` big-endian uint32
dimension sizes, then the data in C order, big-endian. Reference: LeCun et al., the MNIST
database page. Any dtype code and any number of dimensions are accepted. `load_idx_folder` reads a folder
of the four MNIST-layout files (test optional, .gz allowed) as a source's RawData.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from gandistill.data.images import as_uint8, to_nchw
from gandistill.data.raw import RawData
from gandistill.errors import DataError
from gandistill.files import file_hash

_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Parse one IDX file (optionally gzip-compressed) into a native-endian array."""
    file = Path(path)
    if not file.is_file():
        raise DataError(f"{file}: IDX file not found; check data.path or fetch the dataset (make data)")
    raw = file.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise DataError(f"{file}: not an IDX file (bad magic {raw[:4].hex()}); expected 0000<type><ndim>")
    dtype, ndim = _DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{file}: truncated IDX header; re-fetch the file")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"{file}: IDX payload is {len(raw) - header} bytes but the header promises {expected} "
            f"for shape {shape}; the file is truncated or corrupt — re-fetch it"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


# -- a folder of IDX files (the mnist, idx and dvc sources) -------------------------------

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
    version = {path.name: file_hash(path) for path in files.values() if path is not None}
    return RawData(train_x, arrays["train_y"].astype(np.int64), test_x,
                   None if arrays["test_y"] is None else arrays["test_y"].astype(np.int64),
                   [str(i) for i in range(num_classes)], version,
                   label_names=(files["train_y"].name, files["test_y"].name if files["test_y"] else "test labels"))
