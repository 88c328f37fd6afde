"""Quality benchmark: every distillation method with the same teacher and the same budget.

    python -m bench.quality --methods teacher kd gan data_free --seeds 0 1 2
    make bench-quality METHODS="gan" SEEDS="0"

Runs the library stages directly (no kfp/MLflow overhead: the pipeline adds a constant per
stage), caches each seed's dataset, teacher and GAN under bench/work/ so parts can run
separately, and merges results into bench/results/quality.json and quality.md. Accuracy is
the student's test accuracy at the step selected on validation (data-free methods: the
final student, as they have no data to select on) — never best-on-test.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import torch

from gandistill import methods
from gandistill.config import load_params
from gandistill.data.dataset import load_split, to_tensors
from gandistill.stages import distill, prepare_data, train_gan, train_teacher
from gandistill.stages.common import fingerprint, load_classifier, params_sections, predict_logits, read_result

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
ALL_METHODS = ["teacher", *methods.METHOD_NAMES]


def _cached(folder: Path, build) -> dict[str, Any]:
    if (folder / "result.json").is_file():
        return read_result(folder)
    return build()


def run_method(method: str, seed: int, work: Path, overrides: list[str]) -> dict[str, Any]:
    params = load_params(ROOT / "params.yaml", [f"seed={seed}", "runtime.progress=false", *overrides])
    params.data.path = str(ROOT / params.data.path)
    data_dir = work / "data"
    _cached(data_dir, lambda: prepare_data.run(load_params(ROOT / "params.yaml", ["runtime.progress=false",
                                                                                  f"data.path={params.data.path}"]),
                                               data_dir))
    # Cache folders carry a fingerprint of the params that shaped them: a changed setting
    # retrains instead of silently reusing a stale teacher or generator.
    teacher_dir = work / f"teacher-seed{seed}-{fingerprint(params_sections(params, 'teacher', 'data'))[:8]}"
    teacher = _cached(teacher_dir, lambda: train_teacher.run(params, data_dir, teacher_dir))
    if method == "teacher":  # the teacher trains on the whole train split
        n_train = read_result(data_dir)["counts"]["train"]
        return {"acc": teacher["test_acc"], "teacher_acc": teacher["test_acc"], "agreement": 1.0,
                "real_images_seen_by_student": n_train, "wall_s": teacher["wall_s"]}
    gan_wall = 0.0
    generator_dir = None
    if methods.get(method).needs_trained_gan:
        gan_fp = fingerprint(params_sections(params, "gan", "teacher", "data"))[:8]
        generator_dir = work / f"generator-seed{seed}-{gan_fp}"  # not gan-seed*: that is the gan student
        gan = _cached(generator_dir, lambda: train_gan.run(params, data_dir, teacher_dir, generator_dir))
        gan_wall = gan["wall_s"]
    params.distill.method = method
    student_dir = work / f"{method}-seed{seed}"
    result = distill.run(params, data_dir, teacher_dir, generator_dir, student_dir)
    test_x, _ = to_tensors(load_split(data_dir, "test"))
    t_pred = predict_logits(load_classifier(teacher_dir), test_x).argmax(1)
    s_pred = predict_logits(load_classifier(student_dir), test_x).argmax(1)
    return {"acc": result["test_acc"], "teacher_acc": teacher["test_acc"],
            "agreement": float((t_pred == s_pred).float().mean()),
            "real_images_seen_by_student": result["real_images_seen_by_student"],
            "wall_s": teacher["wall_s"] + gan_wall + result["wall_s"], "distill_wall_s": result["wall_s"],
            "gan_wall_s": gan_wall, "selected_step": result["best_step"]}


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return f"{os.cpu_count()} cores ({cpu}), torch {torch.__version__}, {torch.get_num_threads()} threads"


def write_tables(data: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {}
    for method, runs in data["runs"].items():
        accs = [r["acc"] for r in runs.values()]
        summary[method] = {
            "acc_mean": statistics.mean(accs), "acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "accs": accs, "seeds": [int(s) for s in runs],
            "real_images_seen_by_student": max(r["real_images_seen_by_student"] for r in runs.values()),
            "teacher_acc": statistics.mean(r["teacher_acc"] for r in runs.values()),
            "agreement": statistics.mean(r["agreement"] for r in runs.values()),
            "wall_s": statistics.median(r["wall_s"] for r in runs.values()),
            "settings": sorted({o for r in runs.values() for o in r.get("command", "").split(" --set ")[1:]}),
        }
    (RESULTS / "quality.json").write_text(json.dumps(summary | {"_runs": data["runs"], "_meta": data["meta"]},
                                                     indent=2))
    lines = ["# Quality benchmark", "", f"Command: `{data['meta']['command']}` (parts merged; the exact "
             "command of every run is in quality.json `_runs`)", f"Machine: {data['meta']['machine']}",
             f"Updated: {data['meta']['date']}",
             "", "Student: test accuracy at the val-selected step (data-free: the final student), "
             "mean ± std over seeds. wall_s: median seconds of teacher + GAN + distill stages as run — parts "
             "that ran at the same time shared the cores (1 thread each), so these are upper bounds; "
             "speed lives in speed.md.", "",
             "Settings: params.yaml at the run's commit plus the overrides shown (exact command per run in "
             "quality.json).", "",
             "| method | test acc (mean ± std) | seeds | real images seen by student | teacher acc | agreement | "
             "wall s | overrides |", "|---|---|---|---|---|---|---|---|"]
    for method in ALL_METHODS:
        if method in summary:
            s = summary[method]
            lines.append(f"| {method} | {100 * s['acc_mean']:.2f} ± {100 * s['acc_std']:.2f}% | {len(s['accs'])} | "
                         f"{s['real_images_seen_by_student']:,} | {100 * s['teacher_acc']:.2f}% | "
                         f"{100 * s['agreement']:.2f}% | {s['wall_s']:.0f} | {' '.join(s['settings']) or '—'} |")
    (RESULTS / "quality.md").write_text("\n".join(lines) + "\n")


def merge_result(method: str, seed: int, result: dict[str, Any]) -> None:
    """Add one run to quality.json under a file lock: parts may run in parallel processes."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / ".quality.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results_file = RESULTS / "quality.json"
        previous = json.loads(results_file.read_text()) if results_file.is_file() else {}
        data = {"runs": previous.get("_runs", {}), "meta": {
            "command": "python -m bench.quality --methods <m> --seeds <s> [--set key=value]",
            "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}}
        data["runs"].setdefault(method, {})[str(seed)] = result
        write_tables(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["all"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="params override")
    parser.add_argument("--work", default=str(ROOT / "bench" / "work"))
    args = parser.parse_args()
    methods = ALL_METHODS if args.methods == ["all"] else args.methods
    os.environ.setdefault("GANDISTILL_CHECKPOINT_ROOT", str(Path(args.work) / "checkpoints"))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    for seed in args.seeds:
        for method in methods:
            started = time.time()
            result = run_method(method, seed, Path(args.work), args.overrides)
            result["git_commit"] = commit
            result["command"] = (f"python -m bench.quality --methods {method} --seeds {seed}" +
                                 "".join(f" --set {o}" for o in args.overrides))
            merge_result(method, seed, result)
            print(f"[bench] {method} seed {seed}: test acc {100 * result['acc']:.2f}% "
                  f"({time.time() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
