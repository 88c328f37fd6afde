"""export: ship the student as a torch.export program (.pt2), ONNX and INT8 ONNX, prove each,
write a model card.

Parity is proven, not assumed: the exported files are re-loaded from disk and run on a real
test batch (and a batch of one, to prove the batch axis is dynamic). Export fails with an
`ExportError` unless, for each format,

    max_ij |f_export(x)_ij − f_torch(x)_ij| ≤ export.parity_atol   and   argmax agreement = 100 %.

The INT8 model (`export.int8`, see `gandistill.quantization`: static QDQ quantisation calibrated
on generated samples for methods that have a generator) cannot reproduce the logits to 1e-4 —
quantisation is lossy by design — so it is held to what matters: its test accuracy, from a fresh
ONNX Runtime session on the written file, may be at most `export.int8_max_drop` below the FP32
student's on the whole test split, or export fails naming both accuracies and their agreement.

Everything is written into a temporary sibling folder and moved into place only after the
checks pass, so a failed export never leaves a half-written or unproven artifact behind.

TorchScript is no longer shipped: PyTorch 2.13 deprecates every torch.jit entry point in favour
of torch.export, whose .pt2 program loads with `torch.export.load(path).module()` (and is what
MLflow's pt2 flavour registers); ONNX covers the runtimes outside PyTorch.

Outputs: model.pt (the student's weights, for the registry), model.pt2, model.onnx,
model.int8.onnx, example_input.npy / example_logits.npy (a real test batch and the logits PyTorch gives —
promote re-checks the registered model against them), model_card.md, result.json.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gandistill import methods, quantization, stage_params
from gandistill.config import Params
from gandistill.data.dataset import DatasetMeta, as_float, load_meta, load_split
from gandistill.errors import DataError, ExportError
from gandistill.evaluation import backends
from gandistill.files import new_staging_dir, publish_dir
from gandistill.fingerprints import file_digest
from gandistill.model_files import MODEL_FILE, load_classifier, load_model_file
from gandistill.nets import count_parameters
from gandistill.results import read_result, write_result
from gandistill.tracking import NullTracker, Tracker
from gandistill.transfer import method_data_dir

log = logging.getLogger(__name__)

PARITY_BATCH = 256
INT8_FILE = quantization.INT8_FILE
EXAMPLE_SIZE = 8  # rows of example_input.npy (≥ 2: MLflow's pt2 format freezes a batch of 1)


def git_commit() -> str | None:
    """The code's commit: $GIT_COMMIT (baked into images, where .git is absent) or `git rev-parse`."""
    if os.environ.get("GIT_COMMIT"):
        return os.environ["GIT_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def check_parity(name: str, reference: np.ndarray, exported: np.ndarray, atol: float) -> dict[str, float]:
    """Raise ExportError unless `exported` reproduces `reference` within atol with equal argmax."""
    numbers = backends.parity(reference, exported)
    if numbers["max_abs_diff"] > atol or numbers["argmax_agreement"] < 1.0:
        raise ExportError(
            f"{name} export does not reproduce the PyTorch student: max |Δlogit| = "
            f"{numbers['max_abs_diff']:.3g} (allowed export.parity_atol = {atol:g}), argmax agreement = "
            f"{numbers['argmax_agreement'] * 100:.2f} % (required 100 %). The exported file is not shipped; "
            "check for ops the exporter handles differently (try another export.onnx_opset) or, if the "
            "difference is numerical noise, raise export.parity_atol.")
    return numbers


def verify_exports(model: torch.nn.Module, batch: torch.Tensor, onnx_path: Path, pt2_path: Path,
                   atol: float) -> dict[str, float]:
    """Re-load both exported files from disk and compare them with the PyTorch model on `batch`
    (and on its first row alone, which proves the batch axis is dynamic)."""
    with torch.inference_mode():
        reference = model(batch).numpy()
        session = backends.onnx_session(onnx_path)
        run_onnx = backends.onnx_runner(session)
        onnx_out = np.concatenate([run_onnx(batch), run_onnx(batch[:1])])
        program = backends.load_pt2(pt2_path)
        pt2_out = np.concatenate([program(batch).numpy(), program(batch[:1]).numpy()])
    expected = np.concatenate([reference, reference[:1]])
    onnx = check_parity("ONNX (ONNX Runtime)", expected, onnx_out, atol)
    pt2 = check_parity("torch.export (.pt2)", expected, pt2_out, atol)
    return {"onnx_max_abs_diff": onnx["max_abs_diff"], "onnx_argmax_agreement": onnx["argmax_agreement"],
            "pt2_max_abs_diff": pt2["max_abs_diff"], "pt2_argmax_agreement": pt2["argmax_agreement"],
            "parity_samples": float(len(batch))}


def export_int8(params: Params, student: torch.nn.Module, method: str, data_dir: Path, student_dir: Path,
                generator_dir: Path | None, test_x: torch.Tensor, test_y: torch.Tensor, out: Path,
                evaluation_dir: Path, evaluated: dict[str, Any] | None) -> dict[str, Any]:
    """Ship the run's INT8 student — the file evaluate built and timed (`evaluated`: evaluate's
    result["int8"]), checked by its digest — or, with none (export run on its own), quantise it here;
    then hold it to its accuracy (see the module doc)."""
    ep = params.export
    source = evaluation_dir / (evaluated or {}).get("file", INT8_FILE)
    if evaluated and source.is_file() and file_digest(source) == evaluated.get("sha256_16"):
        shutil.copyfile(source, out)
        built = dict(evaluated)
    else:
        if evaluated:
            log.warning("[export] the INT8 model evaluate timed (%s) is missing or changed: quantising again, "
                        "so its speed figures describe another build", source)
        built = quantization.build_student_int8(student, method, student_dir, generator_dir, data_dir, test_x, out,
                                                ep.int8_calibration, ep.int8_calibration_samples, params.seed,
                                                ep.onnx_opset)
    numbers = quantization.int8_accuracy(out, student, test_x, test_y)
    quantization.check_int8(numbers, ep.int8_max_drop)
    same = bool(evaluated) and file_digest(out) == evaluated.get("sha256_16")
    return numbers | {"calibration": built["calibration"], "calibration_why": built["calibration_why"],
                      "calibration_samples": ep.int8_calibration_samples, "max_drop": ep.int8_max_drop,
                      "layers": built["layers"], "same_as_evaluated": same}


def _int8_card(evaluation: dict[str, Any], int8: dict[str, Any] | None) -> list[str]:
    """The model card's comparison of the two deployable ONNX models (FP32 and INT8)."""
    if int8 is None:
        return ["## Deployment formats", "Only FP32 was exported (export.int8 = false).", ""]
    m = lambda key, kind="": _metric(evaluation, key, kind)  # noqa: E731
    faster = (evaluation.get("metrics") or {}).get("speedup_throughput_b256_int8_vs_student")
    advice = ("" if faster is None else
              f" On the evaluation machine INT8 gave {faster:.2f}× the FP32 student's batch-256 throughput: "
              f"{quantization.speed_verdict(faster)}.")
    return [
        "## Deployment formats (ONNX Runtime, CPU, test split)",
        "| model | file | test accuracy | agreement with FP32 student | p50 latency, batch 1 | images/s, batch 256 |",
        "|---|---|---|---|---|---|",
        f"| teacher FP32 | – | {m('teacher_test_acc', '%')} | | {m('latency_p50_ms_teacher_onnxruntime', 'ms')} | "
        f"{m('throughput_ips_b256_teacher_onnxruntime', 'int')} |",
        f"| student FP32 | `model.onnx` | {int8['fp32_test_acc'] * 100:.2f} % | 100.00 % | "
        f"{m('latency_p50_ms_student_onnxruntime', 'ms')} | {m('throughput_ips_b256_student_onnxruntime', 'int')} |",
        f"| student INT8 | `{INT8_FILE}` | {int8['int8_test_acc'] * 100:.2f} % | "
        f"{int8['int8_agreement'] * 100:.2f} % | "
        f"{m('latency_p50_ms_student_int8_onnxruntime', 'ms')} | "
        f"{m('throughput_ips_b256_student_int8_onnxruntime', 'int')} |", "",
        f"INT8: static quantisation (QDQ, int8 per-channel weights, uint8 activations, MinMax ranges; "
        f"{int8['layers']}) calibrated on {int8['calibration_samples']} {int8['calibration_why']}. Accuracy drop "
        f"{int8['int8_acc_drop'] * 100:.2f} points (allowed export.int8_max_drop = {int8['max_drop'] * 100:.2f}), "
        f"measured by a fresh ONNX Runtime session on the written file over {int(int8['int8_test_samples'])} test "
        f"images.{advice}", "",
    ]


def _metric(evaluation: dict[str, Any], key: str, kind: str = "") -> str:
    value = evaluation.get("metrics", {}).get(key)
    if value is None:
        return "n/a"
    if kind == "%":
        return f"{value * 100:.2f} %"
    if kind == "ms":
        return f"{value:.3f} ms"
    return f"{value:,.0f}" if kind == "int" else f"{value:.4g}"


def trained_gan(generator_dir: str | Path | None) -> dict[str, Any] | None:
    """What the model card says of the trained cGAN a student learned from, read off the generator
    it was given (its file and its train_gan result), not off the params: the card names the model
    that was used, and export's cache key does not follow gan.* for methods without a cGAN."""
    if generator_dir is None or not (Path(generator_dir) / MODEL_FILE).is_file():
        return None
    blob = load_model_file(generator_dir)
    return {"arch": blob.get("arch", "conv"), "nz": blob["nz"], "width": blob["ngf"],
            "steps": read_result(generator_dir).get("steps")}


def model_card(params: Params, meta: DatasetMeta, evaluation: dict[str, Any], student: torch.nn.Module,
               info: dict[str, Any], parity: dict[str, float], files: dict[str, dict[str, Any]],
               commit: str | None, int8: dict[str, Any] | None = None, gan: dict[str, Any] | None = None) -> str:
    """Markdown model card (after Mitchell et al., "Model Cards for Model Reporting", FAT* 2019);
    `gan`: the trained cGAN the student learned from (`trained_gan`)."""
    method = info.get("method") or evaluation.get("student", {}).get("method", "unknown")
    record = methods.METHODS.get(method)
    dp = params.distill
    c, h, w = meta.input_shape
    k = meta.num_classes
    classes = ", ".join(meta.class_names[:20]) + (", …" if k > 20 else "")
    m = lambda key, kind="": _metric(evaluation, key, kind)  # noqa: E731
    lines = [
        f"# Model card — {params.promote.model_name}", "",
        "## Intended use",
        f"Image classification of {c}×{h}×{w} images into {k} classes ({classes}) where a small, fast model "
        "is needed: a compressed student of a larger teacher.",
        f"Input: float32 tensor N×{c}×{h}×{w}, raw pixels scaled to [0, 1] (normalisation is inside the "
        f"model). Output: N×{k} logits (softmax gives probabilities).",
        "Not intended for inputs from another domain, for safety-critical decisions without human review, "
        "or as a calibrated probability source unless the ECE below is acceptable for the use.", "",
        "## Data",
        f"- source: {meta.source}; splits: " + ", ".join(f"{n} {v:,}" for n, v in meta.counts.items()),
        "- data version:",
        *([f"  - `{key}`: `{value}`" for key, value in sorted(meta.version.items())]
          or ["  - none recorded"]),
        f"- code commit: `{commit or 'unknown (no git checkout and no $GIT_COMMIT)'}`", "",
        "## Model",
        f"- architecture: `{info.get('arch', 'unknown')}`, {count_parameters(student):,} parameters",
        f"- teacher: `{evaluation.get('teacher', {}).get('arch', 'unknown')}`",
        f"- seed: {params.seed}", "",
        "## Method",
        f"Knowledge distillation, method `{method}`: "
        f"{record.description if record else 'see distill.method'}.",
        f"Settings: temperature {dp.temperature}, α {dp.alpha}, {dp.steps} steps, batch {dp.batch_size}, "
        f"lr {dp.lr}" + (f"; GAN ({gan['arch']}) nz {gan['nz']}, width {gan['width']}, {gan['steps']} steps"
                         if gan and record and record.needs_trained_gan else "") + ".",
        "Model selection used the validation split (data-free methods: none, the final student); the test "
        "figures below are reported once, by the evaluate stage.", "",
        f"## Metrics (test split, {m('test_samples', 'int')} images)",
        "| model | test accuracy | 95 % CI |", "|---|---|---|",
        f"| teacher | {m('teacher_test_acc', '%')} | |",
        f"| student | {m('student_test_acc', '%')} | {m('student_test_acc_ci_low', '%')} – "
        f"{m('student_test_acc_ci_high', '%')} |",
        *[f"| baseline {name} | {row['test_acc'] * 100:.2f} % | |"
          for name, row in (evaluation.get("baselines") or {}).items()], "",
        f"- agreement with teacher: {m('agreement', '%')}; "
        f"KL(teacher ‖ student): {m('kl_teacher_student')} nats",
        f"- ECE (15-bin): student {m('ece_student', '%')}, teacher {m('ece_teacher', '%')}",
        f"- compression: {m('compression_ratio')}× fewer parameters; MACs/image {m('macs_student', 'int')} "
        f"(teacher {m('macs_teacher', 'int')})",
        f"- batch-1 latency p50, ONNX Runtime on CPU: {m('latency_p50_ms_student_onnxruntime', 'ms')} "
        f"(teacher {m('latency_p50_ms_teacher_onnxruntime', 'ms')})", "",
        f"## Export parity (real test batch of {int(parity['parity_samples'])} images + a batch of one)",
        "| format | max abs logit diff | argmax agreement |", "|---|---|---|",
        f"| ONNX Runtime (opset {params.export.onnx_opset}) | {parity['onnx_max_abs_diff']:.3g} | "
        f"{parity['onnx_argmax_agreement'] * 100:.2f} % |",
        f"| torch.export (`model.pt2`) | {parity['pt2_max_abs_diff']:.3g} | "
        f"{parity['pt2_argmax_agreement'] * 100:.2f} % |", "",
        f"Tolerance: export.parity_atol = {params.export.parity_atol:g}.", "",
        *_int8_card(evaluation, int8),
        "## Limitations",
        "- " + ((record.limitation if record else "") or "Inherits the errors and biases of the teacher and its data."),
        f"- Accuracy is measured on one test split of {meta.source}; expect lower accuracy under "
        "distribution shift (other devices, rotations, noise). Inputs from unseen classes are still "
        "assigned a known class.",
        "- Speed figures come from the evaluation machine; re-measure on the deployment target.", "",
        "## Files", "| file | bytes | sha256 (first 16 hex) |", "|---|---|---|",
        *[f"| `{name}` | {f['bytes']:,} | `{f['sha256_16']}` |" for name, f in files.items()], "",
    ]
    return "\n".join(lines)


def run(params: Params, data_dir: str | Path, student_dir: str | Path, evaluation_dir: str | Path,
        out_dir: str | Path, tracker: Tracker | None = None,
        generator_dir: str | Path | None = None) -> dict[str, Any]:
    """Export the student in `student_dir` into `out_dir`; returns (and writes) result.json.
    `generator_dir`: the trained cGAN, for methods that distilled from it (INT8 calibration)."""
    tracker = tracker or NullTracker()
    params = stage_params.view(params, "export")  # only what it reads (its stage record): its cache key
    started = time.perf_counter()
    data_dir, student_dir, out_dir = Path(data_dir), Path(student_dir), Path(out_dir)
    if (student_dir / MODEL_FILE).is_file():  # a target-domain student takes the target domain's images
        method = torch.load(student_dir / MODEL_FILE, map_location="cpu", weights_only=True).get("method")
        if method in methods.METHODS:
            data_dir = method_data_dir(data_dir, method)
    meta = load_meta(data_dir)
    test = load_split(data_dir, "test")
    if len(test) == 0:
        raise DataError(f"{data_dir}: the test split is empty, so export parity cannot be proven; "
                        "re-run prepare_data with a test split")
    if not (student_dir / MODEL_FILE).is_file():
        raise DataError(f"{student_dir / MODEL_FILE} not found: export needs the student saved by the "
                        "distill stage")
    evaluation = read_result(evaluation_dir)
    if not evaluation:
        log.warning("[export] %s has no result.json: the model card will lack metrics", evaluation_dir)
    student = load_classifier(student_dir).eval()
    info = torch.load(student_dir / MODEL_FILE, map_location="cpu", weights_only=True)
    info = {k: info[k] for k in ("arch", "method") if k in info}
    batch = as_float(torch.from_numpy(test.x[:PARITY_BATCH]))

    tmp = new_staging_dir(out_dir)
    try:
        shutil.copyfile(student_dir / MODEL_FILE, tmp / MODEL_FILE)
        # ≥ 2 rows: a batch of one would let torch.export specialise the batch dimension
        example = batch[:EXAMPLE_SIZE] if len(batch) >= 2 else batch.repeat(2, 1, 1, 1)
        backends.to_pt2(student, example, tmp / backends.PT2_FILE)
        backends.to_onnx(student, example, tmp / "model.onnx", params.export.onnx_opset)
        parity = verify_exports(student, batch, tmp / "model.onnx", tmp / backends.PT2_FILE,
                                params.export.parity_atol)
        with torch.inference_mode():
            np.save(tmp / "example_input.npy", example.numpy())
            np.save(tmp / "example_logits.npy", student(example).numpy())
        int8 = None
        if params.export.int8:
            int8 = export_int8(params, student, info.get("method", params.distill.method), data_dir, student_dir,
                               Path(generator_dir) if generator_dir else None,
                               torch.from_numpy(test.x), torch.from_numpy(test.y), tmp / INT8_FILE,
                               Path(evaluation_dir), evaluation.get("int8"))
        shipped = (MODEL_FILE, backends.PT2_FILE, "model.onnx", *((INT8_FILE,) if int8 else ()))
        files = {name: {"bytes": (tmp / name).stat().st_size, "sha256_16": file_digest(tmp / name)}
                 for name in shipped}
        commit = git_commit()
        (tmp / "model_card.md").write_text(model_card(params, meta, evaluation, student, info, parity, files,
                                                      commit, int8, trained_gan(generator_dir)), encoding="utf-8")
        result: dict[str, Any] = {
            **parity, "parity_atol": params.export.parity_atol, "onnx_opset": params.export.onnx_opset,
            "files": files | {"model_card.md": {"bytes": (tmp / "model_card.md").stat().st_size}},
            "pt2": backends.PT2_FILE, "onnx": "model.onnx", "model_card": "model_card.md",
            "onnx_int8": INT8_FILE if int8 else None, "int8": int8,
            **({k: v for k, v in int8.items() if k.startswith("int8_")} if int8 else {}),
            "input_shape": [None, *meta.input_shape], "num_classes": meta.num_classes,
            "class_names": meta.class_names, "data_version": meta.version, "data_source": meta.source,
            "git_commit": commit, "student": info, "model_name": params.promote.model_name,
            "student_test_acc": evaluation.get("metrics", {}).get("student_test_acc"),
            "teacher_test_acc": evaluation.get("metrics", {}).get("teacher_test_acc"),
            "wall_s": time.perf_counter() - started,
        }
        write_result(tmp, result)
        publish_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    tracker.log_metrics(parity | ({k: v for k, v in int8.items() if k.startswith("int8_")} if int8 else {}))
    tracker.set_tags({"export.git_commit": commit or "unknown"})
    for name in ("model.onnx", *((INT8_FILE,) if int8 else ()), "model_card.md", "result.json"):
        tracker.log_artifact(out_dir / name, "export")
    log.info("[export] ONNX max |Δ| %.2g, torch.export max |Δ| %.2g on %d test images → %s",
             parity["onnx_max_abs_diff"], parity["pt2_max_abs_diff"], len(batch), out_dir)
    return result
