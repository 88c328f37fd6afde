"""Dataset sources (npz, imagefolder, idx): layouts, resizing, class names, and every user
error — each must name the offending item and the fix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import write_idx
from PIL import Image

from gandistill.config import DataParams, load_params
from gandistill.data.sources import load_source
from gandistill.errors import DataError
from gandistill.stages import prepare_data

ROOT = Path(__file__).resolve().parents[1]


def patterns(n: int, k: int, h: int, w: int | None = None, c: int = 1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 N×C×H×W: class j = a bright bar at a class-specific row (+ a class tint in RGB)."""
    w = w or h
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    rng.shuffle(y)
    x = rng.integers(0, 60, size=(n, c, h, w)).astype(np.uint8)
    for i, label in enumerate(y):
        row = (label * h) // k
        x[i, :, row : row + max(1, h // k), :] = 230
        if c == 3:
            x[i, label % 3] //= 2
    return x, y.astype(np.int64)


def save_folder(root: Path, x: np.ndarray, y: np.ndarray, names: list[str], fmt: str = "png") -> None:
    """Write N×C×H×W images as <root>/<class>/<i>.<fmt> (fmt 'mix' alternates PNG and JPEG)."""
    for i, (img, label) in enumerate(zip(x, y, strict=True)):
        folder = root / names[label]
        folder.mkdir(parents=True, exist_ok=True)
        ext = ("png", "jpg")[i % 2] if fmt == "mix" else fmt
        pixels = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
        Image.fromarray(pixels).save(folder / f"{i:04d}.{ext}")


def data_params(source: str, path: Path, **kw: object) -> DataParams:
    return DataParams(source=source, path=str(path), **kw)  # type: ignore[arg-type]


# -- npz ----------------------------------------------------------------------------------

@pytest.mark.parametrize("layout,c", [("nhw", 1), ("nhwc", 3), ("nchw", 3), ("nhwc", 1), ("nchw", 1)])
def test_npz_layouts_load_as_nchw(tmp_path: Path, layout: str, c: int) -> None:
    x, y = patterns(40, 3, 16, 12, c=c)
    stored = {"nhw": x[:, 0] if c == 1 else x, "nhwc": x.transpose(0, 2, 3, 1), "nchw": x}[layout]
    np.savez(tmp_path / "d.npz", x=stored, y=y)
    raw = load_source(data_params("npz", tmp_path / "d.npz"))
    assert raw.train_x.shape == (40, c, 16, 12) and raw.train_x.dtype == np.uint8
    np.testing.assert_array_equal(raw.train_x, x)
    np.testing.assert_array_equal(raw.train_y, y)
    assert raw.test_x is None and raw.class_names == ["0", "1", "2"]
    assert "d.npz" in raw.version


def test_npz_test_split_class_names_and_integer_dtypes(tmp_path: Path) -> None:
    x, y = patterns(60, 3, 16, c=3)
    np.savez(tmp_path / "d.npz", x=x[:40].transpose(0, 2, 3, 1).astype(np.int32), y=y[:40].astype(np.int16)[:, None],
             x_test=x[40:].transpose(0, 2, 3, 1), y_test=y[40:].astype(np.float32),
             class_names=np.array(["cat", "dog", "emu"]))
    raw = load_source(data_params("npz", tmp_path / "d.npz"))
    assert raw.class_names == ["cat", "dog", "emu"]
    assert raw.train_x.shape == (40, 3, 16, 16) and raw.test_x is not None and raw.test_x.shape == (20, 3, 16, 16)
    np.testing.assert_array_equal(raw.test_y, y[40:])


def _npz_error(tmp_path: Path, **arrays: np.ndarray) -> str:
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError) as err:
        load_source(data_params("npz", tmp_path / "bad.npz"))
    assert "bad.npz" in str(err.value)
    return str(err.value)


def test_npz_errors_name_the_array_and_the_fix(tmp_path: Path) -> None:
    x, y = patterns(20, 2, 16)
    assert "missing array(s) y" in _npz_error(tmp_path, x=x)
    assert "np.savez" in _npz_error(tmp_path, images=x, labels=y)
    assert "x_test without its partner" in _npz_error(tmp_path, x=x, y=y, x_test=x)
    assert "astype(np.uint8)" in _npz_error(tmp_path, x=x.astype(np.float32) / 255, y=y)
    assert "0–255" in _npz_error(tmp_path, x=x.astype(np.int32) * 4, y=y)
    assert "20 images but 19 labels" in _npz_error(tmp_path, x=x, y=y[:-1])
    assert "negative" in _npz_error(tmp_path, x=x, y=y - 1)
    msg = _npz_error(tmp_path, x=x, y=y + 1, class_names=np.array(["a", "b"]))
    assert "label 2 is out of range for 2 class_names" in msg and "add the missing names" in msg
    assert "channel axis" in _npz_error(tmp_path, x=np.zeros((20, 5, 16, 16), np.uint8), y=y)
    assert "N×H×W" in _npz_error(tmp_path, x=np.zeros((20, 256), np.uint8), y=y)
    assert "argmax" in _npz_error(tmp_path, x=x, y=np.eye(2)[y])
    assert "integer class indices" in _npz_error(tmp_path, x=x, y=y + 0.5)
    assert "duplicates" in _npz_error(tmp_path, x=x, y=y, class_names=np.array(["a", "a"]))
    assert "string array" in _npz_error(tmp_path, x=x, y=y, class_names=np.array(["a", "b"], dtype=object))


def test_npz_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="npz file not found"):
        load_source(data_params("npz", tmp_path / "nope.npz"))
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    with pytest.raises(DataError, match="junk.npz: not a readable .npz"):
        load_source(data_params("npz", tmp_path / "junk.npz"))


# -- sizes and resizing (every source) ------------------------------------------------------

def test_size_limits_and_resize(tmp_path: Path) -> None:
    x, y = patterns(20, 2, 80, 70)
    np.savez(tmp_path / "big.npz", x=x, y=y)
    with pytest.raises(DataError, match=r"80×70 pixels.*set data.resize=N"):
        load_source(data_params("npz", tmp_path / "big.npz"))
    raw = load_source(data_params("npz", tmp_path / "big.npz", resize=24))
    assert raw.train_x.shape == (20, 1, 24, 24) and raw.version["resize"] == "24"
    small, ys = patterns(20, 2, 6)
    np.savez(tmp_path / "small.npz", x=small, y=ys)
    with pytest.raises(DataError, match="6×6 pixels"):
        load_source(data_params("npz", tmp_path / "small.npz"))


def test_resize_keeps_rgb_content(tmp_path: Path) -> None:
    x = np.zeros((4, 3, 32, 32), np.uint8)
    x[:, 0] = 200  # red
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1, 0, 1]))
    raw = load_source(data_params("npz", tmp_path / "d.npz", resize=16))
    assert raw.train_x.shape == (4, 3, 16, 16)
    assert (raw.train_x[:, 0] == 200).all() and (raw.train_x[:, 1:] == 0).all()


# -- idx --------------------------------------------------------------------------------------

def test_idx_folder_any_class_count_with_resize(tmp_path: Path) -> None:
    x, y = patterns(60, 3, 20)
    write_idx(tmp_path / "train-images-idx3-ubyte", x[:, 0])
    write_idx(tmp_path / "train-labels-idx1-ubyte", y.astype(np.uint8))
    raw = load_source(data_params("idx", tmp_path, resize=16))
    assert raw.train_x.shape == (60, 1, 16, 16) and raw.class_names == ["0", "1", "2"] and raw.test_x is None


# -- imagefolder -----------------------------------------------------------------------------

def test_imagefolder_png_and_jpeg_grey(tmp_path: Path) -> None:
    x, y = patterns(30, 3, 16)
    names = ["zebra", "apple", "mango"]
    save_folder(tmp_path / "imgs", x, y, names, fmt="mix")
    raw = load_source(data_params("imagefolder", tmp_path / "imgs"))
    assert raw.class_names == ["apple", "mango", "zebra"]  # sorted folder names
    assert raw.train_x.shape == (30, 1, 16, 16) and raw.test_x is None
    # label i is the i-th sorted name; PNGs are lossless so their pixels round-trip exactly
    order = {name: i for i, name in enumerate(sorted(names))}
    expected = {(order[names[label]], img.tobytes()) for i, (img, label) in enumerate(zip(x, y, strict=True))
                if i % 2 == 0}
    got = {(int(label), img.tobytes()) for img, label in zip(raw.train_x, raw.train_y, strict=True)}
    assert expected <= got
    assert raw.version["files"] == "30" and len(raw.version["imagefolder_md5"]) == 32


def test_imagefolder_rgb_split_layout_val_merged(tmp_path: Path) -> None:
    x, y = patterns(45, 3, 16, 24, c=3)
    names = ["a", "b", "c"]
    save_folder(tmp_path / "ds" / "train", x[:30], y[:30], names)
    save_folder(tmp_path / "ds" / "val", x[30:36], y[30:36], names)
    save_folder(tmp_path / "ds" / "test", x[36:], y[36:], names)
    raw = load_source(data_params("imagefolder", tmp_path / "ds"))
    assert raw.class_names == names
    assert raw.train_x.shape == (36, 3, 16, 24)
    assert raw.test_x is not None and raw.test_x.shape == (9, 3, 16, 24)


def test_imagefolder_grey_and_colour_mixed_become_rgb(tmp_path: Path) -> None:
    x, y = patterns(8, 2, 16, c=3)
    save_folder(tmp_path / "d", x, y, ["a", "b"])
    Image.fromarray(x[0, 0]).save(tmp_path / "d" / "a" / "grey.png")
    Image.fromarray(x[0].transpose(1, 2, 0)).convert("RGBA").save(tmp_path / "d" / "b" / "alpha.png")
    Image.fromarray(x[0].transpose(1, 2, 0)).convert("P").save(tmp_path / "d" / "b" / "palette.png")
    raw = load_source(data_params("imagefolder", tmp_path / "d"))
    assert raw.train_x.shape == (11, 3, 16, 16)


def test_imagefolder_16bit_grey_is_scaled(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / "d" / name).mkdir(parents=True)
        Image.fromarray(np.full((16, 16), 65535, np.uint16)).save(tmp_path / "d" / name / "x.png")
    raw = load_source(data_params("imagefolder", tmp_path / "d"))
    assert raw.train_x.shape == (2, 1, 16, 16) and (raw.train_x == 255).all()


def test_imagefolder_mixed_sizes_need_resize(tmp_path: Path) -> None:
    x, y = patterns(10, 2, 16)
    save_folder(tmp_path / "d", x, y, ["a", "b"])
    Image.fromarray(np.zeros((20, 18), np.uint8)).save(tmp_path / "d" / "b" / "odd.png")
    with pytest.raises(DataError) as err:
        load_source(data_params("imagefolder", tmp_path / "d"))
    assert "odd.png is 20×18" in str(err.value) and "data.resize" in str(err.value)
    raw = load_source(data_params("imagefolder", tmp_path / "d", resize=12))
    assert raw.train_x.shape == (11, 1, 12, 12)


def test_imagefolder_errors_name_the_item_and_the_fix(tmp_path: Path) -> None:
    x, y = patterns(10, 2, 16)

    def error(build) -> str:  # type: ignore[no-untyped-def]
        root = tmp_path / f"case{len(list(tmp_path.iterdir()))}"
        save_folder(root, x, y, ["a", "b"])
        build(root)
        with pytest.raises(DataError) as err:
            load_source(data_params("imagefolder", root))
        return str(err.value)

    msg = error(lambda r: (r / "c").mkdir())
    assert "class folder 'c' holds no images" in msg and "remove the folder" in msg
    msg = error(lambda r: __import__("shutil").rmtree(r / "b"))
    assert "found 1 class folder(s) (a)" in msg and "at least 2" in msg
    msg = error(lambda r: (r / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage"))
    assert "broken.png: unreadable or corrupt image" in msg and "replace or delete" in msg
    good = (tmp_path / "case0" / "a").iterdir().__next__().read_bytes()
    msg = error(lambda r: (r / "a" / "cut.png").write_bytes(good[: len(good) // 2]))
    assert "cut.png: unreadable or corrupt image" in msg
    msg = error(lambda r: (r / "a" / "notes.txt").write_text("hi"))
    assert "notes.txt: not an image file" in msg
    msg = error(lambda r: (r / "stray.png").write_bytes(good))
    assert "stray.png" in msg and "one subfolder per class" in msg
    msg = error(lambda r: (r / "a" / "deeper").mkdir())
    assert "nested folder" in msg
    with pytest.raises(DataError, match="image folder not found"):
        load_source(data_params("imagefolder", tmp_path / "missing"))


def test_imagefolder_test_class_without_train_folder(tmp_path: Path) -> None:
    x, y = patterns(10, 2, 16)
    save_folder(tmp_path / "d" / "train", x, y, ["a", "b"])
    save_folder(tmp_path / "d" / "test", x, y, ["a", "zz"])
    with pytest.raises(DataError, match="zz have no train/ folder"):
        load_source(data_params("imagefolder", tmp_path / "d"))


def test_hidden_files_are_ignored(tmp_path: Path) -> None:
    x, y = patterns(10, 2, 16)
    save_folder(tmp_path / "d", x, y, ["a", "b"])
    (tmp_path / "d" / ".DS_Store").write_text("")
    (tmp_path / "d" / "a" / ".thumbs").write_text("")
    (tmp_path / "d" / ".cache").mkdir()
    assert load_source(data_params("imagefolder", tmp_path / "d")).train_x.shape == (10, 1, 16, 16)


# -- prepare_data on each source --------------------------------------------------------------

def _prepare(tmp_path: Path, *overrides: str) -> dict:
    params = load_params(ROOT / "params.yaml", list(overrides), "smoke")
    return prepare_data.run(params, tmp_path / "prepared")


def test_prepare_data_keeps_class_names_and_carves_a_stratified_test_split(tmp_path: Path) -> None:
    x, y = patterns(200, 20, 16)
    save_folder(tmp_path / "imgs", x, y, [f"class_{i:02d}" for i in range(20)])
    result = _prepare(tmp_path, "data.source=imagefolder", f"data.path={tmp_path / 'imgs'}")
    meta = json.loads((tmp_path / "prepared" / "meta.json").read_text())
    assert meta["class_names"] == [f"class_{i:02d}" for i in range(20)] and result["num_classes"] == 20
    assert result["input_shape"] == [1, 16, 16] and sum(result["counts"].values()) == 200
    with np.load(tmp_path / "prepared" / "test.npz") as test:
        assert set(test["y"].tolist()) == set(range(20))  # stratified: every class in test
    assert len(meta["mean"]) == 1 and meta["std"][0] > 0


def test_prepare_data_rgb_npz_with_own_test_split(tmp_path: Path) -> None:
    x, y = patterns(90, 3, 32, c=3)
    np.savez(tmp_path / "d.npz", x=x[:60].transpose(0, 2, 3, 1), y=y[:60], x_test=x[60:], y_test=y[60:],
             class_names=np.array(["r", "g", "b"]))
    result = _prepare(tmp_path, "data.source=npz", f"data.path={tmp_path / 'd.npz'}")
    assert result["input_shape"] == [3, 32, 32] and result["counts"]["test"] == 30
    assert result["class_names"] == ["r", "g", "b"] and len(result["mean"]) == 3


def test_prepare_data_rejects_single_class_and_empty_classes(tmp_path: Path) -> None:
    x, _ = patterns(20, 2, 16)
    np.savez(tmp_path / "one.npz", x=x, y=np.zeros(20, np.int64))
    with pytest.raises(DataError, match="single class"):
        _prepare(tmp_path, "data.source=npz", f"data.path={tmp_path / 'one.npz'}")
    np.savez(tmp_path / "gap.npz", x=x, y=np.arange(20) % 2 * 2, class_names=np.array(["a", "b", "c"]))
    with pytest.raises(DataError, match=r"\['b'\] have no training images"):
        _prepare(tmp_path, "data.source=npz", f"data.path={tmp_path / 'gap.npz'}")


def test_a_label_out_of_range_without_class_names_is_named_with_where_it_is(tmp_path: Path) -> None:
    """Label 12 in 10-class data without class_names: the message names label 12 and its
    positions (the array and the indices), not only "classes 10, 11 have no training images"."""
    x, y = patterns(200, 10, 16)
    y[[37, 150]] = 12
    np.savez(tmp_path / "stray.npz", x=x, y=y)
    with pytest.raises(DataError) as err:
        _prepare(tmp_path, "data.source=npz", f"data.path={tmp_path / 'stray.npz'}")
    message = str(err.value)
    assert "label 12 at y[37, 150] (2 images)" in message and "classes 10, 11" in message
    assert "out of range" in message and not (tmp_path / "prepared").exists()
    idx = tmp_path / "idx"  # an IDX folder names the labels file
    idx.mkdir()
    write_idx(idx / "train-images-idx3-ubyte", x[:, 0])
    write_idx(idx / "train-labels-idx1-ubyte", y.astype(np.uint8))
    with pytest.raises(DataError, match=r"label 12 at train-labels-idx1-ubyte\[37, 150\]"):
        _prepare(tmp_path, "data.source=idx", f"data.path={idx}")
