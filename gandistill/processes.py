"""Which process is this, and is that one still running: what tells a dead run's leftovers (a
checkpoint lease, an MLflow run left RUNNING, a kfp workspace) from a live run's. Linux /proc
where there is one; a pid is only compared on the machine — hostname, boot and pid namespace —
that issued it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from pathlib import Path


def _read_first_line(path: str) -> str:
    try:
        with open(path, encoding="ascii") as handle:
            return handle.readline().strip()
    except OSError:
        return ""


def this_machine() -> str:
    """Where a pid means something: hostname, boot and pid namespace."""
    pid_namespace = ""
    with contextlib.suppress(OSError):
        pid_namespace = os.readlink("/proc/self/ns/pid")
    return f"{socket.gethostname()}|{_read_first_line('/proc/sys/kernel/random/boot_id')}|{pid_namespace}"


def process_start(pid: int) -> str:
    """The start time of process `pid` (clock ticks since boot, /proc/PID/stat field 22) — a pid
    reused by a later process has another — or "" where /proc is not there."""
    stat = _read_first_line(f"/proc/{pid}/stat")
    fields = stat.rpartition(")")[2].split()  # after the command name, which may hold spaces
    return fields[19] if len(fields) > 19 else ""


def process_alive(pid: int, started: str) -> bool:
    """Whether `pid` (on this machine) runs, is no zombie and — `started` given — is the process
    that started then, not a later one given the same pid."""
    if Path("/proc/self/stat").is_file():
        fields = _read_first_line(f"/proc/{pid}/stat").rpartition(")")[2].split()
        return len(fields) > 19 and fields[0] != "Z" and (not started or fields[19] == started)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def children(pid: int) -> list[int]:
    """The processes `pid` started, and theirs (empty where /proc is not there)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = _read_first_line(str(stat)).rpartition(")")[2].split()
        if len(fields) > 1:
            parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], list(parents.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo += parents.get(child, [])
    return found


def terminate_children(signum: int = signal.SIGTERM) -> None:
    """Pass `signum` on to every process this one started (kfp.local's task processes)."""
    for child in children(os.getpid()):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(child, signum)
