"""What a data source holds, read cheaply (headers, folder listings, one image) before any
stage runs — so a path that cannot be read, or an architecture that cannot fit the data,
fails at `gandistill run` / `gandistill validate`, not after prepare_data. Torch-free.

`check_readable` refuses a `data.path` that is missing, of the wrong kind, unreadable, or
without what its source needs. `input_shape` returns None when the shape cannot be known
without the full load (a DVC repository at a revision): prepare_data then checks the fit on
the loaded arrays, still before writing anything.
"""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import numpy as np

from gandistill.config import DataParams, Params
from gandistill.errors import ConfigError, DataError

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


def _check_path(source: str, path: Path, where: str) -> None:
    if source in ("mnist", "mnistm"):  # a missing folder is fetched (md5-checked) by `gandistill run`
        if path.exists() and not path.is_dir():
            raise DataError(f"{where}: is a file; it must be the folder holding (or to receive) the MNIST IDX files")
        return
    if source == "npz":
        if not path.is_file():
            raise DataError(f"{where}: {'is a folder' if path.is_dir() else 'no such file'}; point it at a .npz "
                            "file holding arrays x and y (np.savez(path, x=images, y=labels))")
        if not zipfile.is_zipfile(path):
            raise DataError(f"{where}: not a .npz file (not a zip archive); write it with "
                            "np.savez(path, x=images, y=labels)")
        with zipfile.ZipFile(path) as archive:
            names = {name.removesuffix(".npy") for name in archive.namelist()}
        missing = [key for key in ("x", "y") if key not in names]
        if missing:
            found = ", ".join(sorted(names)) or "none"
            raise DataError(f"{where}: holds no array {' or '.join(missing)} (found: {found}); save with "
                            "np.savez(path, x=images, y=labels)")
        _npz_shape(path)  # reads x's header: a damaged archive member fails here
    elif source in ("idx", "imagefolder"):
        if not path.is_dir():
            raise DataError(f"{where}: {'is a file' if path.exists() else 'no such folder'}; it must be a folder of "
                            + ("MNIST-format IDX files" if source == "idx" else "class folders of images"))
        if source == "idx":
            from gandistill.data.idx import IDX_NAMES

            for role in ("train_x", "train_y"):
                files = [path / f"{stem}{gz}" for stem in IDX_NAMES[role] for gz in ("", ".gz")]
                found = next((f for f in files if f.is_file()), None)
                if found is None:
                    raise DataError(f"{where}: no {IDX_NAMES[role][0]} (or .gz) in the folder; it must hold "
                                    "MNIST-format IDX files")
                with found.open("rb") as handle:
                    handle.read(4)
        elif not any(entry.is_dir() and not entry.name.startswith(".") for entry in path.iterdir()):
            raise DataError(f"{where}: holds no class folders; put each class's images in a subfolder named "
                            "after the class")


def check_readable(params: Params) -> str:
    """Refuse, before anything runs, a data.path / data.target_path (or an imported teacher.path)
    that is missing, of the wrong kind, unreadable, or without what its source needs — from
    headers and folder listings, never loading the dataset (DataError, exit 3). A dvc path
    lives in its repository and is checked when fetched. Returns what was found, in words."""
    data = params.data
    pairs = [("data.path", data.source, data.path)]
    if data.target_source is not None and data.target_path is not None:
        pairs.append(("data.target_path", data.target_source, data.target_path))
    for key, source, path in pairs:
        where = f"{key}={path} ({key.replace('path', 'source')}={source})"
        try:
            try:
                if source != "dvc":
                    _check_path(source, Path(path), where)
            except (OSError, ValueError, zipfile.BadZipFile) as exc:
                raise DataError(f"{where}: cannot be read ({exc}); check the path and its permissions") from None
        except DataError as exc:
            if key == "data.path":
                raise
            # The target domain is a pairing the user configured: a ConfigError, as prepare_data reports it.
            raise ConfigError(f"{exc}. Fix data.target_source / data.target_path.") from None
    teacher = params.teacher
    if teacher.source != "train" and teacher.path and not Path(teacher.path).is_file():
        raise DataError(f"teacher.path={teacher.path}: file not found (teacher.source={teacher.source}); give the "
                        "path of the file to import")
    if data.source == "dvc":
        return f"data.path {data.path} is read from the DVC repository when the run starts"
    if not Path(data.path).exists():
        return f"data.path {data.path} is fetched (MNIST, md5-checked) when the run starts"
    return f"data.path {data.path} is readable"
