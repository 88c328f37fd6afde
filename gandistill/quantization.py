"""The INT8 student: static post-training quantisation of the FP32 ONNX model with ONNX Runtime.

The FP32 graph is the dynamo exporter's, as export's model.onnx. Format: QDQ
(QuantizeLinear/DequantizeLinear pairs that ONNX Runtime fuses into integer kernels, and any other
runtime can read), int8 weights per output channel (symmetric), uint8 activations per tensor
(asymmetric), ranges from MinMax calibration. The model is pre-processed first
(`quant_pre_process`: shape inference and graph clean-up — without it, Identity nodes the
TorchScript-based exporter left between shared constants stopped ORT from fusing convolutions,
measured: 5 of 9 ResNet-8 convs stayed float).

Not every layer pays in INT8: `float_prefix` keeps the leading weight layers in FP32 — those
upstream of the first ones whose reduction size (inputs summed per output: in_channels/groups ×
kh × kw for a convolution, in_features for a linear layer) reaches `MIN_INT8_REDUCTION`. Layers
are named by their PyTorch module (`layer_name`: the dynamo graph names weights after the
parameters). Why, measured (one
Conv+ReLU alone, ONNX Runtime 1.32 CPU, 1 thread, AVX-512 VNNI, batch 256, INT8 time including
its quantise/dequantise): reduction 25 (1→3 channels, 5×5, the first conv of LeNet-5-half) runs
3× SLOWER in INT8 (28.9 vs 9.4 µs/image), 27 (3→16, 3×3) 1.8× slower, 75 0.8×, 100 0.97×; from
144 on INT8 is 1.25–2.4× faster. In the whole default student, INT8 of every layer was 0.57×
the teacher's batch-256 throughput; with the float prefix it is the FP32 student's speed. A
prefix, not a per-layer choice, so the graph crosses from float to int8 once: leaving only the
first conv float put ONNX Runtime's quantise step before the next max-pool (it propagates Q
backwards), which then ran as a slow uint8 NCHW pool (measured: 0.97× the teacher instead of
1.3×). For the same reason the border never sits right behind a max-pool: a layer that reads a
max-pool's output stays FP32 too, whatever its reduction (LeNet-5 as the model: conv2, 150,
in int8 after a float conv1 gave 0.67× its FP32 speed, float up to fc1 1.06×). Where no layer
qualifies every layer is quantised (the file called INT8 carries int8 weights; evaluate's
timing says whether it pays).

Calibration data is where a distilled student differs from a quantisation tutorial: a student
that never saw a real image should not need one to be quantised. `calibration_plan` picks:

- ``generated`` — class-balanced samples of the generator the student learned from: the trained
  cGAN (gan, gan_real) or the generator distill trains and saves for data_free / dafl. No
  dataset split is opened (a test makes them unreadable to prove it);
- ``real`` — training images, allowed only for methods that may touch real data;
- ``auto`` (default) — generated where a generator exists; for `noise` (no generator, no real
  image) the Gaussian images it was trained on (`noise_images`: only the data's pixel mean/std);
  else real.

The INT8 student is quantised once per run (`build_student_int8`): evaluate builds it into its
output and times it, export ships that file (checked by its digest) and quantises only when it
runs without one (a stage called on its own).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from gandistill import methods
from gandistill.data.dataset import as_float, load_meta, load_split, noise_images
from gandistill.errors import ConfigError, DataError, ExportError
from gandistill.evaluation import backends
from gandistill.files import file_hash
from gandistill.model_files import FREE_GENERATOR_DIR, MODEL_FILE, load_generator, load_model_file

log = logging.getLogger(__name__)

CALIBRATION_SEED_OFFSET = 104729  # calibration samples differ from those any other stage drew
CALIBRATION_BATCH = 64
INT8_FILE = "model.int8.onnx"  # the shipped name (export output, registry extra file)
EXAMPLE_ROWS = 2  # the ONNX export's example batch: the same in evaluate and export, so the bytes match
MIN_INT8_REDUCTION = 128  # a weight layer pays in INT8 from this reduction size on (module doc: crossover 100–144)
WEIGHT_OPS = ("Conv", "Gemm", "MatMul")


@dataclass(frozen=True)
class CalibrationPlan:
    source: Literal["generated", "real", "noise"]
    generator_dir: Path | None
    why: str  # one sentence for the report and the model card


def free_generator_dir(student_dir: str | Path) -> Path | None:
    """The generator a data-free method trained next to its student, if distill saved one."""
    folder = Path(student_dir) / FREE_GENERATOR_DIR
    return folder if (folder / MODEL_FILE).is_file() else None


def calibration_plan(choice: str, method: str, student_dir: str | Path,
                     generator_dir: str | Path | None) -> CalibrationPlan:
    """Which images calibrate the INT8 ranges for a student made by `method` (see module doc)."""
    record = methods.get(method)
    generator: Path | None = None
    if record.needs_trained_gan and generator_dir is not None:
        generator = Path(generator_dir)
    elif not record.needs_trained_gan:
        generator = free_generator_dir(student_dir)
    if choice == "real":
        if not record.real_data_anywhere:
            raise ConfigError(f"export.int8_calibration=real: distill.method={method} promises that no real image is "
                              "used anywhere, so its INT8 model cannot be calibrated on real data; use 'generated' "
                              "or 'auto'")
        return CalibrationPlan("real", None, "training images (export.int8_calibration=real)")
    if generator is not None:
        owner = "the trained cGAN" if record.needs_trained_gan else "the generator distill trained with the student"
        return CalibrationPlan("generated", generator, f"generated samples only, from {owner}; no real image")
    if record.has_generator or choice == "generated":
        raise DataError(f"INT8 calibration on generated samples: no generator found for distill.method={method} "
                          f"(looked in {generator_dir or Path(student_dir) / FREE_GENERATOR_DIR}); re-run distill, or "
                          "set export.int8_calibration=real where the method allows real images")
    if not record.real_data_anywhere:  # noise: calibrate on what it was trained on, never on real images
        return CalibrationPlan("noise", None, "random images with the data's per-channel pixel mean and std (what "
                                              f"distill.method={method} trained on); no real image")
    return CalibrationPlan("real", None, f"training images (distill.method={method} has no generator)")


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol: get_next() → {input: batch} or None."""

    def __init__(self, batches: Iterator[np.ndarray]):
        self._batches = batches

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {backends.INPUT_NAME: batch}


@torch.no_grad()
def generated_batches(generator_dir: Path, n: int, seed: int, batch: int = CALIBRATION_BATCH) -> Iterator[np.ndarray]:
    """Class-balanced generated images, drawn the way distill drew them: a generator saved with
    `sampling: batch_statistics` (data-free methods: BatchNorm on batch statistics) is sampled
    in train mode, any other in eval mode. Reads only the generator's folder."""
    blob = load_model_file(generator_dir)
    generator = load_generator(generator_dir)
    generator.train(blob.get("sampling") == "batch_statistics")
    rng = torch.Generator().manual_seed(seed)
    k = generator.num_classes
    for start in range(0, n, batch):
        size = min(batch, n - start)
        labels = (torch.arange(start, start + size) % k)
        z = torch.randn(size, generator.nz, generator=rng)
        yield generator(z, labels).float().numpy()


def real_batches(data_dir: Path, n: int, seed: int, batch: int = CALIBRATION_BATCH) -> Iterator[np.ndarray]:
    """A seeded random subset of the training split."""
    train = load_split(data_dir, "train")
    if len(train) == 0:
        raise DataError(f"{data_dir}: the train split is empty; INT8 calibration on real images needs it")
    idx = np.random.default_rng(seed).permutation(len(train))[:n]
    for start in range(0, len(idx), batch):
        yield as_float(torch.from_numpy(train.x[np.sort(idx[start : start + batch])])).numpy()


def noise_batches(data_dir: Path, n: int, seed: int, batch: int = CALIBRATION_BATCH) -> Iterator[np.ndarray]:
    """Seeded `noise_images`: reads the dataset's meta.json (mean/std), no image."""
    meta = load_meta(data_dir)
    rng = torch.Generator().manual_seed(seed)
    for start in range(0, n, batch):
        yield noise_images(meta, min(batch, n - start), generator=rng).numpy()


def calibration_reader(plan: CalibrationPlan, data_dir: str | Path, n: int, seed: int) -> _Reader:
    """The calibration images of `plan`, as ONNX Runtime's reader (seeded: same plan and seed,
    same images, so evaluate and export build identical INT8 models)."""
    seed = seed + CALIBRATION_SEED_OFFSET
    if plan.source == "generated":
        assert plan.generator_dir is not None
        return _Reader(generated_batches(plan.generator_dir, n, seed))
    if plan.source == "noise":
        return _Reader(noise_batches(Path(data_dir), n, seed))
    return _Reader(real_batches(Path(data_dir), n, seed))


def reduction_size(node: Any, initializers: dict[str, Any]) -> int | None:
    """How many products one output of a Conv / Gemm / MatMul sums (in_channels/groups × kh × kw,
    or in_features); None when its weight is not a constant of the graph."""
    weight = next((initializers[name] for name in node.input[1:2] if name in initializers), None)
    if weight is None:
        return None
    dims = list(weight.dims)
    if node.op_type == "Conv":
        return int(np.prod(dims[1:]))
    trans_b = any(a.name == "transB" and a.i for a in node.attribute)
    return int(dims[1] if node.op_type == "Gemm" and trans_b else dims[0])


def float_prefix(model: Any, min_reduction: int = MIN_INT8_REDUCTION) -> list[str]:
    """Node names of the weight layers that stay FP32: those with no layer that pays in INT8 at or
    upstream of them. A layer pays when its reduction size reaches `min_reduction` and its input is
    not a max-pool's output (module doc: why, measured; a weight that is not a graph constant counts
    as paying: the border sits there). On a chain (LeNet) these are the leading layers up to the
    first that pays; on a residual net a block's 1×1 shortcut beside float layers stays float with
    them. Read from the data flow, not the node order, so both ONNX exporters give the same layers
    (the TorchScript-based one writes a block's shortcut before its first conv, the dynamo one
    after its second). Empty when the first layer already pays, or when none does (then every
    layer is quantised)."""
    initializers = {t.name: t for t in model.graph.initializer}
    producer = {out: n.op_type for n in model.graph.node for out in n.output}
    downstream: set[str] = set()  # tensors computed from the output of a layer that pays
    kept: list[str] = []
    any_pays = False
    for node in model.graph.node:  # ONNX keeps nodes in topological order
        after_border = any(name in downstream for name in node.input)
        if node.op_type in WEIGHT_OPS:
            size = reduction_size(node, initializers)
            pays = size is None or (size >= min_reduction and producer.get(node.input[0]) != "MaxPool")
            any_pays |= pays
            if pays or after_border:
                after_border = True
            else:
                kept.append(node.name)
        if after_border:
            downstream.update(node.output)
    return kept if any_pays else []


def layer_name(node: Any, producers: dict[str, Any]) -> str:
    """The PyTorch module a weight layer computes: its weight tensor's name without ".weight" (the
    dynamo exporter names each initializer after its parameter, BatchNorm folded into the conv's
    weight), read through the DequantizeLinear of a quantised layer; the node's name otherwise."""
    weight = node.input[1] if len(node.input) > 1 else ""
    dequantize = producers.get(weight)
    if dequantize is not None and dequantize.op_type == "DequantizeLinear":
        weight = dequantize.input[0].removesuffix("_quantized")
    return weight.removesuffix(".weight") if weight.endswith(".weight") else node.name


def layer_precision(path: str | Path) -> dict[str, str]:
    """Each Conv / Gemm / MatMul of a saved model, by its module (`layer_name`) → "int8" when its
    weight comes through a DequantizeLinear (QDQ), else "float": what the INT8 file really computes
    in integers."""
    import onnx

    graph = onnx.load(str(path)).graph
    producers = {out: n for n in graph.node for out in n.output}
    dequantized = {out for n in graph.node if n.op_type == "DequantizeLinear" for out in n.output}
    return {layer_name(n, producers): ("int8" if len(n.input) > 1 and n.input[1] in dequantized else "float")
            for n in graph.node if n.op_type in WEIGHT_OPS}


def float_layers_text(path: str | Path) -> str:
    """One sentence for reports and the model card: which weight layers the INT8 file keeps in FP32."""
    precision = layer_precision(path)
    kept = [name for name, kind in precision.items() if kind == "float"]
    if not kept:
        return f"all {len(precision)} weight layers in int8"
    return (f"{len(precision) - len(kept)} of {len(precision)} weight layers in int8; the leading "
            f"{', '.join(kept)} kept in FP32 (reduction size below {MIN_INT8_REDUCTION}, or input from a max-pool: "
            "there INT8 was measured slower)")


def quantize_onnx(fp32_path: str | Path, out_path: str | Path, reader: Any,
                  min_reduction: int = MIN_INT8_REDUCTION) -> Path:
    """Static QDQ quantisation of an FP32 ONNX classifier; the `float_prefix` stays FP32 (see
    module doc for the choices)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out_path = Path(out_path)
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "preprocessed.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=False)
        keep_float = float_prefix(onnx.load(str(pre)), min_reduction)
        # ORT logs "please consider pre-processing" at WARNING even after it: quiet its root logger
        previous = logging.getLogger().level
        logging.getLogger().setLevel(max(previous, logging.ERROR))
        try:
            quantize_static(str(pre), str(out_path), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=keep_float)
        finally:
            logging.getLogger().setLevel(previous)
    return out_path


def example_input(x_uint8: torch.Tensor) -> torch.Tensor:
    """The example batch both stages export the FP32 ONNX graph with (first test images)."""
    return as_float(x_uint8[:EXAMPLE_ROWS].repeat(EXAMPLE_ROWS, 1, 1, 1)[:EXAMPLE_ROWS].clone())


def quantize_student(student: nn.Module, example: torch.Tensor, out_path: str | Path, plan: CalibrationPlan,
                     data_dir: str | Path, samples: int, seed: int, opset: int) -> Path:
    """FP32 ONNX export of `student` by the dynamo exporter (as export's model.onnx), then
    `quantize_onnx` with `plan`'s calibration images. Deterministic: same student, plan and seed →
    the same bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = backends.to_onnx(student, example, Path(tmp) / "fp32.onnx", opset)
        return quantize_onnx(fp32, out_path, calibration_reader(plan, data_dir, samples, seed))


def build_student_int8(student: nn.Module, method: str, student_dir: str | Path, generator_dir: str | Path | None,
                       data_dir: str | Path, test_x: torch.Tensor, out_path: str | Path, choice: str, samples: int,
                       seed: int, opset: int) -> dict[str, str]:
    """The run's INT8 student, written to `out_path`: calibrated by `calibration_plan(choice, …)` and
    quantised once — evaluate builds it (and times it); export ships that very file. Returns what
    reports say of it: its digest, its calibration source and why, the layers kept in FP32."""
    plan = calibration_plan(choice, method, student_dir, generator_dir)
    quantize_student(student, example_input(test_x), out_path, plan, data_dir, samples, seed, opset)
    return {"file": Path(out_path).name, "sha256_16": file_hash(out_path, "sha256")[:16], "calibration": plan.source,
            "calibration_why": plan.why, "layers": float_layers_text(out_path)}


def int8_accuracy(int8_path: str | Path, student: nn.Module, x_uint8: torch.Tensor, labels: torch.Tensor,
                  batch_size: int = 1000) -> dict[str, float]:
    """The INT8 model (a fresh ONNX Runtime session on the file) against the FP32 PyTorch student
    on the same images: both accuracies, the drop, and top-1 agreement between the two."""
    run = backends.onnx_runner(backends.onnx_session(int8_path))
    int8_logits, fp32_logits = [], []
    with torch.inference_mode():
        for start in range(0, len(labels), batch_size):
            x = as_float(x_uint8[start : start + batch_size])
            int8_logits.append(run(x))
            fp32_logits.append(student(x).numpy())
    q, f = np.concatenate(int8_logits), np.concatenate(fp32_logits)
    y = labels.numpy()
    acc_q, acc_f = float((q.argmax(1) == y).mean()), float((f.argmax(1) == y).mean())
    return {"int8_test_acc": acc_q, "fp32_test_acc": acc_f, "int8_acc_drop": acc_f - acc_q,
            "int8_agreement": float((q.argmax(1) == f.argmax(1)).mean()),
            "int8_max_abs_diff": float(np.abs(q - f).max()), "int8_test_samples": float(len(y))}


SAME_SPEED = 0.05  # INT8/FP32 throughput within ±5 %: the same speed, given interleaved-median noise


def speed_verdict(int8_vs_fp32: float) -> str:
    """What evaluate's report and the model card say about the INT8 file's speed, from its
    batch-256 throughput over the FP32 student's. A ratio near 1 is called equal, not "faster"
    or "NOT faster" by noise (the default student's INT8 runs at its FP32 speed)."""
    if int8_vs_fp32 > 1 + SAME_SPEED:
        return "faster than the FP32 student"
    if int8_vs_fp32 < 1 - SAME_SPEED:
        return ("NOT faster than the FP32 student here — prefer model.onnx where speed matters, model.int8.onnx "
                "where size matters")
    return ("as fast as the FP32 student (within 5 %) — model.int8.onnx pays only where size matters")


def check_int8(numbers: dict[str, float], max_drop: float) -> None:
    """Raise ExportError naming both accuracies when INT8 loses more than `max_drop`."""
    if not numbers["int8_acc_drop"] <= max_drop:  # `not ≤` also rejects NaN
        raise ExportError(
            f"INT8 model loses too much accuracy: test accuracy {numbers['int8_test_acc'] * 100:.2f} % vs the FP32 "
            f"student's {numbers['fp32_test_acc'] * 100:.2f} % (drop {numbers['int8_acc_drop'] * 100:.2f} points, "
            f"allowed export.int8_max_drop = {max_drop * 100:.2f} points; agreement with FP32 "
            f"{numbers['int8_agreement'] * 100:.2f} % on {int(numbers['int8_test_samples'])} test images). Nothing "
            "was exported. Try more calibration samples (export.int8_calibration_samples), quantisation-aware "
            "distillation (distill.qat=true), or set export.int8=false to ship FP32 only.")
