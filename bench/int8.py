"""INT8 students of the default pipeline: accuracy after quantisation, on real test data.

    python -m bench.int8 [--methods gan data_free] [--set key=value ...]

For each method: the pipeline's own stages at the shipped params (prepare_data, train_teacher,
train_gan where the method needs it, distill, evaluate, export — the library functions the kfp
components call), cached under bench/work/int8/ by a fingerprint of the params that shaped
them. Reported per method: FP32 and INT8 test accuracy, the drop (export fails above
`export.int8_max_drop`), INT8/FP32 agreement, the calibration source, and evaluate's side-by-side
speed (teacher FP32, student FP32, student INT8 in ONNX Runtime, timed interleaved in one
process). Writes bench/results/int8.md and int8.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from bench.quality import git_commit, machine
from gandistill import archs, methods
from gandistill.config import load_params
from gandistill.data.dataset import load_meta
from gandistill.fingerprints import fingerprint, params_sections
from gandistill.results import read_result
from gandistill.stages import distill, evaluate, export, prepare_data, train_gan, train_teacher

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
WORK = ROOT / "bench" / "work" / "int8"
# The data-free methods need more steps than the shared default (as in bench/quality.py).
METHOD_OVERRIDES = {"data_free": ["distill.steps=5000"], "dafl": ["distill.steps=5000"]}


def _cached(folder: Path, build: Any) -> dict[str, Any]:
    return read_result(folder) if (folder / "result.json").is_file() else build()


def run_method(method: str, overrides: list[str]) -> dict[str, Any]:
    params = load_params(ROOT / "params.yaml", ["runtime.progress=false", f"distill.method={method}",
                                               *METHOD_OVERRIDES.get(method, []), *overrides])
    params.data.path = str(ROOT / params.data.path)
    key = lambda *sections: fingerprint(params_sections(params, *sections))[:8]  # noqa: E731
    data = WORK / f"data-{key('data')}"
    _cached(data, lambda: prepare_data.run(params, data))
    teacher = WORK / f"teacher-{key('teacher', 'data')}"
    # train_teacher resolves 'auto' architectures in `params` in place: do it here too, so the keys
    # below do not depend on whether the teacher was trained in this process or read from the cache
    archs.resolve(params, *load_meta(data).input_shape)
    _cached(teacher, lambda: train_teacher.run(params, data, teacher))
    generator = None
    if methods.get(method).needs_trained_gan:
        generator = WORK / f"generator-{key('gan', 'teacher', 'data')}"
        _cached(generator, lambda: train_gan.run(params, data, teacher, generator))
    student = WORK / f"student-{method}-{key('distill', 'gan', 'teacher', 'data')}"
    trained = _cached(student, lambda: distill.run(params, data, teacher, generator, student))
    stamp = f"{method}-{key('distill', 'gan', 'teacher', 'data', 'evaluate', 'export')}"
    evaluated = evaluate.run(params, data, teacher, student, generator, WORK / f"evaluation-{stamp}")
    exported = export.run(params, data, student, WORK / f"evaluation-{stamp}", WORK / f"export-{stamp}", None,
                          generator)
    m = evaluated["metrics"]
    return {
        "method": method, "overrides": [*METHOD_OVERRIDES.get(method, []), *overrides],
        "teacher_test_acc": m["teacher_test_acc"], "student_fp32_test_acc": exported["int8"]["fp32_test_acc"],
        "student_int8_test_acc": exported["int8_test_acc"], "int8_acc_drop": exported["int8_acc_drop"],
        "int8_agreement": exported["int8_agreement"], "calibration": exported["int8"]["calibration_why"],
        "layers": exported["int8"]["layers"],
        "test_samples": int(exported["int8"]["int8_test_samples"]),
        "int8_same_as_evaluated": exported["int8"]["same_as_evaluated"],
        "real_images_seen_by_student": trained["real_images_seen_by_student"],
        "speed": {name: evaluated["speed"][name]["onnxruntime"] for name in ("teacher", "student", "student_int8")},
        "threads": m["threads"], "load_avg_1min": os.getloadavg()[0], "git_commit": git_commit(),
    }


def markdown(data: dict[str, Any]) -> str:
    rows = ["# INT8 students of the default pipeline", "",
            f"Command: `{data['command']}` — machine: {data['machine']} — updated: {data['updated']} — commit: "
            + ", ".join(sorted({r.get("git_commit", "?") for r in data["runs"].values()})), "",
            "Test accuracy on the real test split ("
            + ", ".join(sorted({f"{r.get('test_samples', 0):,}" for r in data["runs"].values()})) + " images). "
            "INT8: static QDQ quantisation "
            "(int8 per-channel weights, uint8 activations, MinMax) by the export stage; accuracy from a fresh ONNX "
            "Runtime session on the written file. Layers: "
            + "; ".join(sorted({f"{r['method']}: {r.get('layers', 'not recorded')}" for r in data["runs"].values()}))
            + ".", "",
            "| method | real training images seen | calibration | teacher | student FP32 | student INT8 | drop "
            "(points) | INT8/FP32 agreement |", "|---|---|---|---|---|---|---|---|"]
    for r in data["runs"].values():
        rows.append(f"| `{r['method']}` {' '.join(r['overrides'])} | {r['real_images_seen_by_student']:,} | "
                    f"{r['calibration']} | {r['teacher_test_acc'] * 100:.2f} % | "
                    f"{r['student_fp32_test_acc'] * 100:.2f} % | {r['student_int8_test_acc'] * 100:.2f} % | "
                    f"{r['int8_acc_drop'] * 100:.2f} | {r['int8_agreement'] * 100:.2f} % |")
    rows += ["", "Speed from the evaluate stage of the same runs (ONNX Runtime, ORT_ENABLE_ALL, "
             "interleaved in one process; the machine's 1-min load average at the end of each run is stated):", "",
             "| method | model | p50 ms (b1) | img/s b1 | img/s b32 | img/s b256 | b256 × teacher | load |",
             "|---|---|---|---|---|---|---|---|"]
    for r in data["runs"].values():
        t = r["speed"]["teacher"]
        for name, v in r["speed"].items():
            rows.append(f"| `{r['method']}` | {name} | {v['latency_p50_ms']:.3f} | {v['throughput_ips_b1']:,.0f} | "
                        f"{v['throughput_ips_b32']:,.0f} | {v['throughput_ips_b256']:,.0f} | "
                        f"{v['throughput_ips_b256'] / t['throughput_ips_b256']:.2f}× | {r['load_avg_1min']:.1f} |")
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=["gan", "data_free"])
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args()
    path = RESULTS / "int8.json"
    data = json.loads(path.read_text()) if path.is_file() else {"runs": {}}
    for method in args.methods:
        data["runs"][method] = run_method(method, args.overrides)
    command = "python -m bench.int8 --methods " + " ".join(args.methods) + "".join(
        f" --set {o}" for o in args.overrides)
    data |= {"command": command, "machine": machine(), "updated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
    (RESULTS / "int8.md").write_text(markdown(data))
    print(markdown(data))


if __name__ == "__main__":
    main()
