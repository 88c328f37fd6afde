"""gandistill.storage against moto's S3 server on 127.0.0.1 (fast; accepts any credentials)
and against local paths. The same functions run against a real SeaweedFS server in
tests/integration/test_stack_and_storage.py, where credentials are really checked."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

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


def _on_head(client: object, rewrite: Callable[[dict[str, Any]], None]) -> None:
    """Change what HeadObject reports, as a server we cannot run here would (the client is
    storage.client(), cached for the test; the s3 fixture drops it afterwards)."""
    client.meta.events.register("after-call.s3.HeadObject",  # type: ignore[attr-defined]
                                lambda parsed, **_: rewrite(parsed))


def test_uploads_carry_a_sha256_checksum_the_server_stores(s3: object, tmp_path: Path) -> None:
    src = tmp_path / "x"
    src.write_bytes(os.urandom(5000))
    storage.upload_file(src, f"s3://{BUCKET}/x")
    sha256 = base64.b64encode(hashlib.sha256(src.read_bytes()).digest()).decode()
    head = s3.head_object(Bucket=BUCKET, Key="x", ChecksumMode="ENABLED")  # type: ignore[attr-defined]
    assert head["ChecksumSHA256"] == sha256  # the committed object keeps it
    assert head["Metadata"][storage.SHA256_META] == sha256


@pytest.fixture
def kms_bucket(s3: object, moto_endpoint: str) -> str:
    """The test bucket with default SSE-KMS encryption under a key of moto's KMS."""
    import boto3

    key = boto3.client("kms", endpoint_url=moto_endpoint).create_key()["KeyMetadata"]["KeyId"]
    s3.put_bucket_encryption(Bucket=BUCKET, ServerSideEncryptionConfiguration={  # type: ignore[attr-defined]
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key}}]})
    return key


def test_an_sse_kms_bucket_is_verified_by_checksum_not_by_etag(s3: object, kms_bucket: str, tmp_path: Path) -> None:
    """On AWS an SSE-KMS object's ETag is not the MD5 of its data (moto still answers the MD5,
    so the ETag AWS would send is put in its place): the upload must not depend on it."""
    _on_head(s3, lambda head: head.update(ETag='"' + os.urandom(16).hex() + '"'))
    src = tmp_path / "ckpt.pt"
    src.write_bytes(os.urandom(20_000))
    storage.upload_file(src, f"s3://{BUCKET}/enc/ckpt.pt")
    head = s3.head_object(Bucket=BUCKET, Key="enc/ckpt.pt")  # type: ignore[attr-defined]
    assert head["ServerSideEncryption"] == "aws:kms" and head["SSEKMSKeyId"].endswith(kms_bucket)
    assert storage.download_file(f"s3://{BUCKET}/enc/ckpt.pt", tmp_path / "back").read_bytes() == src.read_bytes()


def test_a_store_reporting_no_checksum_and_no_md5_etag_is_verified_by_reading_back(
        s3: object, kms_bucket: str, tmp_path: Path) -> None:
    reads: list[str] = []
    s3.meta.events.register("before-call.s3.GetObject",  # type: ignore[attr-defined]
                            lambda params, **_: reads.append(params["url_path"]))
    _on_head(s3, lambda head: (head.pop("ChecksumSHA256", None), head.update(ETag='"' + "e" * 32 + '"')))
    src = tmp_path / "x"
    src.write_bytes(os.urandom(5000))
    storage.upload_file(src, f"s3://{BUCKET}/x")
    assert len(reads) == 1 and storage._STAGING in reads[0]  # the staged object, read back once
    assert _keys(s3) == ["x"]


def test_failed_verification_commits_nothing(s3: object, tmp_path: Path) -> None:
    src = tmp_path / "x"
    src.write_bytes(b"payload")
    other = base64.b64encode(hashlib.sha256(b"other bytes").digest()).decode()
    _on_head(s3, lambda head: head.update(ChecksumSHA256=other))  # the store holds something else
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


def test_local_paths_need_no_object_store(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(3000))
    md5 = storage.upload_file(src, str(tmp_path / "dst" / "copy.bin"))
    assert storage.exists(tmp_path / "dst" / "copy.bin") and not storage.exists(tmp_path / "dst" / "other")
    assert storage.download_file(str(tmp_path / "dst" / "copy.bin"), tmp_path / "back.bin", md5=md5).read_bytes() \
        == src.read_bytes()
    assert not list((tmp_path / "dst").glob(".*.tmp"))  # temp file renamed into place


# -- the production caller: the training loop's checkpoints (gandistill/checkpoint_store.py)

def test_checkpoint_store_on_s3_round_trips_through_a_fresh_local_cache(
        s3: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a retried pod sees: the first pod's local disk is gone, the object store has the
    committed checkpoint, and the new pod's store downloads and md5-checks it."""
    from gandistill.checkpoint_store import CACHE_ENV, CheckpointStore

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "pod1"))
    first = CheckpointStore(f"s3://{BUCKET}/ckpt/train_gan-abc/")
    assert first.fetch() is None  # nothing stored yet
    first.save({"step": 7, "w": torch.arange(4.0)})
    assert _keys(s3) == ["ckpt/train_gan-abc/last.pt"]  # committed under its final key, no staging left
    assert str(first) == f"s3://{BUCKET}/ckpt/train_gan-abc/last.pt"

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "pod2"))  # another node: an empty local disk
    second = CheckpointStore(f"s3://{BUCKET}/ckpt/train_gan-abc")
    assert not second.local_file.exists()
    fetched = second.fetch()
    assert fetched is not None and str(tmp_path / "pod2") in str(fetched)
    snap = torch.load(fetched, weights_only=True)
    assert snap["step"] == 7 and torch.equal(snap["w"], torch.arange(4.0))


def test_checkpoint_store_on_s3_never_resumes_from_a_local_leftover(
        s3: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The object store is the truth: a local file that was never committed (e.g. its upload
    failed) is not a checkpoint."""
    from gandistill.checkpoint_store import CACHE_ENV, CheckpointStore

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "pod"))
    store = CheckpointStore(f"s3://{BUCKET}/ckpt/distill-xyz")
    store.local_file.parent.mkdir(parents=True)
    torch.save({"step": 3}, store.local_file)
    assert store.fetch() is None


def test_checkpoint_store_on_an_unreachable_store_fails_naming_it(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from gandistill.checkpoint_store import CACHE_ENV, CheckpointStore

    url = f"http://127.0.0.1:{_closed_port()}"
    for key, value in {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y",
                       "GANDISTILL_S3_MAX_ATTEMPTS": "1", "AWS_EC2_METADATA_DISABLED": "true",
                       CACHE_ENV: str(tmp_path / "pod")}.items():
        monkeypatch.setenv(key, value)
    storage._client.cache_clear()
    store = CheckpointStore("s3://bucket/ckpt/train_teacher-1")
    with pytest.raises(ServiceError, match=f"{url}.*unreachable"):
        store.save({"step": 1})
    with pytest.raises(ServiceError, match="unreachable"):
        store.fetch()
    storage._client.cache_clear()


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
    with pytest.raises(ServiceError) as info:
        storage.upload_file(src, "s3://bucket/f")
    storage._client.cache_clear()
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


def test_check_bucket_names_a_missing_bucket_and_an_unreachable_store(s3: object,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """`gandistill run` checks pipeline.checkpoint_root with this before any stage runs."""
    storage.check_bucket(f"s3://{BUCKET}/checkpoints")  # exists: no error
    with pytest.raises(ServiceError, match="bucket 'nobucket' does not exist.*s3 mb s3://nobucket"):
        storage.check_bucket("s3://nobucket/checkpoints")
    url = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    monkeypatch.setenv("GANDISTILL_S3_MAX_ATTEMPTS", "1")
    storage._client.cache_clear()
    with pytest.raises(ServiceError, match=f"{url}.*unreachable"):
        storage.check_bucket(f"s3://{BUCKET}/checkpoints")
    storage._client.cache_clear()


# -- owner records: compare-and-swap with S3 conditional writes (gandistill.lease) --------------

def test_conditional_writes_create_replace_and_delete_only_the_expected_version(s3: object) -> None:
    uri = f"s3://{BUCKET}/ckpt/owner.json"
    assert storage.read_object(uri) is None
    first = storage.put_if_absent(uri, b'{"beat": 1}')
    assert first and storage.put_if_absent(uri, b'{"beat": 2}') is None  # If-None-Match: * refused
    second = storage.put_if_match(uri, b'{"beat": 2}', first)
    assert second and second != first
    assert storage.put_if_match(uri, b'{"beat": 3}', first) is None  # a stale version loses
    assert storage.read_object(uri) == (b'{"beat": 2}', second)
    assert not storage.delete_if_match(uri, first) and storage.delete_if_match(uri, second)
    assert storage.read_object(uri) is None and storage.put_if_match(uri, b"x", second) is None


def test_a_second_run_on_an_s3_checkpoint_root_trains_apart_when_told_not_to_wait(s3: object) -> None:
    from gandistill.checkpoint_store import CheckpointStore

    prefix = f"s3://{BUCKET}/ckpt/train_teacher-fp"
    first, second = CheckpointStore(prefix), CheckpointStore(prefix)
    with first.owned("a"), second.owned("b", wait_s=0):
        assert second.location == f"{prefix}.2" and first.location == prefix
        assert storage.exists(f"{prefix}/owner.json") and storage.exists(f"{prefix}.2/owner.json")
    assert _keys(s3) == []  # both released


def test_a_store_that_ignores_conditional_writes_is_refused(s3: object) -> None:
    """A server that drops If-None-Match / If-Match would let two runs both 'own' a checkpoint:
    the lease finds it out on its first write and refuses it (the headers are stripped on the way
    out here, which is what such a server does with them)."""
    from gandistill.checkpoint_store import CheckpointStore

    def strip(request: object, **kwargs: object) -> None:
        for header in ("If-None-Match", "If-Match"):
            if header in request.headers:  # type: ignore[attr-defined]
                del request.headers[header]  # type: ignore[attr-defined]

    client = storage.client()
    client.meta.events.register("before-sign.s3.PutObject", strip)  # type: ignore[attr-defined]
    try:
        with pytest.raises(ServiceError, match=r"ignores S3 conditional writes \(If-None-Match, If-Match\)"), \
                CheckpointStore(f"s3://{BUCKET}/ckpt/fp").owned("a"):
            pass
    finally:
        client.meta.events.unregister("before-sign.s3.PutObject", strip)  # type: ignore[attr-defined]
    assert _keys(s3) == []
