"""A run owns its checkpoints (gandistill.lease): two live runs with the same params never read
each other's live checkpoint; a dead run's checkpoints are taken over and resumed.

The runs here are real processes running the real training loop (checkpoints, lease, resume)
on a small model; the step function waits at a barrier file, so "A is still training when B
starts" holds by construction, never by timing. The real stages and the real CLI do the same
in tests/test_bad_inputs.py's slow concurrent-runs test and tests/integration (SeaweedFS).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import TOY_STEPS, finish_toy_run, same_weights, start_toy_run, toy_weights, wait_for_file

from gandistill import lease, processes
from gandistill.checkpoint_store import CheckpointStore
from gandistill.errors import ServiceError


def test_a_second_live_run_waits_then_resumes_from_the_finished_checkpoint(tmp_path: Path) -> None:
    """B starts while A trains with the same params: B says it waits, reads nothing until A has
    finished, then resumes from A's final checkpoint — the weights of a run alone."""
    barrier = tmp_path / "go"
    a = start_toy_run(tmp_path / "ckpt", tmp_path / "a.json", barrier=str(barrier))
    wait_for_file(Path(f"{barrier}.reached"), a)  # A holds the checkpoints, mid-training
    b = start_toy_run(tmp_path / "ckpt", tmp_path / "b.json", env={"GANDISTILL_RUN_NAME": "run-b"})
    deadline = time.monotonic() + 120
    said = ""
    while "in use by" not in said:  # B reached the lease and is waiting, A still mid-training
        assert b.poll() is None and time.monotonic() < deadline, said
        said += os.read(b.stderr.fileno(), 65536).decode()
    assert not (tmp_path / "b.json").exists()
    barrier.touch()
    finish_toy_run(a)
    said += finish_toy_run(b)
    assert "waiting for it to finish" in said and f"pid {a.pid}" in said
    a_result, b_result = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "ab")
    assert a_result["resumed_from"] is None
    assert b_result["resumed_from"] == TOY_STEPS  # only A's final checkpoint was ever read, never a live one
    assert a_result["location"] == b_result["location"]
    assert same_weights(toy_weights(tmp_path / "a.json"), toy_weights(tmp_path / "b.json"))
    assert not (tmp_path / "ckpt" / "toy-fp" / lease.OWNER_FILE).exists()  # released at the end


def test_with_a_wait_limit_the_second_run_trains_apart(tmp_path: Path) -> None:
    """runtime.checkpoint_wait_s=0: B does not wait — it says so and trains in a location of its
    own from step 0; A's checkpoints are untouched and both end with the same weights."""
    barrier = tmp_path / "go"
    a = start_toy_run(tmp_path / "ckpt", tmp_path / "a.json", barrier=str(barrier))
    wait_for_file(Path(f"{barrier}.reached"), a)
    b_err = finish_toy_run(start_toy_run(tmp_path / "ckpt", tmp_path / "b.json", wait_s="0"))
    barrier.touch()
    finish_toy_run(a)
    b_result = json.loads((tmp_path / "b.json").read_text())
    assert "training apart" in b_err and b_result["resumed_from"] is None
    assert b_result["location"] == str(tmp_path / "ckpt" / "toy-fp.2")
    assert json.loads((tmp_path / "a.json").read_text())["location"] == str(tmp_path / "ckpt" / "toy-fp")
    assert same_weights(toy_weights(tmp_path / "a.json"), toy_weights(tmp_path / "b.json"))


def _dead_owner(folder: Path, **fields: object) -> None:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    record = {"token": "dead", "run": "run-killed", "pid": int(proc.stdout), "process_start": "1",
              "machine": processes.this_machine(), "since": 0, "heartbeat": time.time(), "beat": 1} | fields
    folder.mkdir(parents=True, exist_ok=True)
    (folder / lease.OWNER_FILE).write_text(json.dumps(record))


def test_a_dead_runs_checkpoints_are_taken_over_at_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The owner's process is gone (same machine): its location is taken over without waiting."""
    folder = tmp_path / "ckpt" / "toy-fp"
    _dead_owner(folder)
    store = CheckpointStore(folder)
    with store.owned("toy", wait_s=None):
        body = json.loads((folder / lease.OWNER_FILE).read_text())
        assert body["pid"] == os.getpid() and body["token"] != "dead"
    assert "taking over" in caplog.text and "run-killed" in caplog.text and "no longer running" in caplog.text
    assert not (folder / lease.OWNER_FILE).exists()


def test_a_silent_owner_on_another_machine_is_taken_over_after_the_ttl(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A pid on another machine means nothing here: the record must stay unchanged for the TTL
    (by this process's clock) before it counts as dead; meanwhile the run waits and says so."""
    monkeypatch.setenv(lease.TTL_ENV, "1")
    folder = tmp_path / "ckpt" / "toy-fp"
    _dead_owner(folder, machine="elsewhere|boot|pid:[1]", pid=1)
    with CheckpointStore(folder).owned("toy", wait_s=None):
        pass
    text = caplog.text
    assert text.index("in use by run-killed") < text.index("taking over"), text


def test_an_owner_whose_checkpoints_were_taken_over_stops_writing(tmp_path: Path) -> None:
    """If another run took the location over (this one was presumed dead), the next checkpoint
    write fails with one error instead of overwriting the new owner's checkpoint."""
    folder = tmp_path / "ckpt" / "toy-fp"
    store = CheckpointStore(folder)
    with store.owned("toy"):
        store.save({"step": 1})
        record = json.loads((folder / lease.OWNER_FILE).read_text())
        (folder / lease.OWNER_FILE).write_text(json.dumps(record | {"token": "usurper", "run": "run-new"}))
        with pytest.raises(ServiceError, match=r"no longer this run's: run-new .* took them over"):
            store.save({"step": 2})
    assert torch.load(store.local_file, weights_only=True)["step"] == 1
    assert json.loads((folder / lease.OWNER_FILE).read_text())["token"] == "usurper"  # not released: not ours
