"""numpy .npz source: `x` (N×H×W, N×H×W×C or N×C×H×W uint8) and `y` (integer labels),
optionally `x_test` / `y_test` and `class_names` (a string array, index = label).

Loaded with allow_pickle=False: an .npz is data, never code.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from gandistill.data.images import as_labels, as_uint8, to_nchw
from gandistill.files import file_hash
from gandistill.errors import DataError

KNOWN_KEYS = {"x", "y", "x_test", "y_test", "class_names"}


def read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DataError(f"{path}: npz file not found; set data.path to a .npz file holding arrays x and y")
    if not zipfile.is_zipfile(path):  # .npz is a zip; np.load would try pickle on anything else
        raise DataError(f"{path}: not a readable .npz file (not a zip archive); write it with "
                        "np.savez(path, x=images, y=labels)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except ValueError as exc:
        if "pickle" in str(exc):
            raise DataError(f"{path}: an array needs pickle (object dtype), which is not loaded for safety; "
                            "store class_names as a string array, e.g. np.array(['cat', 'dog'])") from None
        raise DataError(f"{path}: not a readable .npz file ({exc}); write it with np.savez") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc}); write it with np.savez") from None


def load_npz_file(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None,
                                        list[str], dict[str, str]]:
    """(train_x, train_y, test_x, test_y, class_names, version) from one .npz file."""
    arrays = read_npz(path)
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        found = ", ".join(arrays) or "none"
        raise DataError(f"{path}: missing array(s) {', '.join(missing)} (found: {found});"
                        " save with np.savez(path, x=images, y=labels[, x_test=, y_test=, class_names=])")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"{path}: has {'x_test' if 'x_test' in arrays else 'y_test'} without its partner; "
                        "store both x_test and y_test, or neither (a test split is then carved from x)")
    train_x = to_nchw(as_uint8(arrays["x"], f"{path}: x"), f"{path}: x")
    train_y = as_labels(arrays["y"], len(train_x), f"{path}: y")
    test_x = test_y = None
    if "x_test" in arrays:
        test_x = to_nchw(as_uint8(arrays["x_test"], f"{path}: x_test"), f"{path}: x_test")
        test_y = as_labels(arrays["y_test"], len(test_x), f"{path}: y_test")
    labels = np.concatenate([train_y] + ([test_y] if test_y is not None else []))
    if labels.size and labels.min() < 0:
        raise DataError(f"{path}: label {int(labels.min())} is negative; labels are class indices 0..K-1")
    if "class_names" in arrays:
        names_arr = arrays["class_names"]
        if names_arr.ndim != 1 or names_arr.dtype.kind not in "US":
            raise DataError(f"{path}: class_names must be a 1-D string array, got {names_arr.dtype} "
                            f"shape {names_arr.shape}")
        class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in names_arr.tolist()]
        if len(set(class_names)) != len(class_names):
            raise DataError(f"{path}: class_names has duplicates; give every class a distinct name")
        if labels.size and labels.max() >= len(class_names):
            raise DataError(f"{path}: label {int(labels.max())} is out of range for {len(class_names)} "
                            f"class_names (labels are indices 0..{len(class_names) - 1}); fix the labels "
                            "or add the missing names")
    else:
        class_names = [str(i) for i in range(int(labels.max()) + 1 if labels.size else 0)]
    ignored = sorted(set(arrays) - KNOWN_KEYS)
    version = {path.name: file_hash(path)} | ({"ignored_arrays": ",".join(ignored)} if ignored else {})
    return train_x, train_y, test_x, test_y, class_names, version
