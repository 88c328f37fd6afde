"""ImageFolder source: one subfolder per class of image files, read with Pillow.

    data.path/                      or    data.path/
      cat/  a.png b.jpg …                   train/ cat/ … dog/ …
      dog/  …                               test/  cat/ … dog/ …   (optional; val/ is merged into train)

Class names are the folder names, sorted; label i is the i-th name. A dataset is RGB when
any image is colour (grey images are then repeated to 3 channels), grey otherwise. Images
of different sizes need `data.resize`; without it the error names an offending file.
Hidden files and folders (".…") are skipped; other non-image files are an error, so a
mistyped extension never silently drops a class's data.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from gandistill.data.images import RESAMPLE
from gandistill.errors import DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
SPLIT_NAMES = {"train", "test", "val"}


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _class_folders(root: Path) -> dict[str, Path]:
    entries = _visible(root)
    stray = [p.name for p in entries if not p.is_dir()]
    if stray:
        raise DataError(f"{root}: found file(s) {', '.join(stray[:3])} next to the class folders; an image "
                        "folder holds one subfolder per class (e.g. cat/, dog/) — move the files into them")
    return {p.name: p for p in entries}


def _image_files(folder: Path) -> list[Path]:
    files = []
    for p in _visible(folder):
        if p.is_dir():
            raise DataError(f"{p}: nested folder inside class folder {folder.name}; put the class's images "
                            "directly in it (one level: data.path/<class>/<image>)")
        if p.suffix.lower() not in IMAGE_EXTENSIONS:
            allowed = ", ".join(sorted(IMAGE_EXTENSIONS))
            raise DataError(f"{p}: not an image file (extension {p.suffix or 'none'}); class folders may "
                            f"hold only {allowed} files; remove or convert it")
        files.append(p)
    if not files:
        raise DataError(f"{folder}: class folder '{folder.name}' holds no images; add PNG/JPEG files or "
                        "remove the folder")
    return files


def read_image(path: Path, resize: int | None) -> np.ndarray:
    """One image as uint8 H×W (grey) or H×W×3 (colour), resized to resize×resize if set."""
    try:
        with Image.open(path) as img:
            img.load()  # decode now: truncated or corrupt files fail here, named
            if img.mode in GREY_MODES:
                if img.mode.startswith("I"):  # 16-bit grey → 8-bit by scaling, not clipping
                    arr = np.asarray(img, dtype=np.float64)
                    arr = arr / (257.0 if arr.max() > 255 else 1.0)
                    img = Image.fromarray(arr.round().astype(np.uint8))
                else:
                    img = img.convert("L")
            else:
                img = img.convert("RGB")  # palette, RGBA (alpha dropped), CMYK, YCbCr …
            if resize is not None and img.size != (resize, resize):
                img = img.resize((resize, resize), RESAMPLE)
            return np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{path}: unreadable or corrupt image ({exc}); replace or delete the file") from None


def _read_split(classes: dict[str, Path], resize: int | None, index: dict[str, int],
                digest: Any, root: Path) -> tuple[list[np.ndarray], list[int], list[Path]]:
    images, labels, files = [], [], []
    for name, folder in classes.items():
        for path in _image_files(folder):
            images.append(read_image(path, resize))
            labels.append(index[name])
            files.append(path)
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return images, labels, files


def _stack(images: list[np.ndarray], files: list[Path], channels: int,
           first: tuple[Path, tuple[int, int]]) -> np.ndarray:
    for img, path in zip(images, files, strict=True):
        if img.shape[:2] != first[1]:
            raise DataError(
                f"mixed image sizes: {path} is {img.shape[0]}×{img.shape[1]} but {first[0]} is "
                f"{first[1][0]}×{first[1][1]}; set data.resize=N to resize every image to N×N, or make the "
                "files one size")
    if channels == 3:
        images = [np.repeat(img[:, :, None], 3, axis=2) if img.ndim == 2 else img for img in images]
        return np.stack(images).transpose(0, 3, 1, 2).copy()
    return np.stack(images)[:, None]


def load_imagefolder_dir(root: Path, resize: int | None = None) -> tuple[
        np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, list[str], dict[str, str]]:
    """(train_x, train_y, test_x, test_y, class_names, version) from an image folder tree."""
    if not root.is_dir():
        raise DataError(f"{root}: image folder not found; set data.path to a folder with one subfolder "
                        "per class")
    top = _class_folders(root)
    split_layout = "train" in top and set(top) <= SPLIT_NAMES
    if split_layout:
        train_classes = _class_folders(top["train"])
        extra = _class_folders(top["val"]) if "val" in top else {}
        test_classes = _class_folders(top["test"]) if "test" in top else {}
    else:
        train_classes, extra, test_classes = top, {}, {}
    where = top["train"] if split_layout else root
    if len(train_classes) < 2:
        raise DataError(f"{where}: found {len(train_classes)} class folder(s) "
                        f"({', '.join(train_classes) or 'none'}); a classifier needs at least 2 — "
                        "add one subfolder per class")
    class_names = sorted(train_classes)
    unknown = sorted((set(test_classes) | set(extra)) - set(class_names))
    if unknown:
        raise DataError(f"{root}: test/val class folder(s) {', '.join(unknown)} have no train/ folder; every "
                        "class needs training images — add train/<class>/ or remove them")
    index = {name: i for i, name in enumerate(class_names)}
    digest = hashlib.md5()
    train_imgs, train_lbls, train_files = _read_split({n: train_classes[n] for n in class_names}, resize,
                                                      index, digest, root)
    for name in sorted(extra):  # a user's val/ is more training data: gandistill carves its own val split
        imgs, lbls, files = _read_split({name: extra[name]}, resize, index, digest, root)
        train_imgs += imgs
        train_lbls += lbls
        train_files += files
    test_imgs, test_lbls, test_files = _read_split({n: test_classes[n] for n in sorted(test_classes)}, resize,
                                                   index, digest, root)
    channels = 3 if any(img.ndim == 3 for img in train_imgs + test_imgs) else 1
    first = (train_files[0], train_imgs[0].shape[:2])
    train_x = _stack(train_imgs, train_files, channels, first)
    test_x = _stack(test_imgs, test_files, channels, first) if test_imgs else None
    train_y = np.asarray(train_lbls, dtype=np.int64)
    test_y = np.asarray(test_lbls, dtype=np.int64) if test_imgs else None
    version = {"imagefolder_md5": digest.hexdigest(), "files": str(len(train_files) + len(test_files))}
    log.info("imagefolder %s: %d classes, %d train / %d test images, %s", root, len(class_names),
             len(train_files), len(test_files), "RGB" if channels == 3 else "grey")
    return train_x, train_y, test_x, test_y, class_names, version
