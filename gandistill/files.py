"""Files a crash must not tear, and file hashes: one helper each, used by every module that
writes outputs or checks content.

- `atomic_write(path, write)`: temp file in the same folder, fsync, rename, fsync the folder —
  a reader sees the old file or the new one, never half of it.
- `staged_dir(target)`: build a whole folder in a temp folder beside `target`, then swap it in
  with a rename — a failed build leaves `target` as it was (or absent), never half-written.
- `file_hash(path, algorithm)`: a streamed content hash (md5 for DVC / S3 / published MNIST
  checksums, sha256 for identities).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

CHUNK = 1 << 20


def file_hash(path: str | Path, algorithm: str = "md5") -> str:
    """Hex digest of a file's bytes, read in 1 MiB blocks (files may exceed memory)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call `write(handle)` on a temp file beside `path`, fsync it, rename it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def new_staging_dir(target: str | Path) -> Path:
    """An empty hidden folder beside `target` (same filesystem, so the final rename is atomic)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))


def publish_dir(staging: str | Path, target: str | Path) -> Path:
    """Move a finished staging folder onto `target`, replacing an existing one as a whole: the
    old folder is renamed aside first (a rename cannot replace a non-empty folder), so a crash
    in between leaves the old copy beside `target`, never a mix of both."""
    staging, target = Path(staging), Path(target)
    if target.is_dir() and not any(target.iterdir()):
        target.rmdir()  # kfp creates output folders empty: nothing to keep
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, target)
    return target


@contextlib.contextmanager
def staged_dir(target: str | Path) -> Iterator[Path]:
    """`with staged_dir(out) as tmp:` write everything into `tmp`; on success it becomes `out`,
    on any error it is removed and `out` is untouched."""
    staging = new_staging_dir(target)
    try:
        yield staging
        publish_dir(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
