"""gandistill.storage and the stack script against a real SeaweedFS server on 127.0.0.1
(credentials really checked, real ETags, real S3 checksums, real multipart, real server-side
encryption)."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from gandistill import storage
from gandistill.errors import ServiceError
from gandistill.files import file_hash

BUCKET = "gandistill"


def test_stack_listens_on_loopback_only(object_store: Any) -> None:
    psutil = pytest.importorskip("psutil")
    root = psutil.Process(object_store.pids["seaweedfs"])
    procs = [root, *root.children(recursive=True)]
    listening = [c for p in procs for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    assert listening, "SeaweedFS listens on nothing?"
    assert {c.laddr.ip for c in listening} == {"127.0.0.1"}
    assert object_store.ports["s3"] in {c.laddr.port for c in listening}


def test_multipart_file_roundtrip_verified(s3_env: dict[str, str], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint bigger than a part (a GAN's with optimizer state easily is): uploaded in
    parts, its composite SHA-256 checksum checked, committed under the final key with no
    staging key left."""
    monkeypatch.setattr(storage, "PART_SIZE", 5 * 1024 * 1024)
    src = tmp_path / "last.pt"
    src.write_bytes(os.urandom(11 * 1024 * 1024))  # multipart: 3 parts
    md5 = storage.upload_file(src, f"s3://{BUCKET}/it/run1/last.pt")
    assert md5 == file_hash(src)
    keys = {o["Key"] for o in storage.client().list_objects_v2(Bucket=BUCKET, Prefix="it/run1/")["Contents"]}
    assert keys == {"it/run1/last.pt"}  # no staging key left behind
    assert storage.exists(f"s3://{BUCKET}/it/run1/last.pt")
    out = storage.download_file(f"s3://{BUCKET}/it/run1/last.pt", tmp_path / "out" / "last.pt")
    assert out.read_bytes() == src.read_bytes()


def test_an_encrypted_bucket_stores_verified_checksummed_objects(s3_env: dict[str, str], tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A bucket whose default is server-side encryption (SSE-S3, AES-256, which SeaweedFS
    implements; SSE-KMS needs a KMS this machine lacks — moto's stands in, tests/test_storage.py):
    single-part and multipart uploads are verified by the SHA-256 checksum the server stored,
    and read back byte for byte."""
    s3 = storage.client()
    s3.create_bucket(Bucket="encrypted")
    s3.put_bucket_encryption(Bucket="encrypted", ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
    monkeypatch.setattr(storage, "PART_SIZE", 5 * 1024 * 1024)
    for name, size in (("small.pt", 40_000), ("big.pt", 11 * 1024 * 1024)):
        src = tmp_path / name
        src.write_bytes(os.urandom(size))
        storage.upload_file(src, f"s3://encrypted/ckpt/{name}")
        head = s3.head_object(Bucket="encrypted", Key=f"ckpt/{name}", ChecksumMode="ENABLED")
        assert head["ServerSideEncryption"] == "AES256"
        sha256 = base64.b64encode(hashlib.sha256(src.read_bytes()).digest()).decode()
        assert head["Metadata"][storage.SHA256_META] == sha256
        assert head["ChecksumSHA256"]  # what the upload was verified against
        assert storage.download_file(f"s3://encrypted/ckpt/{name}", tmp_path / "back" / name).read_bytes() \
            == src.read_bytes()


def test_wrong_secret_is_rejected_with_a_clear_error(s3_env: dict[str, str], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    monkeypatch.setenv("GANDISTILL_S3_MAX_ATTEMPTS", "2")
    storage._client.cache_clear()
    (tmp_path / "f").write_text("x")
    with pytest.raises(ServiceError) as info:
        storage.upload_file(tmp_path / "f", f"s3://{BUCKET}/it/denied")
    assert "credentials rejected" in str(info.value) and s3_env["AWS_ENDPOINT_URL"] in str(info.value)


def test_missing_object_names_the_endpoint(s3_env: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(ServiceError, match="no such object") as info:
        storage.download_file(f"s3://{BUCKET}/it/never-written", tmp_path / "f")
    assert s3_env["AWS_ENDPOINT_URL"] in str(info.value) and not (tmp_path / "f").exists()
