"""Helpers the tests share (imported as `from helpers import ...`; fixtures stay in conftest.py).

- `smoke_params`: the shipped params.yaml with the smoke profile and overrides;
- `make_pattern_images`: a learnable image set of any size / channels / classes;
- `artifact`: a kfp artifact pointing at a local folder, to call a component's function;
- `write_idx`: an array as an IDX file (fixtures for the idx / mnist sources);
- `transfer_domains` / `train_transfer_world`: two tiny domains (grey source, coloured target)
  and the teacher + translator the target-domain distill methods need;
- `start_toy_run` / `finish_toy_run`: a training loop on a small model in its own process, optionally
  held at a barrier file, to start two "runs" that share a checkpoint location;
- `make_world` / `fast_params`: a tiny learnable world for the evaluation/export/promote tests —
  3 classes of 16×16 grey images: dim noise plus a bright square whose position encodes the
  class, so a LeNet learns it in a few dozen steps and accuracies are real, not chance.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gandistill.config import Params
from gandistill.data.dataset import DatasetMeta, Split, channel_stats, save_dataset
from gandistill.model_files import save_classifier, save_generator
from gandistill.nets import ConditionalGenerator, build_classifier
from gandistill.results import write_result

ROOT = Path(__file__).resolve().parents[1]


def smoke_params(*overrides: str) -> Params:
    from gandistill.config import load_params

    return load_params(ROOT / "params.yaml", list(overrides), "smoke")


def make_pattern_images(n: int, num_classes: int, size: int = 16, channels: int = 1,
                        seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class k = a bright bar at a class-specific position + noise: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % num_classes
    rng.shuffle(y)
    x = rng.integers(0, 60, size=(n, channels, size, size)).astype(np.uint8)
    for i, label in enumerate(y):
        row = (label * size) // num_classes
        x[i, :, row : row + max(1, size // num_classes), :] = 230
    return x, y.astype(np.int64)


def transfer_domains(folder: Path) -> list[str]:
    """Two tiny domains as .npz files in `folder` — A: grey bars (`make_pattern_images`), B: the
    same four classes in colour, inverted and tinted — and the params overrides that point
    data.source / data.target_source at them, with a translator sized for a few steps."""
    xa, ya = make_pattern_images(400, 4, size=16, seed=0)
    xb, yb = make_pattern_images(400, 4, size=16, channels=3, seed=5)
    np.savez(folder / "a.npz", x=xa, y=ya)
    np.savez(folder / "b.npz", x=(255 - xb) // 2 + np.arange(3, dtype=np.uint8).reshape(1, 3, 1, 1) * 40, y=yb)
    return ["data.source=npz", f"data.path={folder / 'a.npz'}", "data.target_source=npz",
            f"data.target_path={folder / 'b.npz'}", "translator.steps=4", "translator.eval_every=2",
            "translator.eval_samples=40", "translator.batch_size=8", "translator.ngf=4", "translator.ndf=8",
            "translator.n_blocks=1", "translator.min_diversity=0"]  # 4 steps: not a collapse check


def train_transfer_world(params: Params, folder: Path) -> dict[str, Path]:
    """prepare_data (source + target), the teacher and the translator, run as the pipeline runs them."""
    from gandistill.stages import prepare_data, train_teacher, train_translator

    paths = {name: folder / name for name in ("data", "teacher", "translator")}
    prepare_data.run(params, paths["data"])
    train_teacher.run(params, paths["data"], paths["teacher"])
    train_translator.run(params, paths["data"], paths["teacher"], paths["translator"])
    return paths


@contextlib.contextmanager
def dead_port() -> Iterator[int]:
    """A local port held bound but never listened on, for an unreachable server: connecting is
    refused, and while it is held no other process on this shared machine can start a server there
    (a port merely found free and released can be taken by another suite's server before the
    process under test connects)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write an array as an IDX file (big-endian, the type code of its dtype): the format the idx and
    mnist sources read, for fixtures of any shape and dtype."""
    from gandistill.data.idx import _DTYPES

    codes = {np.dtype(v).newbyteorder("="): k for k, v in _DTYPES.items()}
    native = array.dtype.newbyteorder("=")
    header = bytes([0, 0, codes[native], array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    Path(path).write_bytes(header + array.astype(_DTYPES[codes[native]]).tobytes())


def artifact(cls: type, path: Path) -> object:
    """A kfp artifact of type `cls` at `path` (kfp maps uri → path at run time; here it is given)."""
    a = cls(name=Path(path).name, uri=str(path))
    a.path = str(path)
    return a


def training_outputs(folder: Path) -> dict[str, object]:
    """A training component's `metrics` and `curves` outputs (gandistill.stage_records.TRAINING_OUTPUTS),
    as files in `folder` (kfp creates an output's folder; here it is made)."""
    from kfp import dsl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return {"metrics": artifact(dsl.Metrics, folder / "metrics"), "curves": artifact(dsl.HTML, folder / "curves")}


# -- the evaluation world ----------------------------------------------------------------------

CLASSES = ["left", "middle", "right"]
SIZE = 16


def make_split(n: int, rng: np.random.Generator) -> Split:
    y = np.arange(n) % len(CLASSES)
    x = rng.integers(0, 60, size=(n, 1, SIZE, SIZE), dtype=np.uint8)
    for i, k in enumerate(y):
        top = rng.integers(2, 9)
        x[i, 0, top : top + 5, 1 + 5 * k : 5 + 5 * k] = rng.integers(180, 255)
    return Split(x=x, y=y.astype(np.int64))


def make_data(folder: Path, seed: int = 0) -> DatasetMeta:
    rng = np.random.default_rng(seed)
    splits = {"train": make_split(150, rng), "val": make_split(30, rng), "test": make_split(60, rng)}
    mean, std = channel_stats(splits["train"].x)
    meta = DatasetMeta(class_names=CLASSES, channels=1, height=SIZE, width=SIZE, mean=mean, std=std,
                       source="synthetic-squares", version={"dvc_md5": "0123abcd.dir", "train.npz": "feed"})
    save_dataset(folder, splits, meta)
    return meta


def train_classifier(folder: Path, data: Path, meta: DatasetMeta, arch: str, steps: int = 60, seed: int = 0,
                     method: str | None = None) -> torch.nn.Module:
    """A few full-batch Adam steps; saves model.pt and a result.json with a history."""
    torch.manual_seed(seed)
    with np.load(data / "train.npz") as arrays:
        x = torch.from_numpy(arrays["x"]).float() / 255
        y = torch.from_numpy(arrays["y"]).long()
    model = build_classifier(arch, 1, (SIZE, SIZE), len(CLASSES), mean=meta.mean, std=meta.std)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for step in range(1, steps + 1):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 20 == 0:
            history.append({"step": float(step), "loss": float(loss.detach())})
    model.eval()
    save_classifier(model, arch, meta, folder, extra={"method": method} if method else None)
    write_result(folder, {"arch": arch, "history": history, "method": method or "train"})
    return model


def make_generator(folder: Path) -> ConditionalGenerator:
    torch.manual_seed(1)
    generator = ConditionalGenerator(8, len(CLASSES), 1, (SIZE, SIZE), ngf=8).eval()
    save_generator(generator, folder)
    write_result(folder, {"history": [{"step": 1.0, "fid": 10.0}, {"step": 2.0, "fid": 5.0}]})
    return generator


def fast_params(**evaluate: object) -> Params:
    params = Params()
    params.evaluate = params.evaluate.model_copy(update={"latency_runs": 5, "privacy_samples": 40,
                                                         "gan_samples": 60, **evaluate})
    params.runtime.progress = False
    params.runtime.threads = 1  # a shared 2-core box: one thread avoids spin-wait contention
    return params


def make_world(root: Path, generator: bool = True) -> dict[str, Path]:
    torch.set_num_threads(1)
    paths = {name: root / name for name in ("data", "teacher", "student", "generator")}
    meta = make_data(paths["data"])
    train_classifier(paths["teacher"], paths["data"], meta, "lenet5", steps=60)
    train_classifier(paths["student"], paths["data"], meta, "lenet5_half", steps=60, method="gan")
    if generator:
        make_generator(paths["generator"])
    return paths


# -- two runs of one training loop (tests of checkpoint ownership, gandistill.lease) --------------

TOY_STEPS = 30
# One "run": the real training loop on a small model; at step 10 it waits until BARRIER exists (if named).
TOY_RUN_SCRIPT = f"""
import json, sys, time
from pathlib import Path
import torch
from torch import nn
from gandistill.loop import TrainingLoop, warmup_cosine
from gandistill.runtime import Runtime
root, out, wait_s, barrier = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4]
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
opt = torch.optim.Adam(model.parameters(), lr=1e-2)
sched = warmup_cosine(opt, {TOY_STEPS}, warmup_steps=5)
runtime = Runtime(torch.device("cpu"), checkpoint_wait_s=None if wait_s == "none" else float(wait_s))
loop = TrainingLoop("toy", {TOY_STEPS}, root.rstrip("/") + "/toy-fp", fingerprint="fp", checkpoint_every=5,
                    progress=False, runtime=runtime)
loop.track("model", model, opt, sched)

def step(i):
    if i == 10 and barrier != "-":
        Path(barrier + ".reached").touch()
        while not Path(barrier).exists():
            time.sleep(0.05)
    x = torch.randn(16, 4)
    loss = ((model(x) - x.sum(1, keepdim=True)) ** 2).mean()
    opt.zero_grad(); loss.backward(); opt.step(); sched.step()
    return {{"loss": loss.detach()}}

result = loop.run(step)
torch.save(model.state_dict(), out.with_suffix(".pt"))
out.write_text(json.dumps({{"resumed_from": result.resumed_from, "location": str(loop.checkpoints.location)}}))
"""


def start_toy_run(root: Path | str, out: Path, wait_s: str = "none", barrier: str = "-",
                  env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", TOY_RUN_SCRIPT, str(root), str(out), wait_s, barrier],
                            env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for_file(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def finish_toy_run(proc: subprocess.Popen) -> str:
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    return err


def toy_weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out.with_suffix(".pt"), weights_only=True)


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# Prepended to a training subprocess's script (or written as a sitecustomize every process of a run
# loads), so a kill or overlap test does not race the machine's speed (CI's once finished all epochs
# between two polls of a test). After each checkpoint save: HOLD_AT_STEP set — at or past that step the
# process sleeps until it is killed; HOLD_SAVES_UNTIL set — it waits until that file exists. Weights are
# untouched: the uninterrupted reference runs without either.
HOLD_AFTER_CHECKPOINT = """
import os, time
from gandistill.checkpoint_store import CheckpointStore
_hold_at, _until = int(os.environ.get("HOLD_AT_STEP", "0")), os.environ.get("HOLD_SAVES_UNTIL")
if _hold_at or _until:
    _save = CheckpointStore.save
    def _save_then_hold(self, snapshot):
        _save(self, snapshot)
        if _hold_at and snapshot["step"] >= _hold_at:
            time.sleep(3600)
        while _until and not os.path.exists(_until):
            time.sleep(0.2)
    CheckpointStore.save = _save_then_hold
"""
