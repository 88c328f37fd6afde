"""The training harness: what train_teacher, train_gan, train_translator and distill share
around their own math, written once.

A training stage's `run` reads as:

    training = Training.start("train_gan", "gan", params, tracker)   # params view, seed, runtime
    ... its own data, models, optimisers, step_fn / eval_fn ...
    training.log_params()                                            # once 'auto' values are resolved
    loop = training.loop(steps, *inputs, eval_every=..., select=...)  # checkpoints under its fingerprint
    loop.track(...); outcome = loop.run(step_fn, eval_fn)
    if not training.is_main: return training.follower(outcome)       # rank 0 alone writes
    ... its own model file and result fields ...
    return training.finish(out_dir, result, final_metrics)          # result.json + wall time + metrics

As Lightning's Trainer owns devices, checkpoints and logging while a task states its step, the
harness owns the params view (a stage sees only the keys it declares: its cache key), the seed,
the Runtime (device, threads, precision, ranks), the checkpoint fingerprint and location, the
loop's runtime knobs (checkpoint cadence, retries, progress) and where metrics and results go.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gandistill import stage_params
from gandistill.checkpoint_store import checkpoint_dir
from gandistill.config import Params
from gandistill.fingerprints import fingerprint, params_sections
from gandistill.loop import LoopResult, TrainingLoop
from gandistill.results import write_result
from gandistill.runtime import Runtime, seed_everything
from gandistill.tracking import NullTracker, Tracker


@dataclass
class Training:
    """One training stage's run: `stage` trains by the params section `section`."""

    stage: str
    section: str
    params: Params
    runtime: Runtime
    tracker: Tracker
    started: float

    @classmethod
    def start(cls, stage: str, section: str, params: Params, tracker: Tracker | None = None) -> Training:
        """The stage's view of `params` (only the keys it reads), the run's seed set before anything
        draws, and its Runtime."""
        params = stage_params.view(params, stage)
        started = time.perf_counter()
        seed_everything(params.seed)
        return cls(stage, section, params, Runtime.from_params(params.runtime), tracker or NullTracker(), started)

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    @property
    def is_main(self) -> bool:
        return self.runtime.is_main

    def log_params(self) -> None:
        """The stage's section and the seed on its MLflow run (after 'auto' values are resolved)."""
        section = getattr(self.params, self.section)
        self.tracker.log_params({f"{self.section}.{k}": v for k, v in section.model_dump().items()}
                                | {"seed": self.params.seed})

    def loop(self, total_steps: int, *inputs: Any, name: str | None = None, **options: Any) -> TrainingLoop:
        """The stage's TrainingLoop. Its checkpoints belong to the fingerprint of the stage's section,
        the data section, the seed and `inputs` (the data version and counts, the digests of the
        models it reads), so only the run that would have produced a checkpoint resumes from it.
        `options`: the stage's own loop settings (eval_every, select, patience, observer, ...)."""
        fp = fingerprint(self.stage, params_sections(self.params, self.section, "data"), *inputs)
        knobs = self.params.runtime
        return TrainingLoop(name or self.stage, total_steps, checkpoint_dir(self.stage, fp), fingerprint=fp,
                            checkpoint_every=knobs.checkpoint_every, max_retries=knobs.max_retries,
                            retry_lr_factor=knobs.retry_lr_factor, log_fn=self.tracker.log_metrics,
                            progress=knobs.progress, runtime=self.runtime, **options)

    def follower(self, outcome: LoopResult | None = None) -> dict[str, Any]:
        """What a rank other than 0 returns: it trained its share and stops there — rank 0 alone
        writes the model, result.json and the final metrics."""
        return {"rank": self.runtime.rank, "world_size": self.runtime.world_size,
                "steps": outcome.steps if outcome is not None else None, "writes": False}

    def finish(self, out_dir: str | Path, result: dict[str, Any], metrics: dict[str, float]) -> dict[str, Any]:
        """`result` with the stage's wall time, written as `out_dir`/result.json; `metrics` (its
        final numbers) logged on the stage's MLflow run and kept in the result as `final_metrics`
        (its kfp task shows the same numbers: gandistill.evaluation.training_page)."""
        result["wall_s"] = time.perf_counter() - self.started
        result["final_metrics"] = dict(metrics)
        write_result(out_dir, result)
        self.tracker.log_metrics(metrics)
        return result
