"""An MNIST-M-style colour dataset built from MNIST and photographs shipped inside installed
packages: no download at run time, the same pixels on every machine.

Recipe (Ganin et al. 2016, "Domain-Adversarial Training of Neural Networks", JMLR, §5.2.2):
each MNIST digit is blended with a patch of a colour photograph taken at a random position,

    out[i, j, k] = |patch[i, j, k] − digit[i, j]|        (k = R, G, B)

so strokes invert the background's colours. Ganin et al. crop BSDS500 photographs, which no
package registry ships; here the patches come from three colour photographs that ship inside
installed packages (checked md5 below, so a package update that changed a photo is refused
instead of silently changing the dataset):

| photo | package (wheel path) | licence |
|---|---|---|
| china.jpg, 427×640 | gandistill `gandistill/data/` (copied from scikit-learn 1.9.1) | CC BY 2.0 (see data/photos.md) |
| flower.jpg, 427×640 | gandistill `gandistill/data/` (copied from scikit-learn 1.9.1) | CC BY 2.0 (see data/photos.md) |
| grace_hopper.jpg, 600×512 | matplotlib `matplotlib/mpl-data/sample_data/` | public domain (US Navy photograph) |

Fewer photographs than BSDS500's 200 means less background variety than the published MNIST-M;
numbers on this set are not comparable with published MNIST-M numbers. The digit is used with
its grey values (the paper's formula), not binarised as some re-implementations do.

Train (60,000) and test (10,000) follow MNIST's splits image for image (label i = MNIST's label
i), 28×28 RGB. Deterministic given the seed: photo choice and crop position come from
`numpy.random.default_rng([seed, split])`. Building the whole set takes about a second, so it is
built in memory when read and never cached: no file can go stale, and nothing is written under
`data/`, which `data.dvc` tracks file by file.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

from gandistill.files import file_hash
from gandistill.errors import DataError

MNISTM_SEED = 0
RECIPE = "ganin2016-absdiff-v1"  # bump when the construction changes: it is part of the data version

# (package, path inside the package, md5): the photographs patches are cut from, in this order.
PHOTOS: tuple[tuple[str, str, str], ...] = (
    ("gandistill.data", "china.jpg", "1c6116212e35016fa7c3b67c81ec1335"),
    ("gandistill.data", "flower.jpg", "5896f0d20066ea484089d086cd8e5a8d"),
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg", "314296a0a5dd3c394e57f4efac733c20"),
)


def _package_dir(package: str) -> Path:
    """The installed package's folder, found without importing it (matplotlib imports slowly)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the MNIST-M-style set needs the package '{package}' (it ships the background photographs); "
                        "run `make setup` to install the pinned requirements")
    return Path(next(iter(spec.submodule_search_locations)))


def photo_files() -> list[Path]:
    """The background photographs, checked against their recorded md5."""
    files = []
    for package, relpath, expected in PHOTOS:
        path = _package_dir(package) / relpath
        if not path.is_file():
            raise DataError(f"{path} is missing: the installed '{package}' does not ship the photograph the "
                            "MNIST-M-style set is built from; reinstall the pinned version (`make setup`)")
        actual = file_hash(path)
        if actual != expected:
            raise DataError(f"{path}: md5 {actual} differs from the recorded {expected}; the installed '{package}' "
                            "ships a different photograph, which would change the dataset — install the pinned "
                            "version from requirements.txt (`make setup`)")
        files.append(path)
    return files


def load_photos() -> list[np.ndarray]:
    """The photographs as uint8 H×W×3 arrays."""
    return [np.asarray(Image.open(path).convert("RGB")) for path in photo_files()]


def blend(digits: np.ndarray, photos: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """uint8 N×H×W grey digits → uint8 N×3×H×W: |random photo patch − digit| per channel.

    For each digit a photograph is drawn uniformly, then a patch position uniformly among all
    positions where an H×W patch fits.
    """
    n, h, w = digits.shape
    choice = rng.integers(0, len(photos), size=n)
    out = np.empty((n, h, w, 3), dtype=np.uint8)
    for index, photo in enumerate(photos):
        if photo.shape[0] < h or photo.shape[1] < w:
            raise DataError(f"photograph {index} is {photo.shape[0]}×{photo.shape[1]}, smaller than the {h}×{w} "
                            "digits it should back")
        chosen = np.flatnonzero(choice == index)
        rows = rng.integers(0, photo.shape[0] - h + 1, size=len(chosen))
        cols = rng.integers(0, photo.shape[1] - w + 1, size=len(chosen))
        # A view of every h×w×3 window; indexing it copies only the chosen patches.
        windows = np.lib.stride_tricks.sliding_window_view(photo, (h, w, 3))[:, :, 0]
        for start in range(0, len(chosen), 8192):  # bounded int16 temporaries
            part = slice(start, start + 8192)
            patches = windows[rows[part], cols[part]].astype(np.int16)
            digit = digits[chosen[part]].astype(np.int16)[..., None]
            out[chosen[part]] = np.abs(patches - digit).astype(np.uint8)
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def build(digits_train: np.ndarray, digits_test: np.ndarray | None, seed: int = MNISTM_SEED,
          ) -> tuple[np.ndarray, np.ndarray | None, dict[str, str]]:
    """(train images, test images, version facts) for MNIST's train/test digits.

    The version names the recipe, the seed, each photograph's file md5 and the md5 of the decoded
    pixels (JPEG decoding belongs to the pinned Pillow; a different decoder would show here).
    """
    photos = load_photos()
    train = blend(digits_train, photos, np.random.default_rng([seed, 0]))
    test = blend(digits_test, photos, np.random.default_rng([seed, 1])) if digits_test is not None else None
    pixels = hashlib.md5(b"".join(p.tobytes() for p in photos)).hexdigest()
    version = {"mnistm_recipe": RECIPE, "mnistm_seed": str(seed), "photo_pixels_md5": pixels}
    version |= {f"photo:{Path(rel).name}": md5 for _, rel, md5 in PHOTOS}
    return train, test, version
