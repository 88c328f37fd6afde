"""How each training stage's time grows with the training set and the image side (issue #23).

    python -m bench.cost_growth [--sides 28 32 64] [--fractions 0.25 0.5 1] [--steps 100]
                                [--full-grid] [--set key=value …]

For every (image side, share of MNIST's training split) it prepares the data (`data.resize`,
`data.limit_train`), runs each training stage briefly under `bench.limits`' probe (the stage's
own code, `auto` architectures as a user gets them: LeNet-5 pair and MLP cGAN up to 32 px grey,
ResNet-20 → ResNet-8 and the ResNet cGAN beyond) and projects the stage at the default budget:
steps × measured step + evaluations × measured evaluation + checkpoints + set-up. The teacher's
steps grow with the training set (epochs × set / batch); the cGAN's and the student's do not,
but their evaluations and set-up do. The cells are the training-set shares at the first side and
the other sides at the full set (a cross: each axis varied alone, 5 cells); `--full-grid` runs
every pair. Writes bench/results/cost-growth.md and .json.

A projection, not a full run per cell: one cell of the table is checked against a real `make
run` in bench/results/limits.md. Run it alone (`flock /work/cpu.lock`); the load is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.limits import ROOT, STAGES, projected_stage_s, run_stage, short_params, stage_budget
from bench.quality import git_commit, machine
from gandistill.config import load_params

RESULTS = Path(__file__).resolve().parent / "results"
MNIST_TRAIN = 54000  # MNIST's 60,000 training images less the 10 % validation split


def cell_params(side: int, fraction: float, overrides: list[str]) -> Any:
    extra = [f"data.limit_train={round(fraction * MNIST_TRAIN)}"] if fraction < 1 else []
    if side != 28:
        extra.append(f"data.resize={side}")
    return load_params(ROOT / "params.yaml", [*extra, *overrides])


def grid(sides: list[int], fractions: list[float], full: bool) -> list[tuple[int, float]]:
    """(side, training-set share) cells: every pair, or the shares at the first side and the other sides
    at the largest share (each axis varied alone)."""
    if full:
        return [(side, fraction) for side in sides for fraction in fractions]
    return [(sides[0], fraction) for fraction in fractions] + [(side, max(fractions)) for side in sides[1:]]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", type=int, nargs="+", default=[28, 32, 64])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    parser.add_argument("--steps", type=int, default=100, help="steps per short stage run (≥ 40)")
    parser.add_argument("--full-grid", action="store_true",
                        help="every (side, share) pair instead of each axis varied alone")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the run's default)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    from gandistill.stages import prepare_data

    threads = args.threads or torch.get_num_threads()
    load_before = os.getloadavg()
    cells: list[dict[str, Any]] = []
    for side, fraction in grid(args.sides, args.fractions, args.full_grid):
        params = cell_params(side, fraction, args.overrides)
        with tempfile.TemporaryDirectory(prefix="gandistill-growth-") as tmp:
            work = Path(tmp)
            dirs = {k: work / k for k in ("data", "teacher", "generator", "student")} | {"work": work}
            n_train = prepare_data.run(params, dirs["data"])["counts"]["train"]
            cell: dict[str, Any] = {"side": side, "fraction": fraction, "n_train": n_train, "stages": {}}
            for name in STAGES:
                run = run_stage(name, short_params(params, name, args.steps, n_train), dirs, threads, False,
                                floor=False)
                budget = stage_budget(name, params, n_train)
                # the step at its CPU time too: on a loaded machine the wall clock also counts others' work
                cell["stages"][name] = {"budget": budget, "run": run,
                                        "projected_s": projected_stage_s(run, budget),
                                        "projected_cpu_s": projected_stage_s(run | {"step_wall_ms": run["step_cpu_ms"]},
                                                                             budget)}
                print(f"[cost_growth] side {side}, {n_train} train images, {name}: "
                      f"{run['step_wall_ms']:.1f} ms/step, projected {cell['stages'][name]['projected_s']:.0f} s",
                      file=sys.stderr, flush=True)
            cells.append(cell)
        write(argv, threads, load_before, cells)  # after every cell: a stopped run keeps the cells it finished
    print((RESULTS / "cost-growth.md").read_text())


def write(argv: list[str] | None, threads: int, load_before: tuple[float, ...], cells: list[dict[str, Any]]) -> None:
    report = {"command": "python -m bench.cost_growth " + " ".join(sys.argv[1:] if argv is None else argv),
              "machine": machine(), "git_commit": git_commit(), "threads": threads,
              "updated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "load_average_before": load_before, "load_average_after": os.getloadavg(), "cells": cells}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cost-growth.json").write_text(json.dumps(report, indent=2, default=str))
    (RESULTS / "cost-growth.md").write_text(markdown(report))


def markdown(report: dict[str, Any]) -> str:
    lb, la = report["load_average_before"], report["load_average_after"]
    lines = ["# How each training stage's time grows", "",
             f"Command: `{report['command']}` — commit {report['git_commit']} — machine: {report['machine']}, "
             f"{report['threads']} thread(s) — updated {report['updated']}", "",
             f"Load average (1/5/15 min) before {lb[0]:.1f}/{lb[1]:.1f}/{lb[2]:.1f}, after {la[0]:.1f}/{la[1]:.1f}/"
             f"{la[2]:.1f} on 2 cores: on a busier machine every cell grows alike; read the ratios.", "",
             "Each stage at the default budget, projected from a short run of the stage's own code (steps × step "
             "+ evaluations + checkpoints + set-up), seconds, with the step at its median CPU time (the work itself; "
             "evaluations and set-up at wall time); in brackets the step's CPU / wall milliseconds. Architectures "
             "are `auto`'s: LeNet-5 → LeNet-5-half and the MLP cGAN up to 32 px (grey), ResNet-20 → ResNet-8 "
             "and the ResNet cGAN at 64 px.", "",
             "| side | train images | teacher s (CPU / wall ms per step) | GAN s (…) | distill s (…) | total s |",
             "|---|---|---|---|---|---|"]
    for cell in report["cells"]:
        parts = [cell["stages"][n] for n in STAGES]
        lines.append(f"| {cell['side']} | {cell['n_train']:,} | " + " | ".join(
            f"{p['projected_cpu_s']:.0f} ({p['run']['step_cpu_ms']:.1f} / {p['run']['step_wall_ms']:.1f})"
            for p in parts) + f" | {sum(p['projected_cpu_s'] for p in parts):.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
