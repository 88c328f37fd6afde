"""The INT8 student quantised from each ONNX exporter's graph: the TorchScript-based exporter's (what
the INT8 path used before it moved) and the dynamo exporter's (what it uses now, as export's
model.onnx). Same trained student, same calibration images: which layers stay FP32, test accuracy,
agreement between the two INT8 models, and the file size.

    python -m bench.int8_graphs [--set key=value ...]

Trains, with the pipeline's stage functions and cached under bench/work/int8_graphs/, a teacher, the
cGAN and two `gan` students at a small budget (BUDGET): lenet5_half, the default student, and
resnet8_w8, a residual student whose 1×1 shortcut convolutions are where the two exporters order
nodes differently. The dynamo row is `quantization.quantize_student` itself. Writes
bench/results/int8-graphs.md and int8-graphs.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.quality import git_commit, machine
from gandistill import archs, quantization
from gandistill.config import load_params
from gandistill.data.dataset import as_float, load_meta, load_split
from gandistill.evaluation import backends
from gandistill.fingerprints import fingerprint, params_sections
from gandistill.model_files import load_classifier
from gandistill.results import read_result
from gandistill.stages import distill, prepare_data, train_gan, train_teacher

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
WORK = ROOT / "bench" / "work" / "int8_graphs"
BUDGET = ["teacher.epochs=1", "gan.steps=400", "gan.eval_every=200", "distill.steps=400", "distill.eval_every=200"]
STUDENTS = ("lenet5_half", "resnet8_w8")


def _cached(folder: Path, build: Any) -> dict[str, Any]:
    return read_result(folder) if (folder / "result.json").is_file() else build()


def _trained(student_arch: str, overrides: list[str]) -> tuple[Any, Path, Path, Path]:
    """(params, data, generator, student) folders, trained once per budget."""
    params = load_params(ROOT / "params.yaml", ["runtime.progress=false", "distill.method=gan",
                                               f"distill.student_arch={student_arch}", *BUDGET, *overrides])
    params.data.path = str(ROOT / params.data.path)
    key = lambda *sections: fingerprint(params_sections(params, *sections))[:8]  # noqa: E731
    data = WORK / f"data-{key('data')}"
    _cached(data, lambda: prepare_data.run(params, data))
    archs.resolve(params, *load_meta(data).input_shape)
    teacher = WORK / f"teacher-{key('teacher', 'data')}"
    _cached(teacher, lambda: train_teacher.run(params, data, teacher))
    generator = WORK / f"generator-{key('gan', 'teacher', 'data')}"
    _cached(generator, lambda: train_gan.run(params, data, teacher, generator))
    student = WORK / f"student-{key('distill', 'gan', 'teacher', 'data')}"
    _cached(student, lambda: distill.run(params, data, teacher, generator, student))
    return params, data, generator, student


def _predictions(path: Path, x: torch.Tensor) -> np.ndarray:
    run = backends.onnx_runner(backends.onnx_session(path, threads=1))
    return np.concatenate([run(as_float(x[i:i + 1000])).argmax(1) for i in range(0, len(x), 1000)])


def compare(student_arch: str, overrides: list[str]) -> dict[str, Any]:
    params, data, generator, student_dir = _trained(student_arch, overrides)
    student = load_classifier(student_dir).eval()
    test = load_split(data, "test")
    x, y = torch.from_numpy(test.x), torch.from_numpy(test.y)
    ep = params.export
    plan = quantization.calibration_plan(ep.int8_calibration, "gan", student_dir, generator)
    row: dict[str, Any] = {"student": student_arch, "calibration": plan.why, "test_samples": len(y)}
    predictions = {}
    with tempfile.TemporaryDirectory() as tmp:
        for graph in ("torchscript", "dynamo"):
            int8 = Path(tmp) / f"{graph}.int8.onnx"
            if graph == "dynamo":  # the INT8 path as evaluate and export run it
                quantization.quantize_student(student, quantization.example_input(x), int8, plan, data,
                                              ep.int8_calibration_samples, params.seed, ep.onnx_opset)
            else:
                fp32 = backends.to_onnx(student, quantization.example_input(x), Path(tmp) / "fp32.onnx",
                                        ep.onnx_opset, legacy=True)
                reader = quantization.calibration_reader(plan, data, ep.int8_calibration_samples, params.seed)
                quantization.quantize_onnx(fp32, int8, reader)
            numbers = quantization.int8_accuracy(int8, student, x, y)
            predictions[graph] = _predictions(int8, x)
            row[graph] = {"int8_test_acc": numbers["int8_test_acc"], "fp32_test_acc": numbers["fp32_test_acc"],
                          "int8_agreement": numbers["int8_agreement"], "layers": quantization.float_layers_text(int8),
                          "bytes": int8.stat().st_size}
    row["int8_models_agree"] = float((predictions["torchscript"] == predictions["dynamo"]).mean())
    return row | {"load_avg_1min": os.getloadavg()[0]}


def markdown(data: dict[str, Any]) -> str:
    rows = ["# The INT8 student from each ONNX exporter's graph", "",
            f"Command: `{data['command']}` — machine: {data['machine']} — updated: {data['updated']} — commit: "
            f"{data['git_commit']}", "",
            "Same trained `gan` student, same calibration images, quantised by `gandistill.quantization` from the "
            "TorchScript-based exporter's graph and from the dynamo exporter's (the INT8 path's graph now). "
            "Accuracy on the real test split from a fresh ONNX Runtime session on each file; *INT8 models agree*: "
            "top-1 agreement between the two INT8 files. Budget: " + " ".join(BUDGET) + ".", "",
            "| student | graph | FP32 test | INT8 test | INT8/FP32 agreement | INT8 models agree | bytes | "
            "kept FP32 |", "|---|---|---|---|---|---|---|---|"]
    for r in data["runs"].values():
        for graph in ("torchscript", "dynamo"):
            g = r[graph]
            rows.append(f"| `{r['student']}` | {graph} | {g['fp32_test_acc'] * 100:.2f} % | "
                        f"{g['int8_test_acc'] * 100:.2f} % | {g['int8_agreement'] * 100:.2f} % | "
                        f"{r['int8_models_agree'] * 100:.2f} % | {g['bytes']:,} | {g['layers']} |")
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args()
    commit = git_commit()  # the code that ran (read before: a commit made meanwhile is not it)
    data: dict[str, Any] = {"git_commit": commit, "runs": {arch: compare(arch, args.overrides) for arch in STUDENTS}}
    data |= {"command": "python -m bench.int8_graphs" + "".join(f" --set {o}" for o in args.overrides),
             "machine": machine(), "updated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "int8-graphs.json").write_text(json.dumps(data, indent=2))
    (RESULTS / "int8-graphs.md").write_text(markdown(data))
    print(markdown(data))


if __name__ == "__main__":
    main()
