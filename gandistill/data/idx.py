"""Read IDX files (the MNIST family's format) with numpy.

Layout: a 4-byte magic `0x00 0x00 <dtype code> <ndim>`, then `ndim` big-endian uint32
dimension sizes, then the data in C order, big-endian. Reference: LeCun et al., the MNIST
database page. Any dtype code and any number of dimensions are accepted.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from gandistill.errors import DataError

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


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write an array as IDX (used by tests and by users converting data)."""
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _DTYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise ValueError(f"dtype {array.dtype} has no IDX code")
    header = bytes([0, 0, codes[native], array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    big = array.astype(_DTYPES[codes[native]])
    Path(path).write_bytes(header + big.tobytes())
