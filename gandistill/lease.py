"""A checkpoint folder belongs to one live run at a time, so two runs with the same params never
resume from each other's live checkpoints.

Two runs with the same params — a scheduled run overlapping a manual one, a retried pod whose
predecessor still runs — compute the same checkpoint location (its name is the fingerprint of
their params and inputs). While a training loop trains it holds a lease on that location: an
owner record `owner.json` (run, pid, machine, heartbeat) that is created only if absent and
replaced only if unchanged — compare-and-swap:

- on disk: read-compare-write under an flock on `owner.lock` beside it;
- on S3: PutObject with `If-None-Match: *` to create, `If-Match: <ETag>` to renew or take over,
  DeleteObject with `If-Match` to release (AWS S3, MinIO, SeaweedFS, moto). A store that ignores
  these conditions is refused (checked when a lease is taken): it cannot keep two runs apart.

A run that finds a live owner waits, says so, and when the owner has released the location (it
finished) or died, takes it over and resumes from what it left: the same params and inputs give
the same checkpoints, so the result equals that of a run alone. After `wait_s` seconds (None: as
long as the owner lives) it gives up and trains in a location of its own instead (`<folder>.2`…).

Dead: on the same machine (hostname, boot id and pid namespace all equal) the owner's process is
gone, a zombie, or its pid now names a process started later; on another machine, its record has
not changed for `ttl_s()` seconds by the waiter's own clock (no synchronised clocks needed). The
owner renews its record every ttl/4 from a thread; an owner whose record was replaced (it was
presumed dead: a partition, a frozen VM) must stop writing: `confirm` raises before every save.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from gandistill import storage
from gandistill.errors import ServiceError
from gandistill.files import atomic_write
from gandistill.processes import process_alive, process_start, this_machine

log = logging.getLogger("gandistill")

OWNER_FILE = "owner.json"
TTL_ENV = "GANDISTILL_LEASE_TTL_S"  # how long another machine's silent record counts as alive
RUN_NAME_ENV = "GANDISTILL_RUN_NAME"  # set by `gandistill run --local`; KFP_RUN_ID on a cluster


def ttl_s() -> float:
    return max(1.0, float(os.environ.get(TTL_ENV, "60")))


class RecordStore(Protocol):
    """An owner record with compare-and-swap; a version names one content of the record."""

    where: str

    def read(self) -> tuple[dict[str, Any], str] | None: ...

    def create(self, body: dict[str, Any]) -> str | None: ...

    def replace(self, version: str, body: dict[str, Any]) -> str | None: ...

    def delete(self, version: str) -> bool: ...


def _encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True).encode()


def _decode(data: bytes) -> dict[str, Any]:
    try:
        body = json.loads(data)
    except ValueError:
        return {}  # not a record we wrote: treated as a dead owner's
    return body if isinstance(body, dict) else {}


class DiskRecord:
    """owner.json in a local (or mounted) folder; every change under an flock on owner.lock."""

    def __init__(self, folder: Path):
        self.file = folder / OWNER_FILE
        self.where = str(folder)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.file.with_name("owner.lock"), "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def _current(self) -> tuple[dict[str, Any], str] | None:
        try:
            data = self.file.read_bytes()
        except FileNotFoundError:
            return None
        return _decode(data), hashlib.sha256(data).hexdigest()

    def _write(self, body: dict[str, Any]) -> str:
        data = _encode(body)
        atomic_write(self.file, lambda handle: handle.write(data))
        return hashlib.sha256(data).hexdigest()

    def read(self) -> tuple[dict[str, Any], str] | None:
        return self._current()

    def create(self, body: dict[str, Any]) -> str | None:
        with self._locked():
            return None if self._current() is not None else self._write(body)

    def replace(self, version: str, body: dict[str, Any]) -> str | None:
        with self._locked():
            current = self._current()
            return self._write(body) if current is not None and current[1] == version else None

    def delete(self, version: str) -> bool:
        with self._locked():
            current = self._current()
            if current is None or current[1] != version:
                return False
            self.file.unlink()
            return True


class ObjectRecord:
    """owner.json under an s3:// prefix, with S3 conditional writes."""

    def __init__(self, prefix: str):
        self.uri = f"{prefix.rstrip('/')}/{OWNER_FILE}"
        self.where = prefix

    def read(self) -> tuple[dict[str, Any], str] | None:
        found = storage.read_object(self.uri)
        return None if found is None else (_decode(found[0]), found[1])

    def create(self, body: dict[str, Any]) -> str | None:
        version = storage.put_if_absent(self.uri, _encode(body))
        if version is not None:
            self._check_conditions_are_honoured(body, version)
        return version

    def replace(self, version: str, body: dict[str, Any]) -> str | None:
        return storage.put_if_match(self.uri, _encode(body), version)

    def delete(self, version: str) -> bool:
        return storage.delete_if_match(self.uri, version)

    def _check_conditions_are_honoured(self, body: dict[str, Any], version: str) -> None:
        """Both writes below must be refused; each rewrites our own record unchanged if it is not,
        so a store that ignores the conditions is found out without harm."""
        ignored = [header for header, accepted in (
            ("If-None-Match", storage.put_if_absent(self.uri, _encode(body)) is not None),
            ("If-Match", storage.put_if_match(self.uri, _encode(body), '"' + "0" * 32 + '"') is not None))
            if accepted]
        if ignored:
            storage.delete_if_match(self.uri, version)
            raise ServiceError(f"object store {storage.endpoint()} ignores S3 conditional writes "
                               f"({', '.join(ignored)}) at {self.uri}, so two runs with the same params could share "
                               "their checkpoints; use a store that honours them (AWS S3, MinIO, SeaweedFS, "
                               "Cloudflare R2) or a path on a mounted volume for pipeline.checkpoint_root")


def record_store(location: str | Path) -> RecordStore:
    return ObjectRecord(str(location)) if storage.is_s3(location) else DiskRecord(Path(location))


def _describe(owner: dict[str, Any]) -> str:
    run = owner.get("run") or "a run"
    age = time.time() - float(owner.get("heartbeat", 0) or 0)
    host = str(owner.get("machine", "?")).split("|", 1)[0]
    return f"{run} (pid {owner.get('pid', '?')} on {host}, heartbeat {max(0.0, age):.0f} s ago)"


@dataclass
class _Seen:
    version: str
    since: float  # time.monotonic() when this version was first seen


class Lease:
    """This process's claim on one checkpoint location (see the module docstring)."""

    def __init__(self, store: RecordStore, name: str):
        self.store = store
        self.name = name  # the loop's name, for messages
        self.token = uuid.uuid4().hex
        self.version: str | None = None
        self.lost = ""  # why the lease is no longer ours ("" while it is)
        self._beat = 0
        self._since = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _body(self) -> dict[str, Any]:
        self._beat += 1  # the content changes with every write: a new ETag each time
        return {"token": self.token, "run": os.environ.get(RUN_NAME_ENV) or os.environ.get("KFP_RUN_ID", ""),
                "pid": os.getpid(), "process_start": process_start(os.getpid()), "machine": this_machine(),
                "since": self._since, "heartbeat": time.time(), "beat": self._beat}

    def _alive(self, owner: dict[str, Any], seen: _Seen) -> bool:
        if not owner.get("token"):
            return False  # not a record a run wrote (emptied or damaged by hand)
        if owner.get("machine") == this_machine() and isinstance(owner.get("pid"), int):
            return process_alive(owner["pid"], str(owner.get("process_start", "")))
        return time.monotonic() - seen.since < ttl_s()

    def acquire(self, wait_s: float | None) -> bool:
        """Take the location (waiting for a live owner up to `wait_s` s, None: while it lives);
        False when the wait ran out."""
        started = time.monotonic()
        seen: _Seen | None = None
        said = False
        while True:
            current = self.store.read()
            if current is None:
                self.version = self.store.create(self._body())
                if self.version is not None or self._is_mine():
                    break
                continue
            owner, version = current
            if seen is None or seen.version != version:
                seen = _Seen(version, time.monotonic())
            if owner.get("token") == self.token:  # a retried write of ours that went through
                self.version = version
                break
            if not self._alive(owner, seen):
                self.version = self.store.replace(version, self._body())
                if self.version is not None or self._is_mine():
                    log.warning("[%s] taking over checkpoints %s from %s, which is no longer running: resuming "
                                "from its last checkpoint", self.name, self.store.where, _describe(owner))
                    break
                continue
            if wait_s is not None and time.monotonic() - started >= wait_s:
                return False
            if not said:
                said = True
                log.warning("[%s] checkpoints %s are in use by %s, which trains with the same params and inputs: "
                            "waiting for it to finish, then resuming from its checkpoint%s", self.name,
                            self.store.where, _describe(owner),
                            " (runtime.checkpoint_wait_s: null waits as long as it runs)" if wait_s is None else
                            f" (for up to runtime.checkpoint_wait_s={wait_s:g} s, then training apart)")
            time.sleep(min(1.0, ttl_s() / 4))
        self._thread = threading.Thread(target=self._renew_loop, name=f"lease-{self.name}", daemon=True)
        self._thread.start()
        return True

    def _is_mine(self) -> bool:
        """After a refused write: was it refused because an earlier try of ours went through?"""
        current = self.store.read()
        if current is not None and current[0].get("token") == self.token:
            self.version = current[1]
            return True
        return False

    def _renew_loop(self) -> None:
        while not self._stop.wait(ttl_s() / 4):
            try:
                self.renew()
            except ServiceError as exc:  # the store is away: try again; past the TTL another run may take over
                log.warning("[%s] could not renew the checkpoint lease at %s: %s", self.name, self.store.where, exc)
            if self.lost:
                return

    def renew(self) -> None:
        with self._lock:
            if self.lost or self.version is None:
                return
            version = self.store.replace(self.version, self._body())
            if version is None and not self._is_mine():
                current = self.store.read()
                self.lost = (f"{_describe(current[0])} took them over" if current else "its owner record was removed")
            elif version is not None:
                self.version = version

    def confirm(self) -> None:
        """Raise unless the location is still ours: called before every checkpoint write."""
        if not self.lost:
            current = self.store.read()
            if current is None or current[0].get("token") != self.token:
                self.lost = (f"{_describe(current[0])} took them over" if current else "its owner record was removed")
        if self.lost:
            raise ServiceError(f"[{self.name}] checkpoints {self.store.where} are no longer this run's: {self.lost} "
                               f"while this run was presumed dead (no heartbeat for {ttl_s():g} s). It stops so that "
                               "two runs never write the same checkpoint; re-run it to resume")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._lock:
            if self.version is not None and not self.lost:
                with contextlib.suppress(ServiceError):  # a record left behind is taken over as a dead run's
                    self.store.delete(self.version)
            self.version = None
