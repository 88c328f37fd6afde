"""Pixel-array helpers shared by the sources: layout, dtype, size checks and Pillow resizing.

Every source hands prepare_data uint8 N×C×H×W arrays with C in {1, 3} and 8 ≤ H, W ≤ 64;
these helpers turn what users actually have into that, or say exactly what to change.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from gandistill.errors import DataError

MIN_SIDE, MAX_SIDE = 8, 64
# Pillow's resize filters with support scaling, so BILINEAR is also antialiased when shrinking.
RESAMPLE = Image.Resampling.BILINEAR


def to_nchw(x: np.ndarray, where: str) -> np.ndarray:
    """N×H×W (grey), N×H×W×C or N×C×H×W (C ∈ {1, 3}) → N×C×H×W.

    The layout is unambiguous because images are at least 8 pixels per side: a trailing
    axis of 1 or 3 can only be channels.
    """
    if x.ndim == 3:
        return x[:, None, :, :]
    if x.ndim == 4:
        if x.shape[-1] in (1, 3):
            return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        if x.shape[1] in (1, 3):
            return x
        raise DataError(f"{where}: cannot tell the channel axis of shape {x.shape}; images must be N×H×W, "
                        "N×H×W×C or N×C×H×W with C = 1 (grey) or 3 (RGB)")
    raise DataError(f"{where}: images must be N×H×W, N×H×W×C or N×C×H×W, got {x.ndim} axes (shape {x.shape})")


def as_uint8(x: np.ndarray, where: str) -> np.ndarray:
    """Integer pixels in 0–255 → uint8; anything else is an error that says how to convert."""
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_:
        lo, hi = (int(x.min()), int(x.max())) if x.size else (0, 0)
        if lo < 0 or hi > 255:
            raise DataError(f"{where}: pixel values span {lo}..{hi}; store uint8 pixels 0–255 "
                            "(e.g. rescale 16-bit images with x // 257)")
        return x.astype(np.uint8)
    raise DataError(f"{where}: pixels are {x.dtype}; store uint8 pixels 0–255 "
                    "(e.g. (x * 255).round().astype(np.uint8) for floats in [0, 1])")


def as_labels(y: np.ndarray, n: int, where: str) -> np.ndarray:
    """Integer class indices (N or N×1) → int64 N, checked against the number of images."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{where}: labels must be a 1-D array of class indices, got shape {y.shape} "
                        "(one-hot labels: store y.argmax(1))")
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise DataError(f"{where}: labels must be integer class indices, got dtype {y.dtype}; "
                        "map class names to 0..K-1 and store class_names separately")
    if np.issubdtype(y.dtype, np.floating) and not np.all(np.isfinite(y) & (y == np.round(y))):
        raise DataError(f"{where}: labels must be integer class indices, got non-integer floats")
    if len(y) != n:
        raise DataError(f"{where}: {n} images but {len(y)} labels; both arrays need one entry per image")
    return y.astype(np.int64)


def resize_nchw(x: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 N×C×H×W images to size×size with Pillow (no-op when already that size)."""
    n, c, h, w = x.shape
    if (h, w) == (size, size):
        return x
    out = np.empty((n, c, size, size), dtype=np.uint8)
    for i in range(n):
        img = x[i, 0] if c == 1 else x[i].transpose(1, 2, 0)
        resized = np.asarray(Image.fromarray(img).resize((size, size), RESAMPLE))
        out[i] = resized[None] if c == 1 else resized.transpose(2, 0, 1)
    return out


def check_side_lengths(h: int, w: int, where: str) -> None:
    if not (MIN_SIDE <= h <= MAX_SIDE and MIN_SIDE <= w <= MAX_SIDE):
        raise DataError(f"{where}: images are {h}×{w} pixels; {MIN_SIDE}–{MAX_SIDE} per side is supported — "
                        f"set data.resize=N (N in {MIN_SIDE}..{MAX_SIDE}) to resize every image to N×N")
