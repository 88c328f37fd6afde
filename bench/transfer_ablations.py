"""Transfer ablations: one translator / student setting at a time, on the shipped MNIST → MNIST-M-style
example, with the target-label probe the pipeline never has.

    python -m bench.transfer_ablations --name base --seed 0 [--student] [--set key=value ...]
    python -m bench.transfer_ablations --name plain-kd --seed 0 --method target_kd
    python -m bench.transfer_ablations --name pixelda --seed 0 --method pixelda --student

Runs the library stages directly (no kfp/MLflow), from the `transfer` profile plus the overrides.
The dataset and the teacher are cached per seed under bench/work/transfer-ablations/ (keyed by the
params that shaped them and the code that ran: bench.quality's code fingerprints); the translator
is cached the same way, so a student-only ablation reuses it.

What it records (bench/results/transfer-ablations.json and .md, one row per --name and seed):
- the curve of the teacher's accuracy on G_BA(target val) at every translator eval — the probe
  (target labels; off the clock, never selection) that says whether the translator helps;
- with --student (or --method target_kd / target_supervised): the student's target test
  accuracy, final and at the step the method selected, and its wall time;
- the source-only teacher on the target val/test split, the command, the commit and the
  1-minute load average while it ran (the machine is shared).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from bench.quality import code_fingerprint, git_commit, machine
from bench.transfer import LoadSampler
from gandistill import methods, transfer
from gandistill.config import Params, load_params
from gandistill.data.dataset import load_meta, load_split, target_folder, to_tensors
from gandistill.evaluation.predict import accuracy, predict_logits
from gandistill.fingerprints import fingerprint, params_sections
from gandistill.model_files import load_classifier
from gandistill.nets.translator import CycleTranslator
from gandistill.pixelda import PixelDATranslator
from gandistill.results import read_result
from gandistill.stages import distill, prepare_data, train_teacher, train_translator

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
NAME = "transfer-ablations"
PROBE_SAMPLES = 2000  # target val images the translator probe scores (of 6,000)


def _cached(folder: Path, build) -> dict[str, Any]:
    if (folder / "result.json").is_file():
        return read_result(folder)
    return build()


def make_params(seed: int, overrides: list[str]) -> Params:
    params = load_params(ROOT / "params.yaml", [f"seed={seed}", "runtime.progress=false", "runtime.threads=1",
                                                *overrides], "transfer")
    params.data.path = str(ROOT / params.data.path)
    params.data.target_path = str(ROOT / str(params.data.target_path))
    return params


def translator_probe(data_dir: Path, teacher: torch.nn.Module):
    """The translator's own target classifier on target val — target labels, so benchmark-only:
    cyclegan, the teacher on G_BA(x_b); pixelda, the task classifier T(x_b)."""
    val = load_split(target_folder(data_dir), "val")
    x, y = torch.from_numpy(val.x[:PROBE_SAMPLES]), torch.from_numpy(val.y[:PROBE_SAMPLES])

    def observe(step: int, translator: CycleTranslator | PixelDATranslator) -> dict[str, float]:
        was_training = translator.training
        translator.eval()
        acc = accuracy(predict_logits(transfer.through_translator(teacher, translator), x), y)
        translator.train(was_training)
        print(f"[probe] step {step}: translator's classifier on target val {100 * acc:.2f} %", flush=True)
        return {"probe_teacher_translated_acc": acc}

    return observe


def target_test_probe(data_dir: Path):
    test_x, test_y = to_tensors(load_split(target_folder(data_dir), "test"))

    def observe(step: int, student: torch.nn.Module) -> dict[str, float]:
        return {"test_acc": accuracy(predict_logits(student, test_x), test_y)}

    return observe


def run_one(name: str, seed: int, method: str, student: bool, overrides: list[str], work: Path) -> dict[str, Any]:
    params = make_params(seed, overrides)
    code = {s: code_fingerprint(f"gandistill.stages.{s}")
            for s in ("train_teacher", "train_translator", "pixelda_translator", "distill")}
    data_dir = work / f"data-seed{seed}-{fingerprint(params.data.model_dump(), params.seed)[:8]}"
    _cached(data_dir, lambda: prepare_data.run(params, data_dir))
    teacher_key = fingerprint(params_sections(params, "teacher", "data"), code["train_teacher"])[:10]
    teacher_dir = work / f"teacher-seed{seed}-{teacher_key}"
    teacher_result = _cached(teacher_dir, lambda: train_teacher.run(params, data_dir, teacher_dir))
    teacher = load_classifier(teacher_dir).eval()
    meta_a, meta_b = load_meta(data_dir), load_meta(target_folder(data_dir))
    source_only = transfer.source_only(teacher, meta_a, meta_b)
    tx, ty = to_tensors(load_split(target_folder(data_dir), "test"))
    run: dict[str, Any] = {
        "name": name, "seed": seed, "method": method, "overrides": overrides,
        "teacher_source_test_acc": teacher_result["test_acc"], "teacher_wall_s": teacher_result["wall_s"],
        "source_only_test_acc": accuracy(predict_logits(source_only, tx), ty),
    }
    translator_dir = None
    if methods.get(method).needs_translator:
        key = fingerprint(params_sections(params, "translator", "teacher", "data"), method,
                          code["train_translator"], code["pixelda_translator"])[:10]
        translator_dir = work / f"translator-seed{seed}-{key}"
        result = _cached(translator_dir, lambda: train_translator.run(
            params, data_dir, teacher_dir, translator_dir, observer=translator_probe(data_dir, teacher)))
        translated = transfer.through_translator(teacher, transfer.load_translator(translator_dir))
        run |= {"translator_wall_s": result["wall_s"], "translator_steps": result["steps"],
                "teacher_translated_test_acc": accuracy(predict_logits(translated, tx), ty),
                "guard": result.get("guard"),
                "translator_curve": [{k: h[k] for k in ("step", "wall_s", "probe_teacher_translated_acc", "coverage",
                                                        "diversity", "semantic_acc", "cycle_acc",
                                                        "class_preservation") if k in h}
                                     for h in result["history"]]}
    if student or not methods.get(method).needs_translator:
        params.distill.method = method
        out = work / f"student-{name}-seed{seed}"
        result = distill.run(params, data_dir, teacher_dir, None, out, observer=target_test_probe(data_dir),
                             translator_dir=translator_dir)
        curve = [{"step": h["step"], "wall_s": h["wall_s"], "test_acc": h["test_acc"]}
                 for h in result["history"] if "test_acc" in h]
        run |= {"student_selected_test_acc": result["test_acc"], "student_selected_on": result["selected_on"],
                "student_best_step": result["best_step"], "student_final_test_acc": curve[-1]["test_acc"],
                "student_wall_s": result["wall_s"], "student_curve": curve}
    run["code"] = code
    return run


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


def write_tables(runs: dict[str, Any]) -> None:
    lines = [
        "# Transfer ablations (MNIST → MNIST-M-style)", "",
        "One setting per row, changed from the `transfer` profile by the overrides shown. Accuracies in % on the "
        "target domain; **G_BA probe** = teacher on G_BA(target val, first 2,000) at each translator eval "
        "(target labels: benchmark only); **teacher∘G_BA test** = the same on the 10,000 target test images for "
        "the final translator; **student** = the target student's test accuracy at the step it selected (without "
        "target labels) / at its final step. Wall times are of a shared 2-core machine (1 thread, load average "
        "shown), so compare curves and accuracies, not seconds across rows.", "",
        f"Machine: {machine()}.", "",
        "| name | seed | method | overrides | source-only | G_BA probe curve (step: acc) | teacher∘G_BA test | "
        "student selected / final | translator s | student s | load | commit |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(runs.values(), key=lambda r: r["started"]):
        curve = " ".join(f"{h['step']}: {_pct(h.get('probe_teacher_translated_acc'))}"
                         for h in r.get("translator_curve", []))
        student = (f"{_pct(r['student_selected_test_acc'])} / {_pct(r['student_final_test_acc'])}"
                   if "student_final_test_acc" in r else "—")
        lines.append(
            f"| {r['name']} | {r['seed']} | {r['method']} | {' '.join(r['overrides']) or '—'} | "
            f"{_pct(r['source_only_test_acc'])} | {curve or '—'} | {_pct(r.get('teacher_translated_test_acc'))} | "
            f"{student} | {r.get('translator_wall_s', 0):.0f} | {r.get('student_wall_s', 0):.0f} | "
            f"{r['load_avg_1m_mean']:.1f} | {r['git_commit']} |")
    lines += ["", "Commands (each reproduces its row at the commit shown):", ""]
    lines += [f"- `{r['command']}`" for r in sorted(runs.values(), key=lambda r: r["started"])]
    (RESULTS / f"{NAME}.md").write_text("\n".join(lines) + "\n")


def merge(run: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / f".{NAME}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        file = RESULTS / f"{NAME}.json"
        runs: dict[str, Any] = json.loads(file.read_text())["runs"] if file.is_file() else {}
        runs[f"{run['name']} | seed {run['seed']}"] = run
        file.write_text(json.dumps({"runs": runs}, indent=1))
        write_tables(runs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="row name in the results table")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method", default="cyclegan", choices=["cyclegan", "pixelda", "target_kd",
                                                                 "target_supervised", "source_augmented"])
    parser.add_argument("--student", action="store_true", help="also train the translator method's student")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="params override")
    parser.add_argument("--work", default=str(ROOT / "bench" / "work" / "transfer-ablations"))
    args = parser.parse_args(argv)
    os.environ.setdefault("GANDISTILL_CHECKPOINT_ROOT", str(Path(args.work) / "checkpoints"))
    torch.set_num_threads(1)
    commit = git_commit()
    command = "python -m bench.transfer_ablations " + " ".join(
        [f"--name {args.name}", f"--seed {args.seed}", *([f"--method {args.method}"] if args.method != "cyclegan"
                                                         else []), *(["--student"] if args.student else []),
         *(f"--set {o}" for o in args.overrides)])
    started = time.time()
    with LoadSampler() as load:
        run = run_one(args.name, args.seed, args.method, args.student, args.overrides, Path(args.work))
    run |= {"command": command, "git_commit": commit, "started": started, "wall_s": time.time() - started,
            "load_avg_1m_mean": statistics.mean(load.samples) if load.samples else os.getloadavg()[0]}
    merge(run)
    print(json.dumps({k: v for k, v in run.items() if not k.endswith("curve")}, indent=1, default=str))
    for h in run.get("translator_curve", []):
        print("translator", h)


if __name__ == "__main__":
    main()
