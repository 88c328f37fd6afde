"""The shared training loop: checkpoints, exact resume, divergence and collapse handling."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import HOLD_AFTER_CHECKPOINT
from torch import nn

from gandistill.errors import TrainingError
from gandistill.loop import TrainingLoop, warmup_cosine

TOTAL = 40


def _setup(ckpt: Path | None, **kwargs):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    opt = torch.optim.Adam(model.parameters(), lr=kwargs.pop("lr", 1e-2))
    sched = warmup_cosine(opt, TOTAL, warmup_steps=5)
    loop = TrainingLoop("test", TOTAL, ckpt, fingerprint="fp", checkpoint_every=10, progress=False, **kwargs)
    loop.track("model", model, opt, sched)
    return model, opt, sched, loop


def _step_fn(model, opt, sched, crash_at: int | None = None, nan_at: set[int] | None = None):
    def step(i: int):
        if crash_at is not None and i == crash_at:
            raise KeyboardInterrupt("simulated crash")
        x = torch.randn(16, 4)  # global RNG: restored on resume
        loss = ((model(x) - x.sum(1, keepdim=True)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if nan_at and i in nan_at:
            nan_at.discard(i)
            return {"loss": float("nan")}
        return {"loss": loss.detach()}

    return step


def test_resume_after_crash_reproduces_uninterrupted_weights(tmp_path):
    model_a, *rest_a, loop_a = _setup(tmp_path / "a")
    loop_a.run(_step_fn(model_a, *rest_a))

    model_b, *rest_b, loop_b = _setup(tmp_path / "b")
    with pytest.raises(KeyboardInterrupt):
        loop_b.run(_step_fn(model_b, *rest_b, crash_at=27))
    model_c, *rest_c, loop_c = _setup(tmp_path / "b")
    result = loop_c.run(_step_fn(model_c, *rest_c))
    assert result.resumed_from == 20  # last checkpoint before the crash
    for pa, pc in zip(model_a.parameters(), model_c.parameters(), strict=True):
        assert torch.equal(pa, pc)


def test_checkpoints_load_with_weights_only(tmp_path):
    model, *rest, loop = _setup(tmp_path)
    loop.run(_step_fn(model, *rest))
    snap = torch.load(tmp_path / "last.pt", weights_only=True)
    assert snap["step"] == TOTAL and "rng" in snap and "optimizers" in snap
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temp files left


def test_checkpoint_of_other_params_is_not_resumed(tmp_path):
    model, *rest, loop = _setup(tmp_path)
    loop.run(_step_fn(model, *rest))
    model2, opt2, sched2, _ = _setup(None)
    other = TrainingLoop("test", TOTAL, tmp_path, fingerprint="different", progress=False)
    other.track("model", model2, opt2, sched2)
    assert other.run(_step_fn(model2, opt2, sched2)).resumed_from is None


def test_non_finite_loss_restores_and_lowers_the_learning_rate(tmp_path):
    model, opt, sched, loop = _setup(tmp_path, max_retries=2, retry_lr_factor=0.5)
    result = loop.run(_step_fn(model, opt, sched, nan_at={15}))
    assert result.retries == 1 and result.steps == TOTAL
    assert sched.base_lrs[0] == pytest.approx(1e-2 * 0.5)
    assert all(math.isfinite(float(p.detach().sum())) for p in model.parameters())


def test_absurd_learning_rate_fails_with_symptom_and_knobs(tmp_path):
    model, opt, sched, loop = _setup(tmp_path, lr=1e30, max_retries=2, retry_lr_factor=0.5)
    with pytest.raises(TrainingError) as err:
        loop.run(_step_fn(model, opt, sched))
    message = str(err.value)
    assert "non-finite loss" in message and "gave up after 2 retries" in message
    assert "lower the stage's learning rate" in message


def test_collapse_after_patience_checks_triggers_a_retry(tmp_path):
    model, opt, sched, loop = _setup(tmp_path, patience=2, max_retries=1)
    loop.eval_every = 5
    coverage = iter([0.9, 0.1, 0.1] + [0.9] * 50)
    result = loop.run(_step_fn(model, opt, sched), eval_fn=lambda s: {"coverage": next(coverage)},
                      health_fn=lambda m: "class coverage low" if m["coverage"] < 0.5 else None)
    assert result.retries == 1 and result.steps == TOTAL


def test_collapse_that_persists_fails_naming_the_gan_knobs(tmp_path):
    model, opt, sched, loop = _setup(tmp_path, patience=2, max_retries=1)
    loop.eval_every = 5
    with pytest.raises(TrainingError, match="coverage.*gan.min_coverage"):
        loop.run(_step_fn(model, opt, sched), eval_fn=lambda s: {"coverage": 0.0},
                 health_fn=lambda m: "class coverage 0.000 below gan.min_coverage=0.5")


def test_model_selection_keeps_the_best_validation_step(tmp_path):
    model, opt, sched, loop = _setup(tmp_path, select=("val_acc", "max"))
    loop.eval_every = 10
    scores = iter([0.5, 0.9, 0.7, 0.8])
    result = loop.run(_step_fn(model, opt, sched), eval_fn=lambda s: {"val_acc": next(scores)})
    assert result.best_step == 20 and result.best_value == 0.9


TRAIN_SCRIPT = HOLD_AFTER_CHECKPOINT + """
import sys, torch
from gandistill.config import load_params
from gandistill.stages import train_teacher
params = load_params(None, ["teacher.epochs=6", "teacher.batch_size=32", "runtime.checkpoint_every=10",
                            "runtime.progress=false", "runtime.threads=1"])
train_teacher.run(params, sys.argv[1], sys.argv[2])
"""


@pytest.mark.slow
def test_sigkill_mid_training_then_rerun_gives_identical_weights(tiny_dataset, tmp_path):
    """A real training subprocess is SIGKILLed after a checkpoint; the re-run resumes and
    ends with exactly the weights of an uninterrupted run (CPU, fixed seed)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}

    def launch(ckpt_root: Path, out: Path, hold_at_step: int = 0) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", TRAIN_SCRIPT, str(tiny_dataset), str(out)],
                                env={**env, "GANDISTILL_CHECKPOINT_ROOT": str(ckpt_root),
                                     "HOLD_AT_STEP": str(hold_at_step)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    reference = launch(tmp_path / "ref_ckpt", tmp_path / "ref")
    assert reference.wait(timeout=300) == 0, reference.stderr.read().decode()[-2000:]

    victim = launch(tmp_path / "ckpt", tmp_path / "victim", hold_at_step=20)
    deadline = time.time() + 120
    last = None
    while time.time() < deadline:
        found = list((tmp_path / "ckpt").glob("*/last.pt"))
        if found and torch.load(found[0], weights_only=True)["step"] >= 20:
            last = found[0]
            break
        time.sleep(0.05)
    assert last is not None, "no checkpoint appeared"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (tmp_path / "victim" / "model.pt").exists()  # killed before finishing
    killed_at = torch.load(last, weights_only=True)["step"]
    assert 0 < killed_at < 60

    rerun = launch(tmp_path / "ckpt", tmp_path / "victim")
    assert rerun.wait(timeout=300) == 0, rerun.stderr.read().decode()[-2000:]
    ref = torch.load(tmp_path / "ref" / "model.pt", weights_only=True)["state_dict"]
    resumed = torch.load(tmp_path / "victim" / "model.pt", weights_only=True)["state_dict"]
    assert ref.keys() == resumed.keys()
    for key in ref:
        assert torch.equal(ref[key], resumed[key]), key


def test_ema_warms_up_then_averages_with_the_configured_decay():
    from gandistill.loop import EMA

    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    ema = EMA(model, decay=0.999)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)  # first update: decay min(0.999, 2/11)
    assert float(ema.shadow.weight) == pytest.approx(1 - 2 / 11)
    ema.updates = 10_000  # far past warm-up: the configured decay rules
    with torch.no_grad():
        model.weight.fill_(2.0)
    before = float(ema.shadow.weight)
    ema.update(model)
    assert float(ema.shadow.weight) == pytest.approx(before + (2.0 - before) * 0.001)


def test_ema_state_carries_its_update_count():
    """A resumed EMA continues its warm-up where it was (its own update count), not from zero."""
    from gandistill.loop import EMA

    model = torch.nn.Linear(1, 1)
    ema = EMA(model, decay=0.999)
    for _ in range(3):
        ema.update(model)
    again = EMA(torch.nn.Linear(1, 1), decay=0.999)
    again.load_state_dict(ema.state_dict())
    assert again.updates == 3 and torch.equal(again.shadow.weight, ema.shadow.weight)


def test_a_checkpoint_from_another_format_is_not_resumed(tmp_path):
    """After an upgrade that changed the checkpoint's structure, training starts fresh with a
    warning instead of crashing half-way through restoring an old checkpoint."""
    from gandistill.loop import TrainingLoop, atomic_torch_save

    old = {"fingerprint": "fp", "step": 3, "modules": {}}  # format 1: no "format" key
    atomic_torch_save(old, tmp_path / "last.pt")
    loop = TrainingLoop("t", 2, tmp_path, fingerprint="fp", progress=False)
    model = torch.nn.Linear(1, 1)
    loop.track("m", model, torch.optim.SGD(model.parameters(), lr=0.1))
    result = loop.run(lambda step: {"loss": model(torch.ones(1, 1)).sum()})
    assert result.resumed_from is None and result.steps == 2
