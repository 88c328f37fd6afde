"""What a person sees while a local run works: one line per stage, progress bars, warnings,
errors — while the full kfp.local log (executor inputs/outputs, every INFO line) goes to a
file in the run's folder.

The stages run in kfp.local subprocesses whose output kfp pipes through line by line (a
progress bar's carriage returns never reach the terminal), so stages report to the console
out of band: when `GANDISTILL_EVENTS` names a file, `emit` appends one JSON line per event
to it (O_APPEND: short lines from several processes do not interleave), and the run's
`Console` (in the `gandistill run` process) tails that file and renders it. Without the
variable (a cluster run, a unit test) every call here is a no-op.

Events: stage_start, stage_end (wall time + headline), stage_failed (the stage's own
message and its error class, gandistill.errors.category), progress (training loop step /
total), log (a gandistill WARNING or ERROR).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from tqdm.auto import tqdm

EVENTS_ENV = "GANDISTILL_EVENTS"
PROGRESS_EVERY_S = 0.5
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}]{postfix}"
_stage = ""  # the stage this process runs (one per kfp task), stamped on every event


def enabled() -> bool:
    return bool(os.environ.get(EVENTS_ENV))


def emit(kind: str, **fields: Any) -> None:
    path = os.environ.get(EVENTS_ENV)
    if not path:
        return
    line = json.dumps({"t": time.time(), "kind": kind, "stage": _stage, **fields}, default=str) + "\n"
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line)
    except OSError:  # the console is a convenience: never fail a stage over it
        pass


# -- stage side ------------------------------------------------------------------------------

def stage_started(stage: str) -> None:
    global _stage
    _stage = stage
    emit("stage_start")


class _EventLogHandler(logging.Handler):
    """Forwards gandistill WARNING/ERROR records to the console (the file keeps everything)."""

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "console", True):
            emit("log", level=record.levelname, message=record.getMessage())


def forward_warnings(logger: logging.Logger) -> None:
    """Attach the console handler to `logger` once, when events are on."""
    if enabled() and not any(isinstance(h, _EventLogHandler) for h in logger.handlers):
        handler = _EventLogHandler(logging.WARNING)
        logger.addHandler(handler)


class _EventProgress:
    """The part of tqdm's interface the training loop uses, reported as throttled events."""

    def __init__(self, total: int, initial: int, desc: str):
        self.total, self.n, self.desc = total, initial, desc
        self.postfix = ""
        self._last = 0.0
        self._send(force=True)

    def _send(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last >= PROGRESS_EVERY_S or self.n >= self.total:
            self._last = now
            emit("progress", step=self.n, total=self.total, postfix=self.postfix)

    def update(self, n: int = 1) -> None:
        self.n += n
        self._send()

    def reset(self, total: int | None = None) -> None:
        self.total = total if total is not None else self.total
        self.n = 0
        self._send(force=True)

    def set_postfix(self, values: dict[str, Any], refresh: bool = True) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        self._send(force=True)


def progress_bar(total: int, initial: int, desc: str, enabled_: bool = True) -> Any:
    """A progress bar for long work: on the run's console when one listens, else tqdm."""
    if enabled_ and enabled():
        return _EventProgress(total, initial, desc)
    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled_, mininterval=2.0, dynamic_ncols=True)


# -- run side --------------------------------------------------------------------------------

def failures(events: Path) -> list[dict[str, Any]]:
    """The stage_failed events of a run's events file, in the order they happened."""
    if not events.is_file():
        return []
    found = []
    for line in events.read_text(encoding="utf-8").splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a killed writer
        if event.get("kind") == "stage_failed":
            found.append(event)
    return found


class Console:
    """Tails the events file in a thread and prints: a live bar per running stage (on a
    terminal), one line per finished or failed stage, warnings and errors."""

    def __init__(self, events: Path, out: TextIO | None = None, bars: bool | None = None):
        self.events = events
        self.out = out or sys.stdout
        self.bars_on = self.out.isatty() if bars is None else bars
        self.started: dict[str, float] = {}
        self.bars: dict[str, Any] = {}
        self.failed: list[tuple[str, str]] = []
        self._offset = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="gandistill-console", daemon=True)

    def __enter__(self) -> Console:
        self.events.parent.mkdir(parents=True, exist_ok=True)
        self.events.touch()
        self._offset = self.events.stat().st_size
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.poll()  # whatever arrived after the last tick
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            self.poll()

    def poll(self) -> None:
        with open(self.events, encoding="utf-8") as handle:
            handle.seek(self._offset)
            chunk = handle.read()
        complete = chunk[: chunk.rfind("\n") + 1]  # a line still being written waits for the next tick
        self._offset += len(complete.encode("utf-8"))
        for line in complete.splitlines():
            try:
                self.handle(json.loads(line))
            except (json.JSONDecodeError, KeyError, TypeError):
                continue

    def _print(self, text: str) -> None:
        if self.bars:
            tqdm.write(text, file=self.out)
        else:
            print(text, file=self.out, flush=True)

    def _close_bar(self, stage: str) -> None:
        bar = self.bars.pop(stage, None)
        if bar is not None:
            bar.leave = False
            bar.close()

    def handle(self, event: dict[str, Any]) -> None:
        kind, stage = event["kind"], event.get("stage", "")
        if kind == "stage_start":
            self.started[stage] = event["t"]
            if self.bars_on:
                self.bars[stage] = tqdm(desc=f"  {stage}", total=None, file=self.out, leave=False,
                                        dynamic_ncols=True, bar_format="{desc}: {elapsed}{postfix}")
        elif kind == "progress" and stage in self.bars:
            bar = self.bars[stage]
            if bar.total != event["total"]:  # the first progress event: now a bar with a known length
                bar.bar_format = BAR_FORMAT
                bar.reset(total=event["total"])
            bar.n = event["step"]
            bar.set_postfix_str(event.get("postfix", ""), refresh=False)
            bar.refresh()
        elif kind == "stage_end":
            self._close_bar(stage)
            self._print(f"✓ {stage:<16} {event.get('wall_s', 0):7.1f} s   {event.get('headline', '')}".rstrip())
        elif kind == "stage_failed":
            self._close_bar(stage)
            self.failed.append((stage, event.get("error", "")))
            self._print(f"✗ {stage:<16} {event.get('wall_s', 0):7.1f} s   {event.get('error', '')}")
        elif kind == "log":
            message = re.sub(r"^\[[\w\[\]]+\] ", "", event.get("message", ""))  # the stage is named already
            self._print(f"  {event.get('level', 'WARNING').lower()} ({stage or 'run'}): {message}")
