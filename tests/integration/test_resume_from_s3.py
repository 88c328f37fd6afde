"""Resume on a cluster, against the real SeaweedFS server: a training task whose pod dies is
retried on another node (empty local disk) and continues from the checkpoint committed to
the object store, ending with exactly the weights of an uninterrupted run (CPU, fixed seed).

The pod is a subprocess running the train_teacher stage; "another node" is a fresh
GANDISTILL_CHECKPOINT_CACHE folder (the local copy the first pod wrote is never seen).
KFP's retry itself (set_retry on the training tasks) is checked on the compiled spec in
tests/test_compiled_spec.py: no Kubernetes API here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch
from helpers import HOLD_AFTER_CHECKPOINT

from gandistill import storage
from gandistill.errors import ServiceError

BUCKET = "gandistill"
ROOT = Path(__file__).resolve().parents[2]

TRAIN_SCRIPT = HOLD_AFTER_CHECKPOINT + """
import sys
from gandistill.config import load_params
from gandistill.stages import train_teacher
params = load_params(None, ["teacher.epochs=6", "teacher.batch_size=32", "runtime.checkpoint_every=10",
                            "runtime.progress=false", "runtime.threads=1"])
train_teacher.run(params, sys.argv[1], sys.argv[2])
"""


def _committed_step(prefix: str) -> int | None:
    """The step of the checkpoint committed under `prefix`, or None while there is none."""
    listed = storage.client().list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    finals = [o["Key"] for o in listed if o["Key"].endswith("/last.pt")]
    if not finals:
        return None
    try:
        local = storage.download_file(f"s3://{BUCKET}/{finals[0]}", Path(os.environ["PROBE_DIR"]) / "probe.pt")
    except ServiceError:  # the pod replaced last.pt between this probe's requests: look again next poll
        return None
    return int(torch.load(local, weights_only=True)["step"])


@pytest.mark.slow
def test_killed_training_task_resumes_from_s3_on_a_new_node_with_identical_weights(
        s3_env: dict[str, str], tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prefix = f"it/{uuid.uuid4().hex[:8]}/checkpoints"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    monkeypatch.setenv("PROBE_DIR", str(tmp_path / "probe"))

    def pod(node: str, out: Path, root: str, hold_at_step: int = 0) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", TRAIN_SCRIPT, str(tiny_dataset), str(out)],
                                env={**env, "GANDISTILL_CHECKPOINT_ROOT": root, "HOLD_AT_STEP": str(hold_at_step),
                                     "GANDISTILL_CHECKPOINT_CACHE": str(tmp_path / node)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    reference = pod("ref-node", tmp_path / "ref", str(tmp_path / "ref-checkpoints"))  # local disk, never killed
    assert reference.wait(timeout=600) == 0, reference.stderr.read().decode()[-2000:]

    victim = pod("node-a", tmp_path / "victim", f"s3://{BUCKET}/{prefix}", hold_at_step=20)
    deadline = time.time() + 300
    killed_at = None
    while time.time() < deadline and victim.poll() is None:
        step = _committed_step(prefix)
        if step is not None and step >= 20:
            victim.send_signal(signal.SIGKILL)
            killed_at = step
            break
        time.sleep(0.2)
    victim.wait()
    assert killed_at is not None, "no checkpoint reached the object store before the run ended"
    assert not (tmp_path / "victim" / "model.pt").exists()  # killed before finishing
    stored = _committed_step(prefix)
    assert stored is not None and 20 <= stored < 60  # what the retried pod will find

    retried = pod("node-b", tmp_path / "victim", f"s3://{BUCKET}/{prefix}")  # a new node: empty local disk
    _, err = retried.communicate(timeout=600)
    assert retried.returncode == 0, err.decode()[-2000:]
    result = json.loads((tmp_path / "victim" / "result.json").read_text())
    assert result["resumed_from"] == stored  # continued from the object store, not from zero
    ref = torch.load(tmp_path / "ref" / "model.pt", weights_only=True)["state_dict"]
    resumed = torch.load(tmp_path / "victim" / "model.pt", weights_only=True)["state_dict"]
    assert ref.keys() == resumed.keys()
    for key in ref:
        assert torch.equal(ref[key], resumed[key]), key


def test_two_pods_with_the_same_params_never_share_a_live_checkpoint(
        s3_env: dict[str, str], tmp_path: Path) -> None:
    """Pod B starts while pod A trains with the same params on the same s3:// checkpoint root (a
    retried task whose first pod still runs): B waits on A's lease object (conditional writes on
    the real SeaweedFS), then resumes from A's final checkpoint — never from a live one."""
    from helpers import TOY_STEPS, finish_toy_run, same_weights, start_toy_run, toy_weights, wait_for_file

    root = f"s3://{BUCKET}/it/{uuid.uuid4().hex[:8]}"
    barrier = tmp_path / "go"
    a = start_toy_run(root, tmp_path / "a.json", barrier=str(barrier),
                      env={"GANDISTILL_CHECKPOINT_CACHE": str(tmp_path / "node-a")})
    wait_for_file(Path(f"{barrier}.reached"), a)
    assert storage.exists(f"{root}/toy-fp/owner.json")
    b = start_toy_run(root, tmp_path / "b.json", env={"GANDISTILL_CHECKPOINT_CACHE": str(tmp_path / "node-b")})
    said, deadline = "", time.monotonic() + 120
    while "in use by" not in said:
        assert b.poll() is None and time.monotonic() < deadline, said
        said += os.read(b.stderr.fileno(), 65536).decode()
    barrier.touch()
    finish_toy_run(a)
    finish_toy_run(b)
    assert json.loads((tmp_path / "b.json").read_text())["resumed_from"] == TOY_STEPS
    assert same_weights(toy_weights(tmp_path / "a.json"), toy_weights(tmp_path / "b.json"))
    assert not storage.exists(f"{root}/toy-fp/owner.json")  # released


def test_a_silent_lease_of_a_pod_on_another_node_is_taken_over_after_its_ttl(
        s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A pod lost with its node leaves its lease object behind; its pid means nothing here, so the
    retried pod waits until the record has not changed for the TTL, then takes it over."""
    from gandistill import lease
    from gandistill.checkpoint_store import CheckpointStore

    monkeypatch.setenv(lease.TTL_ENV, "2")
    prefix = f"s3://{BUCKET}/it/{uuid.uuid4().hex[:8]}/train_teacher-fp"
    record = {"token": "lost", "run": "kfp-run-1", "pid": 7, "process_start": "1", "machine": "pod-a|boot|pid:[1]",
              "since": 0, "heartbeat": time.time(), "beat": 3}
    assert storage.put_if_absent(f"{prefix}/owner.json", json.dumps(record).encode())
    with CheckpointStore(prefix).owned("train_teacher"):
        body = json.loads(storage.read_object(f"{prefix}/owner.json")[0])
        assert body["token"] != "lost" and body["pid"] == os.getpid()
    assert caplog.text.index("in use by kfp-run-1") < caplog.text.index("taking over")
    assert not storage.exists(f"{prefix}/owner.json")
