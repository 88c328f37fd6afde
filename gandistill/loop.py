"""The one training loop shared by the teacher, GAN and distillation stages.

A stage states only its math — a `step_fn(step) -> {name: loss}` and an optional
`eval_fn(step) -> {name: metric}` — and the loop owns everything else:

- atomic checkpoints (temp file, fsync, rename) every N steps with every module, optimizer,
  scheduler and EMA state plus the RNG states, loadable with `torch.load(weights_only=True)`;
- checkpoints on local disk or an object store (checkpoint_store: s3:// locations are uploaded
  verified and committed, so a retried pod on another node resumes from them);
- ownership: while it trains, the run holds its checkpoint location (checkpoint_store.owned):
  a second live run with the same fingerprint waits for it or trains apart; a dead one's is taken over;
- resume: a re-run with the same fingerprint continues from the last checkpoint, and because
  batches are a pure function of the step (`StepBatches`) and the RNG states are restored,
  the resumed run's weights equal an uninterrupted run's on CPU;
- divergence handling: a non-finite loss, or an unhealthy eval (e.g. GAN collapse) for
  `patience` consecutive checks, restores the last good checkpoint with every learning rate
  scaled down and retries, up to `max_retries`, then raises TrainingError naming the symptom
  and the knobs;
- model selection on a validation metric (best weights kept, never test);
- metric logging (averaged every `log_every` steps) and a progress bar (tqdm, or the run's console);
- an accuracy-against-compute record: every eval entry of the history carries the training
  wall time so far and the samples processed so far. An optional `observer` (the benchmark's
  test-accuracy probe) runs after each eval; its metrics join the history but never the
  selection, and its time is not counted as training time.
- data parallelism (with a distributed `Runtime`): only rank 0 writes checkpoints and logs;
  every rank resumes from rank 0's checkpoint (broadcast, so no shared disk is needed);
  step losses are averaged over ranks and eval metrics are rank 0's, broadcast — so every
  rank takes the same divergence, selection and retry decisions and stays in lockstep.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from gandistill import console
from gandistill.checkpoint_store import CheckpointStore
from gandistill.errors import TrainingError
from gandistill.files import atomic_write
from gandistill.runtime import Runtime, unwrap

log = logging.getLogger(__name__)

# Bumped whenever the checkpoint's structure changes: an older checkpoint is not resumed.
CHECKPOINT_FORMAT = 2

StepFn = Callable[[int], dict[str, Any]]
EvalFn = Callable[[int], dict[str, float]]
ObserverFn = Callable[[int], dict[str, float]]
HealthFn = Callable[[dict[str, float]], str | None]
LogFn = Callable[[dict[str, float], int], None]


def atomic_torch_save(obj: Any, path: Path) -> None:
    """Write to a temp file in the same folder, fsync, then rename: never a half-written file."""
    atomic_write(path, lambda handle: torch.save(obj, handle))


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0,
                  final_fraction: float = 0.0) -> LambdaLR:
    """Linear warm-up then cosine decay to `final_fraction` of the base learning rate."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


class EMA:
    """Exponential moving average of a module's parameters and buffers (Polyak averaging).

    The decay warms up as min(decay, (1 + n) / (10 + n)) after n updates (as TensorFlow's
    ExponentialMovingAverage with num_updates): without it a short run's average is mostly
    the random initialisation (0.999^1500 = 22% of it after 1,500 steps).
    """

    def __init__(self, module: nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.shadow = copy.deepcopy(unwrap(module)).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        src = unwrap(module)
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        # One foreach op over all tensors (the per-tensor Python loop was a measurable share of a GAN step).
        shadow, live = list(self.shadow.parameters()), [p.detach() for p in src.parameters()]
        if len(shadow) != len(live):
            raise ValueError("EMA: the module's parameters changed since the average was made")
        torch._foreach_lerp_(shadow, live, 1 - decay)
        shadow_buffers, live_buffers = list(self.shadow.buffers()), list(src.buffers())
        if shadow_buffers:
            torch._foreach_copy_(shadow_buffers, live_buffers)

    def state_dict(self) -> dict[str, Any]:
        """The averaged weights plus the update count (the warm-up continues from it on resume)."""
        return {"shadow": self.shadow.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.shadow.load_state_dict(state["shadow"])
        self.updates = int(state["updates"])


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }
    if torch.cuda.is_initialized():  # this process's device only: one CUDA context per rank, not one per GPU
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_initialized():
        cuda = state["cuda"]
        torch.cuda.set_rng_state(cuda[0] if isinstance(cuda, list | tuple) else cuda)  # older files: one per GPU


@dataclass
class LoopResult:
    steps: int
    best_step: int | None
    best_value: float | None
    best_state: dict[str, dict[str, Any]]  # module name -> state_dict of the selected weights
    history: list[dict[str, float]] = field(default_factory=list)
    retries: int = 0
    resumed_from: int | None = None


class TrainingLoop:
    """See the module docstring. Register modules with `track`, then call `run`."""

    def __init__(self, name: str, total_steps: int, checkpoint_dir: str | Path | None, *,
                 fingerprint: str = "", checkpoint_every: int = 500, eval_every: int = 250,
                 select: tuple[str, str] | None = None, patience: int = 1, max_retries: int = 2,
                 retry_lr_factor: float = 0.5, log_fn: LogFn | None = None, log_every: int = 50,
                 progress: bool = True, samples_per_step: int = 0, observer: ObserverFn | None = None,
                 collapse_hint: str = ", or (GAN) raise gan.fm_weight / gan.teacher_weight or lower gan.min_coverage",
                 select_from: int = 0, runtime: Runtime | None = None):
        self.name = name
        self.total_steps = total_steps
        self.checkpoints = CheckpointStore(checkpoint_dir) if checkpoint_dir else None
        self.fingerprint = fingerprint
        self.checkpoint_every = checkpoint_every
        self.eval_every = eval_every
        self.select = select
        self.select_from = select_from  # evaluations before this step are logged but never selected
        self.patience = patience
        self.max_retries = max_retries
        self.retry_lr_factor = retry_lr_factor
        self.log_fn = log_fn
        self.log_every = log_every
        self.runtime = runtime or Runtime(torch.device("cpu"))
        self.progress = progress and self.runtime.is_main
        self.samples_per_step = samples_per_step
        self.observer = observer
        self.collapse_hint = collapse_hint  # the stage's knobs, named when a collapse cannot be recovered
        self.modules: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, LambdaLR] = {}
        self.emas: dict[str, EMA] = {}
        # Loop state that checkpoints carry.
        self.step = 0
        self.best_value: float | None = None
        self.best_step: int | None = None
        self.best_state: dict[str, dict[str, Any]] = {}
        self.retries = 0
        self.lr_scale = 1.0
        self.unhealthy = 0
        self.history: list[dict[str, float]] = []
        self.train_seconds = 0.0  # wall time spent training so far (observer excluded), across resumes
        self._clock_start = 0.0

    # -- registration ---------------------------------------------------------------
    def track(self, name: str, module: nn.Module, optimizer: torch.optim.Optimizer | None = None,
              scheduler: LambdaLR | None = None, ema: EMA | None = None) -> None:
        self.modules[name] = module
        if optimizer is not None:
            self.optimizers[name] = optimizer
        if scheduler is not None:
            self.schedulers[name] = scheduler
        if ema is not None:
            self.emas[name] = ema

    # -- checkpoints ----------------------------------------------------------------
    def _snapshot(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "fingerprint": self.fingerprint,
            "step": self.step,
            "modules": {k: unwrap(m).state_dict() for k, m in self.modules.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "emas": {k: e.state_dict() for k, e in self.emas.items()},
            "rng": _rng_state(),
            "loop": {"best_value": self.best_value, "best_step": self.best_step, "retries": self.retries,
                     "lr_scale": self.lr_scale, "unhealthy": self.unhealthy, "train_seconds": self._elapsed()},
            "best_state": self.best_state,
            "history": self.history,
        }

    def _restore(self, snap: dict[str, Any]) -> None:
        for k, m in self.modules.items():
            unwrap(m).load_state_dict(snap["modules"][k])
        for k, o in self.optimizers.items():
            o.load_state_dict(snap["optimizers"][k])
        for k, s in self.schedulers.items():
            s.load_state_dict(snap["schedulers"][k])
        for k, e in self.emas.items():
            e.load_state_dict(snap["emas"][k])
        _set_rng_state(snap["rng"])
        loop = snap["loop"]
        self.step = snap["step"]
        self.best_value, self.best_step = loop["best_value"], loop["best_step"]
        self.retries, self.lr_scale, self.unhealthy = loop["retries"], loop["lr_scale"], loop["unhealthy"]
        self.train_seconds, self._clock_start = loop.get("train_seconds", 0.0), time.perf_counter()
        self.best_state = snap["best_state"]
        self.history = list(snap["history"])

    def save_checkpoint(self, snapshot: dict[str, Any] | None = None) -> None:
        if self.checkpoints is not None and self.runtime.is_main:
            self.checkpoints.save(snapshot if snapshot is not None else self._snapshot())

    def _read_checkpoint(self) -> dict[str, Any] | None:
        path = self.checkpoints.fetch() if self.checkpoints is not None else None
        if path is None:
            return None
        try:
            snap = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a checkpoint we cannot read is not worth dying for: start over
            log.warning("[%s] ignoring unreadable checkpoint %s (%s); starting fresh", self.name, path, exc)
            return None
        if snap.get("format") != CHECKPOINT_FORMAT:
            log.warning("[%s] checkpoint %s was written by another gandistill version (format %s, this one reads "
                        "%s); starting fresh", self.name, path, snap.get("format", 1), CHECKPOINT_FORMAT)
            return None
        if snap.get("fingerprint") != self.fingerprint:
            log.warning("[%s] checkpoint %s belongs to different params/inputs; starting fresh", self.name, path)
            return None
        return snap

    def _try_resume(self) -> int | None:
        # Rank 0 reads; every rank restores the very same state.
        snap = self.runtime.broadcast(self._read_checkpoint() if self.runtime.is_main else None)
        if snap is None:
            return None
        self._restore(snap)
        log.info("[%s] resumed from step %d (%s)", self.name, self.step, self.checkpoints)
        return self.step

    # -- divergence -------------------------------------------------------------------
    def _scale_learning_rates(self, factor: float) -> None:
        for name, opt in self.optimizers.items():
            scheduler = self.schedulers.get(name)
            if scheduler is not None:
                scheduler.base_lrs = [lr * factor for lr in scheduler.base_lrs]
            for group in opt.param_groups:
                group["lr"] *= factor
                if "initial_lr" in group:
                    group["initial_lr"] *= factor

    def _recover(self, symptom: str, good: dict[str, Any]) -> None:
        if self.retries >= self.max_retries:
            raise TrainingError(
                f"[{self.name}] {symptom} at step {self.step}; gave up after {self.retries} retries with "
                f"learning rates scaled to {self.lr_scale:g}×. Knobs: lower the stage's learning rate(s), "
                f"raise runtime.max_retries, lower runtime.retry_lr_factor"
                + (self.collapse_hint if "coverage" in symptom or "collapse" in symptom else "")
            )
        retries, scale = self.retries + 1, self.lr_scale * self.retry_lr_factor
        elapsed = self._elapsed()  # time spent on the failed attempt is still time spent
        self._restore(good)
        self.train_seconds, self._clock_start = elapsed, time.perf_counter()
        self.retries, self.lr_scale, self.unhealthy = retries, scale, 0
        self._scale_learning_rates(scale / good["loop"]["lr_scale"])
        log.warning("[%s] %s — restored step %d, retry %d/%d with learning rates × %g",
                    self.name, symptom, self.step, retries, self.max_retries, scale)

    # -- main -------------------------------------------------------------------------
    def _elapsed(self) -> float:
        return self.train_seconds + (time.perf_counter() - self._clock_start if self._clock_start else 0.0)

    def run(self, step_fn: StepFn, eval_fn: EvalFn | None = None, health_fn: HealthFn | None = None) -> LoopResult:
        # While it trains, this run owns its checkpoint location (checkpoint_store.owned): another
        # run with the same fingerprint waits for it, or trains apart, and never reads a live checkpoint.
        owning = (self.checkpoints.owned(self.name, self.runtime.checkpoint_wait_s)
                  if self.checkpoints is not None and self.runtime.is_main else contextlib.nullcontext())
        with owning:
            return self._train(step_fn, eval_fn, health_fn)

    def _train(self, step_fn: StepFn, eval_fn: EvalFn | None, health_fn: HealthFn | None) -> LoopResult:
        self._clock_start = time.perf_counter()
        resumed = self._try_resume()
        good = copy.deepcopy(self._snapshot())  # the state to return to on divergence (a copy, not views)
        if resumed is None:
            self.save_checkpoint()
        bar = console.progress_bar(self.total_steps, self.step, self.name, self.progress)
        window: dict[str, list[float]] = {}
        while self.step < self.total_steps:
            for m in self.modules.values():
                m.train()
            raw = step_fn(self.step)
            values = dict(zip(raw, self.runtime.mean_over_ranks([float(v) for v in raw.values()]), strict=True))
            bad = [k for k, v in values.items() if not math.isfinite(v)]
            if bad:
                bar.reset(total=self.total_steps)
                self._recover(f"non-finite loss ({', '.join(bad)})", good)
                bar.update(self.step)
                window.clear()
                continue
            for k, v in values.items():
                window.setdefault(k, []).append(v)
            self.step += 1
            bar.update(1)
            if self.step % self.log_every == 0 or self.step == self.total_steps:
                means = {k: sum(v) / len(v) for k, v in window.items()}
                means["lr"] = next(iter(self.optimizers.values())).param_groups[0]["lr"] if self.optimizers else 0.0
                bar.set_postfix({k: f"{v:.4g}" for k, v in means.items()}, refresh=False)
                self._log(means)
                window.clear()
            at_end = self.step == self.total_steps
            due_eval = eval_fn is not None and (self.step % self.eval_every == 0 or at_end)
            if due_eval and not self._evaluate(eval_fn, health_fn, good):  # type: ignore[arg-type]
                bar.reset(total=self.total_steps)
                bar.update(self.step)
                continue
            # Only a healthy state becomes the "last good" checkpoint that divergence returns to.
            if (self.step % self.checkpoint_every == 0 or at_end) and self.unhealthy == 0:
                good = copy.deepcopy(self._snapshot())
                self.save_checkpoint(good)
        bar.close()
        if not self.best_state:  # no selection metric: the final weights are the result
            self.best_state = {k: copy.deepcopy(unwrap(m).state_dict()) for k, m in self.modules.items()}
            for k, e in self.emas.items():
                self.best_state[f"{k}_ema"] = copy.deepcopy(e.shadow.state_dict())
        return LoopResult(self.step, self.best_step, self.best_value, self.best_state, self.history,
                          self.retries, resumed)

    def _evaluate(self, eval_fn: EvalFn, health_fn: HealthFn | None, good: dict[str, Any]) -> bool:
        for m in self.modules.values():
            m.eval()
        with torch.no_grad():
            metrics = self.runtime.broadcast(eval_fn(self.step))  # rank 0's numbers decide for all
        entry = {"step": float(self.step), "wall_s": self._elapsed(),
                 "samples": float(self.step * self.samples_per_step), **metrics}
        self.history.append(entry)
        self._log(metrics)
        symptom = health_fn(metrics) if health_fn else None
        if symptom:
            self.unhealthy += 1
            log.warning("[%s] step %d: %s (%d/%d)", self.name, self.step, symptom, self.unhealthy, self.patience)
            if self.unhealthy >= self.patience:
                self._recover(symptom, good)
                return False
            return True
        self.unhealthy = 0
        if self.select is not None and self.step >= self.select_from:
            key, mode = self.select
            value = metrics[key]
            better = self.best_value is None or (value > self.best_value if mode == "max" else value < self.best_value)
            if better:
                self.best_value, self.best_step = value, self.step
                self.best_state = {k: copy.deepcopy(unwrap(m).state_dict()) for k, m in self.modules.items()}
                for k, e in self.emas.items():
                    self.best_state[f"{k}_ema"] = copy.deepcopy(e.shadow.state_dict())
        self._observe(entry)
        return True

    def _observe(self, entry: dict[str, float]) -> None:
        """Run the observer (e.g. the benchmark's test-accuracy probe) off the clock: its
        numbers join the history entry, never the selection."""
        if self.observer is None:
            return
        started = time.perf_counter()
        with torch.no_grad():
            entry.update(self.observer(self.step))
        self._clock_start += time.perf_counter() - started  # not training time

    def _log(self, metrics: dict[str, Any]) -> None:
        """Scalars go to log_fn; an eval's per-class lists (distill's agreement per class) stay in the history."""
        if self.log_fn is not None and self.runtime.is_main:
            self.log_fn({k: v for k, v in metrics.items() if isinstance(v, int | float)}, self.step)
