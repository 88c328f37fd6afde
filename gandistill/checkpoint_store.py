"""Where a training loop keeps its last checkpoint: a local folder, or an object-store prefix
that a new pod can read after the old one died.

`GANDISTILL_CHECKPOINT_ROOT` chooses it (`checkpoint_dir`): a path (default
`runs/checkpoints`; on a cluster a mounted volume) or `s3://bucket/prefix`
(`pipeline.checkpoint_root`, which the DAG puts into the training tasks' environment).

With an S3 location the checkpoint is written to a local file first (atomic), then uploaded
with `storage.upload_file` (staging key, SHA-256 checksum and size verified, committed
server-side), so the object store only ever holds complete, verified checkpoints; a resumed run downloads it and
checks its md5. The object store is the truth: a leftover local copy is never resumed from
on its own, and an unreachable store fails the stage with storage's one-line error (a task
retry then resumes) rather than training on without durable checkpoints.

A location belongs to one live run at a time (`owned`, gandistill.lease): a second run with the
same params waits for the first and resumes from what it left, or — after `wait_s` — trains
in a location of its own (`<location>.2`, `.3`, …); a dead run's location is taken over.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gandistill import storage
from gandistill.files import atomic_write
from gandistill.lease import Lease, record_store

log = logging.getLogger("gandistill")

CHECKPOINT_ROOT_ENV = "GANDISTILL_CHECKPOINT_ROOT"
CHECKPOINT_FILE = "last.pt"
CACHE_ENV = "GANDISTILL_CHECKPOINT_CACHE"  # local copies of remote checkpoints (default: temp dir)


def _local_cache(uri: str) -> Path:
    root = Path(os.environ.get(CACHE_ENV) or Path(tempfile.gettempdir()) / "gandistill-checkpoints")
    # A readable name plus a hash: two prefixes that flatten to the same name stay apart.
    name = uri.removeprefix("s3://").replace("/", "--")
    return root / f"{name[-80:]}-{hashlib.sha256(uri.encode()).hexdigest()[:8]}"


def checkpoint_dir(stage: str, fp: str) -> str | Path:
    """Stable location of a stage's checkpoints, outside the (per-execution) output artifact,
    so re-running the same task after a crash finds them: a folder under
    GANDISTILL_CHECKPOINT_ROOT, or an s3:// prefix when the root is one (a retried pod on
    another node resumes from there). `fp`: the run's fingerprint (gandistill.fingerprints)."""
    root = os.environ.get(CHECKPOINT_ROOT_ENV) or "runs/checkpoints"
    if storage.is_s3(root):
        return f"{root.rstrip('/')}/{stage}-{fp}"
    return Path(root) / f"{stage}-{fp}"


class CheckpointStore:
    """One stage's checkpoint location (`location`: a folder path or an s3:// prefix)."""

    def __init__(self, location: str | Path):
        self.base = str(location).rstrip("/") if storage.is_s3(location) else Path(location)
        self.lease: Lease | None = None
        self._use(self.base)

    def _use(self, location: str | Path) -> None:
        self.location = location
        self.remote: str | None = str(location) if storage.is_s3(location) else None
        folder = _local_cache(self.remote) if self.remote else Path(location)
        self.local_file = folder / CHECKPOINT_FILE

    @contextlib.contextmanager
    def owned(self, name: str, wait_s: float | None = None) -> Iterator[None]:
        """Hold this location for the block: wait for a live run that holds it (up to `wait_s`
        s, None: while it runs), then take it; past `wait_s`, use the first free location
        beside it. `name` (the training loop's) is for messages."""
        for slot in itertools.count(1):
            location = self.base if slot == 1 else f"{self.base}.{slot}"
            lease = Lease(record_store(location), name)
            if lease.acquire(wait_s if slot == 1 else 0):
                break
        if slot > 1:
            log.warning("[%s] gave up waiting after runtime.checkpoint_wait_s=%g s: training apart, with checkpoints "
                        "in %s", name, wait_s, location)
        self._use(location)
        self.lease = lease
        try:
            yield
        finally:
            lease.release()
            self.lease = None

    @property
    def remote_file(self) -> str | None:
        return f"{self.remote}/{CHECKPOINT_FILE}" if self.remote else None

    def __str__(self) -> str:
        return self.remote_file or str(self.local_file)

    def save(self, snapshot: dict[str, Any]) -> None:
        import torch  # here, not at import: the DAG compiler reads CHECKPOINT_ROOT_ENV without torch

        if self.lease is not None:
            self.lease.confirm()  # never write a location another run has taken over
        atomic_write(self.local_file, lambda handle: torch.save(snapshot, handle))
        if self.remote_file:
            storage.upload_file(self.local_file, self.remote_file)

    def fetch(self) -> Path | None:
        """The local file of the last committed checkpoint, or None when there is none."""
        if self.remote_file is None:
            return self.local_file if self.local_file.is_file() else None
        if not storage.exists(self.remote_file):
            return None
        return storage.download_file(self.remote_file, self.local_file)
