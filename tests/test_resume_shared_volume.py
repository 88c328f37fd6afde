"""Resume across pods from checkpoints on a shared volume (pipeline.checkpoint_volume), as far
as this machine allows: no Kubernetes here, so the PVC is a shared folder and each "pod" is a
whole `gandistill run --local` (kfp.local runs every task as its own process with the
GANDISTILL_CHECKPOINT_ROOT the compiled task carries) with its own disk: its own runs folder,
kfp pipeline root and working directory. The first is killed — every process of it — while the
teacher trains; the second, sharing only the volume folder, resumes the teacher from the
checkpoint the first left there. That the PVC is mounted into exactly the training tasks is
checked on the compiled spec (tests/test_compiled_spec.py); kfp.local ignores mounts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _pod(tmp_path: Path, name: str, shared: Path) -> subprocess.Popen:
    disk = tmp_path / name
    disk.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "GANDISTILL_CHECKPOINT_ROOT"}  # the volume decides
    env |= {"MLFLOW_TRACKING_URI": f"sqlite:///{disk / 'mlflow.db'}", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
            "GANDISTILL_LEASE_TTL_S": "5"}  # the killed pod's checkpoint lease expires soon (gandistill/lease.py)
    args = [sys.executable, "-m", "gandistill", "run", "--local", "--params", str(ROOT / "params.yaml"),
            "--profile", "smoke", "--runs-dir", str(disk / "runs"), "--run-name", name,
            "--set", f"pipeline.checkpoint_volume={{claim: gandistill-checkpoints, mount_path: {shared}}}",
            "--set", f"pipeline.checkpoint_root={shared}/ckpt",
            "--set", "teacher.epochs=12", "--set", "runtime.checkpoint_every=5",
            "--set", f"data.path={ROOT / 'data' / 'mnist'}"]
    return subprocess.Popen(args, cwd=disk, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)  # its own process group: kill every task process with it


def _teacher_step(shared: Path) -> int | None:
    found = sorted(shared.glob("ckpt/train_teacher*/last.pt"))
    if not found:
        return None
    try:
        return int(torch.load(found[0], weights_only=True)["step"])
    except (EOFError, RuntimeError):  # never torn (atomic rename), but it may vanish between glob and load
        return None


@pytest.mark.slow
def test_a_killed_run_resumes_the_teacher_from_the_shared_volume_on_a_fresh_disk(
        tmp_path: Path, mnist_dir: Path) -> None:
    shared = tmp_path / "volume"
    shared.mkdir()
    first = _pod(tmp_path, "pod-a", shared)
    deadline, killed_at = time.time() + 600, None
    while time.time() < deadline and first.poll() is None:
        step = _teacher_step(shared)
        if step is not None and step >= 20:
            os.killpg(first.pid, signal.SIGKILL)
            killed_at = step
            break
        time.sleep(0.2)
    first.wait()
    assert killed_at is not None, first.stderr.read().decode()[-3000:] if first.stderr else "no checkpoint"
    stored = _teacher_step(shared)
    assert stored is not None and stored >= killed_at

    second = _pod(tmp_path, "pod-b", shared)
    _, err = second.communicate(timeout=900)
    assert second.returncode == 0, err.decode()[-3000:]
    found = [p for p in (tmp_path / "pod-b").rglob("result.json") if "train-teacher" in str(p).replace("_", "-")]
    assert len(found) == 1, sorted(str(p) for p in (tmp_path / "pod-b").rglob("result.json"))
    teacher = json.loads(found[0].read_text())
    assert teacher["resumed_from"] == stored  # continued from the volume, not from step 0
    assert not list((tmp_path / "pod-b").rglob("last.pt"))  # nothing on the new pod's own disk
