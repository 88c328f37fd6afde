"""How far each training stage is from what this CPU can compute (issue #23).

    python -m bench.limits [--steps 300] [--threads 1 2] [--stages teacher gan distill]
                           [--set key=value …]

For each training stage it runs the stage itself (`gandistill.launch.run`, the code `make run`
runs) for a short budget at the defaults and watches its training loop from outside:

- the step's time: median wall and CPU time per step after warm-up, at 1 and at 2 threads
  (2 vs 1: the steps/s ratio the issue asks ≥ 1.7×);
- the step's FLOPs and its *kernel floor* (`bench.kernels`): every matmul / convolution of one
  real step, forward and backward, replayed alone at the fastest layout and number format this
  CPU runs it in (FP32 and BF16 columns) — the lower bound of the step on this machine;
- where the rest of a step goes, from torch.profiler at 1 thread: the compute kernels as they
  ran, other ATen ops (element-wise, pooling, losses), data movement, random draws, the
  optimiser, and the Python / framework time between ops (wall minus all ATen time);
- per evaluation and per checkpoint: their cost, and the stage's set-up (data, models);
- the stage at its default budget, projected from those parts, beside the stage's measured
  time in a real `make run` (bench/results/make-run.json) and the lower bound = default steps ×
  the kernel floor on 2 cores; then kfp.local + MLflow's share of that run.

Writes bench/results/limits.md and limits.json. Nothing here is a test: it measures. Run it
alone (`flock /work/cpu.lock`); the load average is recorded beside the numbers, and the
CPU-time columns are what the load barely moves.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from bench import kernels
from bench.quality import git_commit, machine
from gandistill import launch
from gandistill.config import Params, load_params
from gandistill.loop import TrainingLoop
from gandistill.tracking import NullTracker

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
STAGES = {"teacher": "train_teacher", "gan": "train_gan", "distill": "distill"}
MAKE_RUN_KEYS = {"teacher": "train_teacher", "gan": "train_gan", "distill": "distill_gan"}
WARMUP = 20
PROFILED = 30


class Probe:
    """Watches one TrainingLoop.run: times each step / eval / checkpoint, records the compute
    kernels of one step, profiles a window of steps."""

    def __init__(self, profile_steps: bool, record_kernels: bool = True) -> None:
        self.profile_steps, self.record_kernels = profile_steps, record_kernels
        self.calls = 0
        self.step_wall: list[float] = []
        self.step_cpu: list[float] = []
        self.eval_wall: list[float] = []
        self.checkpoint_wall: list[float] = []
        self.loop_wall = 0.0
        self.total_steps = 0
        self.eval_every = 0
        self.checkpoint_every = 0
        self.kernels: list[kernels.Kernel] = []
        self.flops = 0
        self.profile: dict[str, float] = {}
        self._profiler: Any = None
        self._profiled_wall = 0.0

    # Indices of the step calls with a job: recorded once, profiled over a window, timed otherwise.
    @property
    def record_at(self) -> int:
        return WARMUP // 2

    @property
    def profile_window(self) -> range:
        return range(WARMUP, WARMUP + PROFILED) if self.profile_steps else range(0)

    def wrap_step(self, step_fn: Callable[[int], dict[str, Any]]) -> Callable[[int], dict[str, Any]]:
        def step(i: int) -> dict[str, Any]:
            k = self.calls
            self.calls += 1
            if k == self.record_at and self.record_kernels:
                out: list[dict[str, Any]] = []
                self.kernels, self.flops = kernels.record(lambda: out.append(step_fn(i)))
                return out[0]
            if k in self.profile_window:
                if k == self.profile_window.start:
                    self._profiler = profile(activities=[ProfilerActivity.CPU])
                    self._profiler.start()
                started = time.perf_counter()
                result = step_fn(i)
                self._profiled_wall += time.perf_counter() - started
                if k == self.profile_window.stop - 1:
                    self._profiler.stop()
                    self.profile = summarise_profile(self._profiler, self._profiled_wall, len(self.profile_window))
                return result
            wall, cpu = time.perf_counter(), time.thread_time()
            result = step_fn(i)
            if k >= WARMUP:
                self.step_wall.append(time.perf_counter() - wall)
                self.step_cpu.append(time.thread_time() - cpu)
            return result

        return step

    def wrap_eval(self, eval_fn: Callable[[int], dict[str, float]] | None) -> Callable[[int], dict[str, float]] | None:
        if eval_fn is None:
            return None

        def evaluate(step: int) -> dict[str, float]:
            started = time.perf_counter()
            metrics = eval_fn(step)
            self.eval_wall.append(time.perf_counter() - started)
            return metrics

        return evaluate


@contextlib.contextmanager
def probing(probe: Probe) -> Iterator[None]:
    """TrainingLoop.run and save_checkpoint, watched by `probe` (restored on exit)."""
    run, save = TrainingLoop.run, TrainingLoop.save_checkpoint

    def watched_run(loop: TrainingLoop, step_fn: Any, eval_fn: Any = None, health_fn: Any = None) -> Any:
        probe.total_steps, probe.eval_every, probe.checkpoint_every = (loop.total_steps, loop.eval_every,
                                                                       loop.checkpoint_every)
        started = time.perf_counter()
        try:
            return run(loop, probe.wrap_step(step_fn), probe.wrap_eval(eval_fn), health_fn)
        finally:
            probe.loop_wall = time.perf_counter() - started

    def watched_save(loop: TrainingLoop, snapshot: Any = None) -> None:
        started = time.perf_counter()
        save(loop, snapshot)
        probe.checkpoint_wall.append(time.perf_counter() - started)

    TrainingLoop.run, TrainingLoop.save_checkpoint = watched_run, watched_save  # type: ignore[method-assign]
    try:
        yield
    finally:
        TrainingLoop.run, TrainingLoop.save_checkpoint = run, save  # type: ignore[method-assign]


COMPUTE = ("conv", "aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")
MOVEMENT = ("copy_", "aten::cat", "aten::stack", "aten::index", "aten::gather", "aten::grid_sampler",
            "aten::affine_grid", "aten::clone", "aten::contiguous", "aten::_to_copy", "aten::to", "aten::empty",
            "aten::zero_", "aten::fill_", "aten::scatter", "aten::masked", "aten::where")
RANDOM = ("aten::rand", "aten::randn", "aten::randint", "aten::randperm", "aten::normal_", "aten::uniform_",
          "aten::random_", "aten::bernoulli")


def _category(name: str, optimiser: bool) -> str:
    if optimiser:
        return "optimiser (step, zero_grad)"
    if any(k in name for k in COMPUTE) and "backward" not in name.replace("convolution_backward", ""):
        return "compute kernels (matmul, conv) as run"
    if name.startswith("autograd::") or name.endswith("Backward0") or name.endswith("Backward1"):
        return "autograd engine"
    if name.startswith(MOVEMENT):
        return "data movement (copy, cat, index, grid_sample)"
    if name.startswith(RANDOM):
        return "random draws"
    return "other ATen ops (element-wise, pooling, losses)"


def summarise_profile(prof: Any, wall_s: float, steps: int) -> dict[str, Any]:
    """Milliseconds per step by category (Python/framework = wall − every event's self time),
    and the operators with the most self time."""
    per_category: dict[str, float] = {}
    per_op: dict[str, float] = {}
    total = 0.0
    for event in prof.events():
        if event.device_type.name != "CPU":
            continue
        parent, optimiser = event.cpu_parent, event.name.startswith("Optimizer.")
        while parent is not None and not optimiser:
            optimiser, parent = parent.name.startswith("Optimizer."), parent.cpu_parent
        self_us = event.self_cpu_time_total
        category = _category(event.name, optimiser)
        per_category[category] = per_category.get(category, 0.0) + self_us
        per_op[event.name] = per_op.get(event.name, 0.0) + self_us
        total += self_us
    out: dict[str, Any] = {k: v / 1000 / steps for k, v in per_category.items()}
    out["Python and framework between ops"] = max(0.0, wall_s * 1000 / steps - total / 1000 / steps)
    out["wall (profiled)"] = wall_s * 1000 / steps
    top = sorted(per_op.items(), key=lambda kv: -kv[1])[:15]
    return {"categories": out, "top_ops": {name: us / 1000 / steps for name, us in top}}


def stage_paths(stage: str, dirs: dict[str, Path]) -> dict[str, str]:
    paths = {"train_teacher": {"data_dir": dirs["data"], "out_dir": dirs["teacher"]},
             "train_gan": {"data_dir": dirs["data"], "teacher_dir": dirs["teacher"], "out_dir": dirs["generator"]},
             "distill": {"data_dir": dirs["data"], "teacher_dir": dirs["teacher"], "generator_dir": dirs["generator"],
                         "out_dir": dirs["student"]}}[stage]
    return {k: str(v) for k, v in paths.items()}


def timings(probe: Probe, stage_wall: float) -> dict[str, Any]:
    return {
        "steps_run": probe.calls, "stage_wall_s": stage_wall, "loop_wall_s": probe.loop_wall,
        "setup_s": stage_wall - probe.loop_wall,
        "step_wall_ms": 1000 * statistics.median(probe.step_wall),
        "step_cpu_ms": 1000 * statistics.median(probe.step_cpu),
        "eval_s": statistics.median(probe.eval_wall) if probe.eval_wall else 0.0,
        "checkpoint_s": statistics.median(probe.checkpoint_wall) if probe.checkpoint_wall else 0.0,
        "eval_every": probe.eval_every, "checkpoint_every": probe.checkpoint_every,
    }


def run_stage(name: str, params: Params, dirs: dict[str, Path], threads: int, profile_steps: bool,
              nproc: int = 1, floor: bool = True) -> dict[str, Any]:
    """One short run of a stage under a probe (`nproc` > 1: torchrun workers, `threads` each;
    rank 0's probe reports); returns its measurements."""
    torch.set_num_threads(threads)
    params = params.model_copy(deep=True)
    params.runtime.threads = threads
    stage = STAGES[name]
    os.environ["GANDISTILL_CHECKPOINT_ROOT"] = str(dirs["work"] / f"ckpt-{name}-{threads}-{time.monotonic_ns()}")
    if nproc > 1:
        return {"threads": threads, "processes": nproc} | _run_workers(stage, params, dirs, nproc)
    probe = Probe(profile_steps, record_kernels=floor)
    started = time.perf_counter()
    with probing(probe):
        launch.run(stage, params, stage_paths(stage, dirs), NullTracker())
    measured: dict[str, Any] = {"threads": threads, "processes": 1} | timings(probe, time.perf_counter() - started)
    if probe.kernels:
        kernels.measure(probe.kernels)
        measured |= {
            "flops_per_step": probe.flops,
            "floor_fp32_ms": 1000 * kernels.floor_seconds(probe.kernels, kernels.FP32),
            "floor_bf16_ms": 1000 * kernels.floor_seconds(probe.kernels, kernels.BF16),
            "floor_ms": 1000 * kernels.floor_seconds(probe.kernels, tuple(kernels.VARIANTS)),
            "floor_as_recorded_ms": 1000 * kernels.floor_seconds(probe.kernels, ("fp32",)),
            "kernels": [{"kernel": k.describe(), "calls": k.calls, "flops": k.flops,
                         **{f"{v}_us": 1e6 * s for v, s in k.best_s.items()}} for k in probe.kernels],
        }
    if probe.profile:
        measured["profile_ms"] = probe.profile["categories"]
        measured["top_ops_ms"] = probe.profile["top_ops"]
    return measured


def _run_workers(stage: str, params: Params, dirs: dict[str, Path], nproc: int) -> dict[str, Any]:
    """The stage in `nproc` torchrun workers, each watched by a probe (`--worker`)."""
    with tempfile.TemporaryDirectory(prefix="gandistill-limits-spec-") as tmp:
        folder = Path(tmp)
        spec = launch.write_spec(folder, stage, params, stage_paths(stage, dirs), "")
        argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
                f"--nproc_per_node={nproc}", "--max-restarts=0", "-m", "bench.limits", "--worker", str(spec),
                str(folder / "probe.json")]
        started = time.perf_counter()
        code, tail = launch.stream(argv)
        if code:
            raise SystemExit(f"bench.limits: the {stage} workers failed:\n" + "\n".join(tail[-20:]))
        measured = json.loads((folder / "probe.json").read_text())
        return measured | {"stage_wall_s": time.perf_counter() - started,
                           "setup_s": time.perf_counter() - started - measured["loop_wall_s"]}


def worker(spec: str, out: str) -> int:
    """A torchrun worker of `_run_workers`: the stage as `gandistill.launch` runs it, watched."""
    probe = Probe(profile_steps=False)
    started = time.perf_counter()
    with probing(probe):
        code = launch._main([spec])
    if int(os.environ.get("RANK", "0")) == 0 and not code:
        Path(out).write_text(json.dumps(timings(probe, time.perf_counter() - started)))
    return code


def stage_budget(name: str, params: Params, n_train: int) -> dict[str, int]:
    """Steps, evaluations and checkpoints of the stage at `params` (what a real run does)."""
    if name == "teacher":
        per_epoch = max(1, n_train // params.teacher.batch_size)
        steps = max(1, math.ceil(params.teacher.epochs * per_epoch))
        eval_every = max(1, per_epoch // 2)
    elif name == "gan":
        steps, eval_every = params.gan.steps, params.gan.eval_every
    else:
        steps, eval_every = params.distill.steps, params.distill.eval_every
    every = params.runtime.checkpoint_every
    return {"steps": steps, "evals": steps // eval_every + (steps % eval_every > 0),
            "checkpoints": 1 + steps // every + (steps % every > 0)}


def short_params(params: Params, name: str, steps: int, n_train: int) -> Params:
    """The defaults with the stage cut to `steps` steps (its evaluations and checkpoints as usual)."""
    params = params.model_copy(deep=True)
    if name == "teacher":
        params.teacher.epochs = steps / max(1, n_train // params.teacher.batch_size)
    elif name == "gan":
        params.gan.steps = steps
    else:
        params.distill.steps = steps
    params.runtime.progress = False
    return params


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="steps per short stage run (≥ 60)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--stages", nargs="+", choices=list(STAGES), default=list(STAGES))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--results", default="limits", help="file stem under bench/results")
    parser.add_argument("--nproc", type=int, default=2, help="also run each stage in this many torchrun "
                        "processes of 1 thread (0: not)")
    parser.add_argument("--worker", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        raise SystemExit(worker(*args.worker))
    params = load_params(ROOT / "params.yaml", args.overrides)
    load_before = os.getloadavg()
    from gandistill.stages import prepare_data

    report: dict[str, Any] = {"command": "python -m bench.limits " + " ".join(sys.argv[1:] if argv is None else argv),
                              "machine": machine(), "git_commit": git_commit(), "overrides": args.overrides,
                              "updated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "stages": {}}
    peak: dict[str, dict[str, float]] = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        for dtype in (torch.float32, torch.bfloat16):
            wall, cpu = kernels.gemm_rate(dtype)
            peak[f"{str(dtype).removeprefix('torch.')}@{threads}"] = {"gflops_wall": wall, "gflops_cpu": cpu}
    report["peak_gemm_1024"] = peak
    with tempfile.TemporaryDirectory(prefix="gandistill-limits-") as tmp:
        work = Path(tmp)
        dirs = {k: work / k for k in ("data", "teacher", "generator", "student")} | {"work": work}
        prepared = prepare_data.run(params, dirs["data"])
        n_train = int(prepared.get("counts", {}).get("train", 54000)) if isinstance(prepared, dict) else 54000
        for name in args.stages:
            if name != "teacher" and not (dirs["teacher"] / "model.pt").is_file():
                run_stage("teacher", short_params(params, "teacher", 60, n_train), dirs, 1, False, floor=False)
            if name == "distill" and not (dirs["generator"] / "model.pt").is_file():
                run_stage("gan", short_params(params, "gan", 60, n_train), dirs, 1, False, floor=False)
            runs = {}
            for threads in args.threads:
                runs[str(threads)] = run_stage(name, short_params(params, name, args.steps, n_train), dirs, threads,
                                               profile_steps=threads == 1)
                _progress(name, str(threads), runs[str(threads)])
            if args.nproc > 1:
                key = f"{args.nproc}x1"
                runs[key] = run_stage(name, short_params(params, name, args.steps, n_train), dirs, 1, False,
                                      args.nproc)
                _progress(name, key, runs[key])
            report["stages"][name] = {"budget": stage_budget(name, params, n_train), "runs": runs}
    report["load_average_before"], report["load_average_after"] = load_before, os.getloadavg()
    make_run = RESULTS / "make-run.json"
    report["make_run"] = json.loads(make_run.read_text()) if make_run.is_file() else {}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.results}.json").write_text(json.dumps(report, indent=2, default=str))
    (RESULTS / f"{args.results}.md").write_text(markdown(report))
    print((RESULTS / f"{args.results}.md").read_text())


def _progress(name: str, key: str, run: dict[str, Any]) -> None:
    brief = {k: round(v, 3) if isinstance(v, float) else v for k, v in run.items()
             if k not in ("kernels", "profile_ms", "top_ops_ms")}
    print(f"[limits] {name} @ {key}: {json.dumps(brief)}", file=sys.stderr, flush=True)


def projected_stage_s(run: dict[str, Any], budget: dict[str, int]) -> float:
    return (budget["steps"] * run["step_wall_ms"] / 1000 + budget["evals"] * run["eval_s"]
            + budget["checkpoints"] * run["checkpoint_s"] + run["setup_s"])


def markdown(report: dict[str, Any]) -> str:
    lb, la = report["load_average_before"], report["load_average_after"]
    peak = report["peak_gemm_1024"]
    make_run = report.get("make_run", {})
    stage_wall = make_run.get("stage_wall_s", {})
    lines = [
        "# Each training stage against what this CPU can compute", "",
        f"Command: `{report['command']}` — commit {report['git_commit']} — machine: {report['machine']} — "
        f"updated {report['updated']}", "",
        f"Load average (1/5/15 min) before {lb[0]:.1f}/{lb[1]:.1f}/{lb[2]:.1f}, after {la[0]:.1f}/{la[1]:.1f}/"
        f"{la[2]:.1f} on 2 cores. CPU-time columns (the calling thread's, at 1 thread) are the work itself and "
        "barely move with the load; wall-clock columns at 2 threads are only meaningful on a quiet machine.", "",
        "## The machine: a large matmul (1024³), GFLOP/s", "",
        "| format | 1 thread (CPU time) | 1 thread (wall) | 2 threads (wall) |", "|---|---|---|---|"]
    for dtype in ("float32", "bfloat16"):
        one, two = peak.get(f"{dtype}@1", {}), peak.get(f"{dtype}@2", {})
        nan = float("nan")
        lines.append(f"| {dtype} | {one.get('gflops_cpu', nan):.0f} | {one.get('gflops_wall', nan):.0f} | "
                     f"{two.get('gflops_wall', nan):.0f} |")
    lines += ["", "## Per step and per stage", "",
              "Kernel floor: every matmul / convolution of one real step (forward and backward), replayed alone "
              "at its fastest layout (as run, channels_last), algorithm (oneDNN, im2col + GEMM) and format; "
              "1 core, CPU time. The 2-core lower bound of "
              "a stage is default steps × floor / 2 (perfect parallelism).", "",
              "| stage | FLOPs/step | floor FP32 ms | floor BF16 ms | kernel GFLOP/s at the floor | step ms, 1 thread "
              "(CPU) | step ms, 1 thread | step ms, 2 threads | step ms, 2 processes × 1 thread | 2 threads vs 1 "
              "(steps/s) | 2 processes vs 1 | step / floor (1 core, CPU time) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    nan = float("nan")
    for name, stage in report["stages"].items():
        runs = stage["runs"]
        one = runs.get("1", {})
        if "floor_ms" not in one:
            continue
        two = runs.get("2", {}).get("step_wall_ms", nan)
        procs = next((r["step_wall_ms"] for k, r in runs.items() if "x" in k), nan)
        lines.append(
            f"| {name} | {one['flops_per_step'] / 1e6:,.0f} M | {one['floor_fp32_ms']:.2f} | "
            f"{one['floor_bf16_ms']:.2f} | {one['flops_per_step'] / one['floor_ms'] / 1e6:.1f} | "
            f"{one['step_cpu_ms']:.2f} | {one['step_wall_ms']:.2f} | "
            f"{two:.2f} | {procs:.2f} | {one['step_wall_ms'] / two:.2f}× | {one['step_wall_ms'] / procs:.2f}× | "
            f"{one['step_cpu_ms'] / one['floor_ms']:.1f}× |")
    lines += ["", "Stage at its default budget: the lower bound (steps × floor / 2 cores), the stage projected "
              "from this run's parts (steps × step at 2 threads + evaluations + checkpoints + set-up), and the "
              "stage's time in the committed `make run` (bench/results/make-run.json, commit "
              f"{make_run.get('git_commit', '?')[:7]}).", "",
              "| stage | steps | evals | checkpoints | lower bound s | projected s | of which evals s | "
              "checkpoints s | set-up s | make run s | make run / bound |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, stage in report["stages"].items():
        one, budget = stage["runs"].get("1", {}), stage["budget"]
        if "floor_ms" not in one:
            continue
        run = min((r for r in stage["runs"].values()), key=lambda r: r["step_wall_ms"])  # the fastest setting
        bound = budget["steps"] * one["floor_ms"] / 1000 / 2
        measured = stage_wall.get(MAKE_RUN_KEYS[name])
        lines.append(
            f"| {name} | {budget['steps']:,} | {budget['evals']} | {budget['checkpoints']} | {bound:.1f} | "
            f"{projected_stage_s(run, budget):.1f} | {budget['evals'] * run['eval_s']:.1f} | "
            f"{budget['checkpoints'] * run['checkpoint_s']:.1f} | {run['setup_s']:.1f} | "
            f"{measured if measured is not None else '—'} | "
            f"{f'{measured / bound:.1f}×' if measured else '—'} |")
    lines += ["", "## Where a step's time goes (torch.profiler, 1 thread, ms per step)", ""]
    names = [n for n, s in report["stages"].items() if "profile_ms" in s["runs"].get("1", {})]
    if names:
        categories = sorted({c for n in names for c in report["stages"][n]["runs"]["1"]["profile_ms"]},
                            key=lambda c: (c.startswith("wall"), c))
        lines += ["| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        lines.append("| kernel floor (best layout/format) | " + " | ".join(
            f"{report['stages'][n]['runs']['1']['floor_ms']:.2f}" for n in names) + " |")
        for category in categories:
            lines.append(f"| {category} | " + " | ".join(
                f"{report['stages'][n]['runs']['1']['profile_ms'].get(category, 0.0):.2f}" for n in names) + " |")
    for n in names:
        top = report["stages"][n]["runs"]["1"].get("top_ops_ms", {})
        if top:
            lines += ["", f"Operators with the most self time in a {n} step (ms per step): "
                      + ", ".join(f"{op} {ms:.2f}" for op, ms in top.items())]
    lines += ["", "## The slowest kernels against their floor (1 thread, µs per call)", ""]
    for name, stage in report["stages"].items():
        one = stage["runs"].get("1", {})
        if "kernels" not in one:
            continue
        lines += [f"### {name}", "", "| kernel | calls/step | MFLOP | " + " | ".join(kernels.VARIANTS)
                  + " | best GFLOP/s |", "|---|---|---|" + "---|" * (len(kernels.VARIANTS) + 1)]
        ranked = sorted(one["kernels"], key=lambda k: -k["calls"] * min(
            v for key, v in k.items() if key.endswith("_us")))
        for k in ranked[:12]:
            cells = [f"{k[f'{v}_us']:.0f}" if f"{v}_us" in k else "—" for v in kernels.VARIANTS]
            best = min(k[f"{v}_us"] for v in kernels.VARIANTS if f"{v}_us" in k)
            lines.append(f"| {k['kernel']} | {k['calls']} | {k['flops'] / 1e6:.1f} | " + " | ".join(cells)
                         + f" | {k['flops'] / best / 1e3:.1f} |")
        lines.append("")
    if make_run:
        total = make_run.get("total_wall_s", 0.0)
        stages_s = sum(stage_wall.values())
        lines += ["## kfp.local and MLflow", "",
                  f"The committed `make run` (commit {make_run.get('git_commit', '?')[:7]}): {total:.1f} s end to end, "
                  f"{stages_s:.1f} s inside the stages' MLflow runs, so **{total - stages_s:.1f} s "
                  f"({100 * (total - stages_s) / total:.1f} %)** outside them: kfp.local's task processes and "
                  "imports, the executor's artifact handling, the MLflow parent run and summary.", ""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
