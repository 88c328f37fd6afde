"""gandistill.storage against moto's S3 server on 127.0.0.1 (fast; accepts any credentials)
and against local paths. The same functions run against a real SeaweedFS server in
tests/integration/test_storage_seaweedfs.py, where credentials are really checked."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gandistill import storage
from gandistill.errors import ServiceError
from gandistill.files import file_hash

BUCKET = "unit"


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    for key, value in {"AWS_ENDPOINT_URL": moto_endpoint, "AWS_ACCESS_KEY_ID": "unit",
                       "AWS_SECRET_ACCESS_KEY": "unit", "AWS_DEFAULT_REGION": "us-east-1",
                       "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    storage._client.cache_clear()
    client = storage.client()
    client.create_bucket(Bucket=BUCKET)
    yield client
    for obj in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=obj["Key"])
    client.delete_bucket(Bucket=BUCKET)
    storage._client.cache_clear()


def _keys(client: object) -> list[str]:
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=BUCKET).get("Contents", []))  # type: ignore[attr-defined]


def _tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "a.bin").write_bytes(os.urandom(3000))
    (root / "sub" / "b.txt").write_text("hello")
    return root


def test_retries_are_bounded_with_backoff(s3: object) -> None:
    retries = storage.client().meta.config.retries
    assert retries == {"total_max_attempts": 5, "mode": "standard"}  # standard = exponential backoff


def test_file_roundtrip_verified_and_committed(s3: object, tmp_path: Path) -> None:
    src = tmp_path / "model.pt"
    src.write_bytes(os.urandom(10_000))
    md5 = storage.upload_file(src, f"s3://{BUCKET}/m/model.pt")
    assert md5 == file_hash(src)
    assert _keys(s3) == ["m/model.pt"]  # the staging key is gone
    head = s3.head_object(Bucket=BUCKET, Key="m/model.pt")  # type: ignore[attr-defined]
    assert head["Metadata"][storage.MD5_META] == md5
    assert storage.exists(f"s3://{BUCKET}/m/model.pt")
    assert not storage.exists(f"s3://{BUCKET}/m/other.pt")
    out = storage.download_file(f"s3://{BUCKET}/m/model.pt", tmp_path / "dl" / "model.pt")
    assert out.read_bytes() == src.read_bytes()


def test_multipart_upload_etag_checked(s3: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage, "PART_SIZE", 5 * 1024 * 1024)  # S3's minimum part size
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(11 * 1024 * 1024))
    assert storage.expected_etag(src).endswith("-3")
    storage.upload_file(src, f"s3://{BUCKET}/big.bin")
    assert storage.download_file(f"s3://{BUCKET}/big.bin", tmp_path / "out").read_bytes() == src.read_bytes()


def test_failed_verification_commits_nothing(s3: object, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "x"
    src.write_bytes(b"payload")
    monkeypatch.setattr(storage, "expected_etag", lambda path, part_size=None: "0" * 32)
    with pytest.raises(ServiceError, match="corrupt"):
        storage.upload_file(src, f"s3://{BUCKET}/x")
    assert _keys(s3) == []  # neither the final key nor a staging key


def test_corrupt_object_is_refused_on_download(s3: object, tmp_path: Path) -> None:
    src = tmp_path / "x"
    src.write_bytes(b"original")
    storage.upload_file(src, f"s3://{BUCKET}/x")
    # Someone overwrites the bytes but keeps the recorded md5.
    s3.put_object(Bucket=BUCKET, Key="x", Body=b"tampered",  # type: ignore[attr-defined]
                  Metadata={storage.MD5_META: file_hash(src)})
    with pytest.raises(ServiceError, match="md5"):
        storage.download_file(f"s3://{BUCKET}/x", tmp_path / "y")
    assert not (tmp_path / "y").exists() and not list(tmp_path.glob(".y.*"))


def test_folder_roundtrip_and_manifest_commit(s3: object, tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    manifest = storage.upload_dir(src, f"s3://{BUCKET}/d")
    assert set(manifest) == {"a.bin", "sub/b.txt"}
    assert storage.exists(f"s3://{BUCKET}/d")
    out = storage.download_dir(f"s3://{BUCKET}/d", tmp_path / "out")
    assert (out / "a.bin").read_bytes() == (src / "a.bin").read_bytes()
    assert json.loads((out / storage.MANIFEST).read_text()) == manifest

    # Without its manifest a folder is incomplete: not "existing", not downloadable.
    s3.delete_object(Bucket=BUCKET, Key=f"d/{storage.MANIFEST}")  # type: ignore[attr-defined]
    assert not storage.exists(f"s3://{BUCKET}/d")
    with pytest.raises(ServiceError, match="_MANIFEST"):
        storage.download_dir(f"s3://{BUCKET}/d", tmp_path / "out2")
    assert not (tmp_path / "out2").exists()


def test_copy_between_all_kinds_of_location(s3: object, tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    storage.copy(src, f"s3://{BUCKET}/c1")  # local dir -> s3
    storage.copy(f"s3://{BUCKET}/c1", f"s3://{BUCKET}/c2")  # s3 dir -> s3
    storage.copy(f"s3://{BUCKET}/c2", tmp_path / "back")  # s3 dir -> local
    assert (tmp_path / "back" / "sub" / "b.txt").read_text() == "hello"
    storage.copy(f"s3://{BUCKET}/c2/a.bin", f"s3://{BUCKET}/single.bin")  # s3 file -> s3, server-side
    storage.copy(f"s3://{BUCKET}/single.bin", tmp_path / "single.bin")  # s3 file -> local
    assert (tmp_path / "single.bin").read_bytes() == (src / "a.bin").read_bytes()
    storage.copy(tmp_path / "single.bin", tmp_path / "local" / "copy.bin")  # local -> local
    assert storage.exists(tmp_path / "local" / "copy.bin")


def test_local_paths_need_no_object_store(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    storage.upload_dir(src, str(tmp_path / "dst"))
    assert storage.exists(tmp_path / "dst")
    assert storage.read_manifest(str(tmp_path / "dst"))["sub/b.txt"]["size"] == 5
    assert not list(tmp_path.glob(".dst.*"))  # staging folder renamed into place


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_endpoint_fails_fast_naming_endpoint_and_fix(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    for key, value in {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y",
                       "GANDISTILL_S3_MAX_ATTEMPTS": "2", "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(key, value)
    storage._client.cache_clear()
    src = tmp_path / "f"
    src.write_bytes(b"x")
    started = time.monotonic()
    with pytest.raises(ServiceError) as info:
        storage.upload_file(src, "s3://bucket/f")
    storage._client.cache_clear()
    assert time.monotonic() - started < 30
    assert url in str(info.value) and "make stack-up" in str(info.value) and "2 attempts" in str(info.value)


def test_missing_credentials_name_the_variables(moto_endpoint: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never probe 169.254.169.254
    storage._client.cache_clear()
    with pytest.raises(ServiceError, match="AWS_ACCESS_KEY_ID"):
        storage.exists("s3://bucket/key")
    storage._client.cache_clear()


def test_missing_bucket_names_the_fix(s3: object, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(ServiceError, match="bucket 'no-such-bucket' does not exist"):
        storage.upload_file(tmp_path / "f", "s3://no-such-bucket/f")
