"""File I/O to local paths or `s3://bucket/key` URIs: what the training loop's durable
checkpoints (checkpoint_store) go through.

    upload_file / download_file / exists
    read_object / put_if_absent / put_if_match / delete_if_match   (small records, compare-and-swap)

S3 endpoint and credentials come from the standard environment (`AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL` for MinIO/SeaweedFS/...),
so the same code talks to AWS, a cluster's MinIO or the local stack (`make stack-up`).

Guarantees, for every backend:
- bounded retries with exponential backoff (botocore "standard" mode,
  `GANDISTILL_S3_MAX_ATTEMPTS`, default 5) — never an endless hang;
- write-then-commit: a file is uploaded to a staging key, verified, then copied to its
  final key server-side, so a reader never sees a partial or unverified object;
- verification by checksum, whatever server-side encryption the bucket applies: every upload
  carries an S3 additional checksum (SHA-256, `x-amz-checksum-sha256`), which the server checks
  on receipt and stores; the stored checksum must equal ours (full-object, or the composite
  checksum-of-part-checksums of a multipart upload). Under SSE-KMS / SSE-C, AWS's ETag is not
  the MD5 of the data, so the ETag is used only by a server that reports no checksum (and then
  must be our MD5), and a server that reports neither is verified by reading the object back.
  Downloads are re-hashed against the md5 recorded in the object's metadata;
- failures raise `ServiceError` naming the endpoint and the fix.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gandistill.errors import ServiceError
from gandistill.files import file_hash

MD5_META = "gandistill-md5"  # x-amz-meta-*: the whole-object md5, survives server-side copy
SHA256_META = "gandistill-sha256"  # x-amz-meta-*: the whole-object SHA-256 (base64, as S3 writes checksums)
PART_SIZE = 64 * 1024 * 1024  # multipart above this size; also the part size for ETag checks
_STAGING = ".staging-"


@dataclass(frozen=True)
class S3Uri:
    bucket: str
    key: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def child(self, rel: str) -> S3Uri:
        return S3Uri(self.bucket, f"{self.key.rstrip('/')}/{rel}" if self.key else rel)


def is_s3(uri: str | Path) -> bool:
    return str(uri).startswith("s3://")


def parse_s3(uri: str) -> S3Uri:
    if not is_s3(uri):
        raise ValueError(f"not an s3:// URI: {uri}")
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket:
        raise ServiceError(f"{uri}: no bucket name; use s3://BUCKET/KEY")
    return S3Uri(bucket, key.strip("/"))


def endpoint() -> str:
    url = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return url or "AWS S3 (default endpoint)"


# ---------------------------------------------------------------------------------------
# Client and errors


def max_attempts() -> int:
    return max(1, int(os.environ.get("GANDISTILL_S3_MAX_ATTEMPTS", "5")))


@functools.lru_cache(maxsize=8)
def _client(endpoint_url: str | None, key_id: str | None, region: str | None, attempts: int) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        # "standard": exponential backoff with jitter on throttling/5xx/connection errors,
        # at most `attempts` tries in total.
        retries={"total_max_attempts": attempts, "mode": "standard"},
        connect_timeout=5, read_timeout=60,
        s3={"addressing_style": "path"},  # MinIO/SeaweedFS have no virtual-host buckets
        # boto3 >= 1.36 adds CRC checksums to every request by default and some S3-compatible
        # servers reject them; our uploads ask for SHA-256 explicitly (upload_file) instead.
        request_checksum_calculation="when_required", response_checksum_validation="when_required",
    )
    # Credentials: boto3's default chain (AWS_* env, profile, pod identity); endpoint likewise.
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, region_name=region or "us-east-1",
                                          config=config)


def client() -> Any:
    """The S3 client for the current environment (cached per endpoint/credentials)."""
    return _client(os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"),
                   os.environ.get("AWS_ACCESS_KEY_ID"),
                   os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION"), max_attempts())


def _service_error(exc: Exception, action: str, uri: str) -> ServiceError:
    """Translate a boto error into one message that names the endpoint and the fix."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    where = f"object store {endpoint()}"
    if isinstance(exc, NoCredentialsError):
        return ServiceError(f"{action} {uri}: no S3 credentials for {where}; set AWS_ACCESS_KEY_ID and "
                            "AWS_SECRET_ACCESS_KEY (on a cluster: a secret mapped in pipeline.secrets)")
    transient = {"ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError"}
    if isinstance(exc, EndpointConnectionError) or type(exc).__name__ in transient:
        return ServiceError(f"{action} {uri}: {where} unreachable after {max_attempts()} attempts ({exc}); "
                            "start it (`make stack-up`) or set AWS_ENDPOINT_URL to a reachable endpoint")
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in {"NoSuchBucket"}:
            bucket = uri[5:].split("/", 1)[0]
            return ServiceError(f"{action} {uri}: bucket '{bucket}' does not exist at {where}; create "
                                f"it (e.g. `aws --endpoint-url {endpoint()} s3 mb s3://{bucket}`)")
        if code in {"NoSuchKey", "404", "NotFound"}:
            return ServiceError(f"{action} {uri}: no such object at {where}; check the URI "
                                "(was it uploaded?)")
        if code in {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403", "Forbidden"}:
            return ServiceError(f"{action} {uri}: credentials rejected by {where} ({code}); check "
                                "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket policy")
        return ServiceError(f"{action} {uri}: {where} answered {code or exc} after retries; "
                            "check the server's health and logs")
    return ServiceError(f"{action} {uri}: {where} failed ({type(exc).__name__}: {exc}); "
                        "check AWS_ENDPOINT_URL and the server's health")


def _call(action: str, uri: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return fn(*args, **kwargs)
    except (BotoCoreError, ClientError) as exc:
        raise _service_error(exc, action, uri) from None
    except S3UploadFailedError as exc:  # boto3's transfer manager wraps the real ClientError
        cause = exc.__cause__ or exc.__context__
        raise _service_error(cause if isinstance(cause, Exception) else exc, action, uri) from None


# ---------------------------------------------------------------------------------------
# Checksums


def expected_etag(path: str | Path, part_size: int | None = None) -> str:
    """The ETag S3 computes for an unencrypted (or SSE-S3) object: md5 for a single PUT,
    md5(concat(part md5s))-N for multipart. Not the ETag of an SSE-KMS / SSE-C object."""
    part_size = part_size or PART_SIZE
    size = Path(path).stat().st_size
    if size <= part_size:
        return file_hash(path)
    parts = []
    with open(path, "rb") as handle:
        while block := handle.read(part_size):
            parts.append(hashlib.md5(block).digest())
    return f"{hashlib.md5(b''.join(parts)).hexdigest()}-{len(parts)}"


@dataclass(frozen=True)
class Digests:
    """A file's digests in the forms an S3 server reports them."""
    md5: str  # hex
    sha256: str  # base64 of the whole file's SHA-256 (a full-object checksum)
    composite_sha256: str | None  # base64 SHA-256 of the part SHA-256s (a multipart upload's checksum)
    size: int


def digests(path: str | Path, part_size: int | None = None) -> Digests:
    part_size = part_size or PART_SIZE
    md5, whole, parts = hashlib.md5(), hashlib.sha256(), []
    with open(path, "rb") as handle:
        while block := handle.read(part_size):
            md5.update(block)
            whole.update(block)
            parts.append(hashlib.sha256(block).digest())
    composite = base64.b64encode(hashlib.sha256(b"".join(parts)).digest()).decode() if len(parts) > 1 else None
    return Digests(md5.hexdigest(), base64.b64encode(whole.digest()).decode(), composite, Path(path).stat().st_size)


def _stored_checksum_matches(head: dict[str, Any], want: Digests) -> bool | None:
    """Whether the server's stored SHA-256 checksum is ours; None when it reports none.
    A composite checksum ends in `-<parts>` (AWS, SeaweedFS); some servers drop the suffix."""
    stored = head.get("ChecksumSHA256")
    if not stored:
        return None
    value, _, parts = stored.partition("-")
    if parts:
        return value == want.composite_sha256
    return value in (want.sha256, want.composite_sha256)


def _read_back_sha256(s3: Any, obj: S3Uri, uri: str) -> str:
    body = _call("verify", uri, s3.get_object, Bucket=obj.bucket, Key=obj.key)["Body"]
    sha = hashlib.sha256()
    for chunk in body.iter_chunks(1 << 20):
        sha.update(chunk)
    return base64.b64encode(sha.digest()).decode()


def _verify_staged(s3: Any, staged: S3Uri, src: Path, want: Digests, dst: str) -> str:
    """Check the uploaded bytes before they are committed; return how ('sha256', 'etag-md5',
    'read-back'). Raises ServiceError (the object is corrupt) on any mismatch."""
    head = _call("verify", dst, s3.head_object, Bucket=staged.bucket, Key=staged.key, ChecksumMode="ENABLED")
    etag = head.get("ETag", "").strip('"')
    checksum_ok = _stored_checksum_matches(head, want)
    if head.get("ContentLength") == want.size and checksum_ok:
        return "sha256"
    if head.get("ContentLength") == want.size and checksum_ok is None:
        if etag == expected_etag(src):
            return "etag-md5"
        if _read_back_sha256(s3, staged, dst) == want.sha256:  # e.g. SSE-KMS on a server without checksums
            return "read-back"
    raise ServiceError(f"upload {dst}: {endpoint()} stored {head.get('ContentLength')} bytes with SHA-256 "
                       f"{head.get('ChecksumSHA256') or '(none)'} / ETag {etag}, expected {want.size} bytes with "
                       f"SHA-256 {want.composite_sha256 or want.sha256} (MD5 {want.md5}): the object is corrupt; "
                       "retry, and check proxies between you and the object store")


# ---------------------------------------------------------------------------------------
# Files


def _local_put(src: Path, dst: Path) -> None:
    """Copy to a temp file beside dst, then rename: dst is complete or absent."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".{dst.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def upload_file(src: str | Path, dst: str) -> str:
    """Upload one local file to `dst` (s3:// URI or local path); return its md5."""
    src = Path(src)
    if not src.is_file():
        raise FileNotFoundError(f"{src}: not a file")
    if not is_s3(dst):
        md5 = file_hash(src)
        _local_put(src, Path(dst))
        return md5
    from boto3.s3.transfer import TransferConfig

    want = digests(src)
    target = parse_s3(dst)
    staging = S3Uri(target.bucket, f"{target.key}{_STAGING}{uuid.uuid4().hex[:12]}")
    s3 = client()
    transfer = TransferConfig(multipart_threshold=PART_SIZE + 1, multipart_chunksize=PART_SIZE)
    try:
        # ChecksumAlgorithm: boto3 sends the SHA-256 of each part, the server refuses bytes that
        # do not match it (BadDigest) and stores it with the object — encryption does not change it.
        _call("upload", dst, s3.upload_file, str(src), staging.bucket, staging.key,
              ExtraArgs={"Metadata": {MD5_META: want.md5, SHA256_META: want.sha256}, "ChecksumAlgorithm": "SHA256"},
              Config=transfer)
        _verify_staged(s3, staging, src, want, dst)
        # Commit: server-side copy makes the verified bytes visible under the final key at once.
        _call("commit", dst, s3.copy_object, Bucket=target.bucket, Key=target.key,
              CopySource={"Bucket": staging.bucket, "Key": staging.key}, MetadataDirective="COPY",
              ChecksumAlgorithm="SHA256")
    finally:
        with contextlib.suppress(Exception):  # best effort; a staging key is never read
            s3.delete_object(Bucket=staging.bucket, Key=staging.key)
    head = _call("verify", dst, s3.head_object, Bucket=target.bucket, Key=target.key, ChecksumMode="ENABLED")
    if (head.get("Metadata", {}).get(MD5_META) != want.md5 or head.get("ContentLength") != want.size
            or _stored_checksum_matches(head, want) is False):
        raise ServiceError(f"upload {dst}: the committed object at {endpoint()} does not match {src} "
                           f"(md5 {want.md5}); retry the upload")
    return want.md5


def download_file(src: str, dst: str | Path, md5: str | None = None) -> Path:
    """Download `src` (s3:// URI or local path) to `dst` atomically, verifying its md5
    (given, or recorded in the object's metadata at upload)."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not is_s3(src):
        if not Path(src).is_file():
            raise ServiceError(f"download {src}: no such file")
        _local_put(Path(src), dst)
        actual = file_hash(dst)
        if md5 and actual != md5:
            dst.unlink()
            raise ServiceError(f"download {src}: md5 {actual} != expected {md5}; the source is corrupt")
        return dst
    source = parse_s3(src)
    s3 = client()
    head = _call("download", src, s3.head_object, Bucket=source.bucket, Key=source.key)
    expected = md5 or head.get("Metadata", {}).get(MD5_META)
    if expected is None:
        etag = head.get("ETag", "").strip('"')
        expected = etag if "-" not in etag else None  # a multipart ETag is not the file's md5
    tmp = dst.parent / f".{dst.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        _call("download", src, s3.download_file, source.bucket, source.key, str(tmp))
        actual = file_hash(tmp)
        if expected and actual != expected:
            raise ServiceError(f"download {src}: md5 {actual} != recorded {expected} at {endpoint()}; "
                               "the object is corrupt or changed mid-download: retry")
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst


# ---------------------------------------------------------------------------------------
# Queries


def exists(uri: str | Path) -> bool:
    """True for an existing file or object; a store that cannot answer raises ServiceError."""
    uri = str(uri)
    if not is_s3(uri):
        return Path(uri).is_file()
    from botocore.exceptions import BotoCoreError, ClientError

    target = parse_s3(uri)
    try:
        client().head_object(Bucket=target.bucket, Key=target.key)
        return True
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code")) not in {"404", "NoSuchKey", "NotFound"}:
            raise _service_error(exc, "stat", uri) from None
    except BotoCoreError as exc:
        raise _service_error(exc, "stat", uri) from None
    return False


# ---------------------------------------------------------------------------------------
# Small records with compare-and-swap (S3 conditional writes: If-None-Match / If-Match, as AWS
# S3, MinIO, SeaweedFS and moto implement them). The version of a record is its ETag; a record's
# content must change with every write (a counter in it), or an unchanged ETag would let a stale
# writer's If-Match succeed.

_LOST = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409", "NoSuchKey", "404", "NotFound"}


def read_object(uri: str) -> tuple[bytes, str] | None:
    """(content, ETag) of a small object, or None when there is none."""
    target = parse_s3(uri)
    return _try_conditional("read", uri, lambda: _get(target))


def _get(target: S3Uri) -> tuple[bytes, str]:
    answer = client().get_object(Bucket=target.bucket, Key=target.key)
    return answer["Body"].read(), answer["ETag"]


def put_if_absent(uri: str, data: bytes) -> str | None:
    """Create the object only if there is none (If-None-Match: *): its ETag, or None if one exists."""
    target = parse_s3(uri)
    return _try_conditional("create", uri, lambda: client().put_object(
        Bucket=target.bucket, Key=target.key, Body=data, IfNoneMatch="*")["ETag"])


def put_if_match(uri: str, data: bytes, etag: str) -> str | None:
    """Replace the object only if it is still version `etag` (If-Match): the new ETag, or None."""
    target = parse_s3(uri)
    return _try_conditional("replace", uri, lambda: client().put_object(
        Bucket=target.bucket, Key=target.key, Body=data, IfMatch=etag)["ETag"])


def delete_if_match(uri: str, etag: str) -> bool:
    """Delete the object only if it is still version `etag`; False when it changed or is gone."""
    target = parse_s3(uri)
    return _try_conditional("delete", uri, lambda: client().delete_object(
        Bucket=target.bucket, Key=target.key, IfMatch=etag)) is not None


def _try_conditional(action: str, uri: str, fn: Any) -> Any:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return fn()
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code", "")) in _LOST:
            return None
        raise _service_error(exc, action, uri) from None
    except BotoCoreError as exc:
        raise _service_error(exc, action, uri) from None


def check_bucket(uri: str) -> None:
    """Fail now, naming the fix, when the bucket of `uri` is missing or the store unreachable
    or refuses us (`gandistill run` checks pipeline.checkpoint_root before any stage runs)."""
    from botocore.exceptions import BotoCoreError, ClientError

    target = parse_s3(uri)
    try:
        client().head_bucket(Bucket=target.bucket)
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code")) in {"404", "NoSuchBucket", "NotFound"}:
            raise ServiceError(f"{uri}: bucket '{target.bucket}' does not exist at object store {endpoint()}; "
                               f"create it (e.g. `aws --endpoint-url {endpoint()} s3 mb s3://{target.bucket}`)"
                               ) from None
        raise _service_error(exc, "check", uri) from None
    except BotoCoreError as exc:
        raise _service_error(exc, "check", uri) from None
