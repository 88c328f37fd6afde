"""The INT8 student: calibration only on generated samples for gan / data-free methods, the
accuracy check that export holds it to, and a fresh ONNX Runtime session reproducing the
reported accuracy. Quantisation-aware distillation (distill.qat) at the end."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from helpers import fast_params, make_world
from onnx import numpy_helper

from gandistill import qat, quantization
from gandistill.data.dataset import as_float, load_meta, load_split, noise_images
from gandistill.errors import DataError, ExportError
from gandistill.evaluation import backends
from gandistill.model_files import FREE_GENERATOR_DIR, load_classifier, load_generator
from gandistill.nets import build_classifier
from gandistill.results import write_result
from gandistill.stages import distill, export


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("int8")
    paths = make_world(root)
    paths["root"] = root
    write_result(root / "evaluation", {"metrics": {"student_test_acc": 1.0, "teacher_test_acc": 1.0}})
    paths["evaluation"] = root / "evaluation"
    # a data_free student, distilled for real (a few steps): distill must save its generator
    params = fast_params()
    params.distill = params.distill.model_copy(update={"method": "data_free", "steps": 30, "eval_every": 15,
                                                       "batch_size": 32})
    params.runtime.checkpoint_every = 30
    distill.run(params, paths["data"], paths["teacher"], None, root / "data_free")
    paths["data_free"] = root / "data_free"
    return paths


def unreadable_copy(data_dir, dst):
    """The dataset's meta.json, but every split replaced by a folder of the same name: any
    attempt to read an image (train, val or test) fails, also for root, who ignores chmod."""
    dst.mkdir()
    shutil.copy(data_dir / "meta.json", dst / "meta.json")
    for split in ("train", "val", "test"):
        (dst / f"{split}.npz").mkdir()
    with pytest.raises(DataError, match="not found"):
        load_split(dst, "train")
    return dst


def test_distill_saves_the_data_free_generator_with_its_sampling_mode(world):
    folder = world["data_free"] / FREE_GENERATOR_DIR
    blob = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
    assert blob["sampling"] == "batch_statistics" and blob["output"] == "normalised"
    generator = load_generator(folder)
    assert generator.to_pixels.mode == "normalised"  # its BatchNorm and the data's mean/std came back


@pytest.mark.parametrize("method", ["gan", "data_free"])
def test_calibration_reads_only_generated_samples(world, tmp_path, method):
    blocked = unreadable_copy(world["data"], tmp_path / "blocked")
    student_dir = world["student"] if method == "gan" else world["data_free"]
    generator_dir = world["generator"] if method == "gan" else student_dir / FREE_GENERATOR_DIR
    plan = quantization.calibration_plan("auto", method, student_dir, world["generator"] if method == "gan" else None)
    assert plan.source == "generated" and plan.generator_dir == generator_dir and "no real image" in plan.why
    batches = []
    reader = quantization.calibration_reader(plan, blocked, 100, seed=3)
    while (feed := reader.get_next()) is not None:
        batches.append(feed["images"])
    images = np.concatenate(batches)
    assert images.shape == (100, 1, 16, 16)
    # they are the generator's samples, class-balanced, drawn the way distill drew them
    again = np.concatenate(list(quantization.generated_batches(generator_dir, 100,
                                                               3 + quantization.CALIBRATION_SEED_OFFSET)))
    np.testing.assert_array_equal(images, again)
    # the whole quantisation runs with every real split unreadable
    student = load_classifier(student_dir)
    example = as_float(torch.rand(2, 1, 16, 16).mul(255).to(torch.uint8))
    out = quantization.quantize_student(student, example, tmp_path / "q.onnx", plan, blocked, 64, 0, 18)
    assert out.stat().st_size > 0


def test_real_calibration_reads_the_train_split_and_is_refused_for_data_free(world, tmp_path):
    blocked = unreadable_copy(world["data"], tmp_path / "blocked")
    plan = quantization.calibration_plan("auto", "kd", world["student"], None)  # kd has no generator
    assert plan.source == "real"
    with pytest.raises(DataError):  # the blocked copy proves this path really reads real images
        quantization.calibration_reader(plan, blocked, 64, 0).get_next()
    assert quantization.calibration_reader(plan, world["data"], 64, 0).get_next()["images"].shape == (64, 1, 16, 16)
    from gandistill.errors import ConfigError

    with pytest.raises(ConfigError, match="no real image"):
        quantization.calibration_plan("real", "data_free", world["data_free"], None)
    with pytest.raises(DataError, match="no generator found"):
        quantization.calibration_plan("auto", "gan", world["student"], None)


def test_noise_student_is_calibrated_on_noise_without_reading_an_image(world, tmp_path):
    """`noise` has no generator and may not touch real images: it is calibrated on the Gaussian
    images it was trained on, built from meta.json's mean/std alone."""
    blocked = unreadable_copy(world["data"], tmp_path / "blocked")
    plan = quantization.calibration_plan("auto", "noise", world["student"], None)
    assert plan.source == "noise" and "no real image" in plan.why
    reader = quantization.calibration_reader(plan, blocked, 100, seed=5)
    batches = []
    while (feed := reader.get_next()) is not None:
        batches.append(feed["images"])
    images = np.concatenate(batches)
    assert images.shape == (100, 1, 16, 16) and images.min() >= 0.0 and images.max() <= 1.0
    expected = noise_images(load_meta(world["data"]), 100,
                            generator=torch.Generator().manual_seed(5 + quantization.CALIBRATION_SEED_OFFSET))
    np.testing.assert_array_equal(images, expected.numpy())
    with pytest.raises(DataError, match="no generator found"):
        quantization.calibration_plan("generated", "noise", world["student"], None)


@pytest.fixture(scope="module")
def exported(world):
    out = world["root"] / "exported"
    result = export.run(fast_params(), world["data"], world["student"], world["evaluation"], out, None,
                        world["generator"])
    return out, result


def test_int8_model_runs_in_a_fresh_session_with_the_reported_accuracy(world, exported):
    out, result = exported
    assert result["onnx_int8"] == "model.int8.onnx" and result["int8"]["calibration"] == "generated"
    session = ort.InferenceSession(str(out / "model.int8.onnx"), providers=["CPUExecutionProvider"])
    test = load_split(world["data"], "test")
    logits = session.run(None, {session.get_inputs()[0].name: test.x.astype(np.float32) / 255.0})[0]
    assert float((logits.argmax(1) == test.y).mean()) == result["int8_test_acc"]
    assert result["int8_test_acc"] >= result["int8"]["fp32_test_acc"] - 0.003
    # really INT8: quantised weights, per output channel for the convolutions
    graph = onnx.load(str(out / "model.int8.onnx")).graph
    ops = {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    int8_weights = [i for i in graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert len(int8_weights) >= 5  # 2 convs + 3 linear layers of LeNet-5-half
    scales = {i.name: numpy_helper.to_array(i) for i in graph.initializer if i.name.endswith("_scale")}
    assert any(s.ndim == 1 and s.size > 1 for s in scales.values()), "expected per-channel weight scales"
    card = (out / "model_card.md").read_text()
    assert "| student INT8 | `model.int8.onnx` |" in card and "generated samples only" in card
    # at 16×16 no layer of LeNet-5-half reaches MIN_INT8_REDUCTION: every layer is quantised, and said so
    assert set(quantization.layer_precision(out / "model.int8.onnx").values()) == {"int8"}
    assert "all 5 weight layers in int8" in card


def _quantised(arch, shape, tmp_path):
    torch.manual_seed(0)
    net = build_classifier(arch, shape[0], shape[1:], 10).eval()
    fp32 = backends.to_onnx(net, torch.rand(2, *shape), tmp_path / f"{arch}.onnx")  # the dynamo graph, as quantization
    images = np.random.default_rng(0).random((64, *shape), dtype=np.float32)
    return quantization.quantize_onnx(fp32, tmp_path / f"{arch}.int8.onnx", quantization._Reader(iter([images])))


RESNET8_W8_FLOAT = ["stem.0", "stages.0.0.conv1", "stages.0.0.conv2", "stages.1.0.conv1", "stages.1.0.shortcut.0"]


@pytest.mark.parametrize("arch, shape, kept_float", [
    ("lenet5_half", (1, 28, 28), ["conv1", "conv2"]),  # reductions 1·5·5 = 25, 3·5·5 = 75; fc1 200
    ("lenet5", (1, 28, 28), ["conv1", "conv2"]),  # conv2 (150) reads a max-pool: int8 from fc1 on
    ("resnet8", (3, 32, 32), ["stem.0"]),  # 3·3·3 = 27; every later conv ≥ 16·3·3 = 144
    # 9, 72, 72; stage 1: conv1 72 and its 1×1 shortcut 8 beside it stay float, conv2 (144) pays
    ("resnet8_w8", (1, 28, 28), RESNET8_W8_FLOAT),
])
def test_leading_layers_below_the_reduction_threshold_stay_float(arch, shape, kept_float, tmp_path):
    path = _quantised(arch, shape, tmp_path)
    precision = quantization.layer_precision(path)  # by module: the dynamo graph names weights after them
    assert sorted(name for name, kind in precision.items() if kind == "float") == sorted(kept_float)
    assert sum(kind == "int8" for kind in precision.values()) == len(precision) - len(kept_float) > 0
    graph = onnx.load(str(path)).graph
    weights = {i.name: i for i in graph.initializer}
    producers = {out: n for n in graph.node for out in n.output}
    for node in graph.node:  # a float layer reads its FP32 weight directly; an int8 one through DequantizeLinear
        if node.op_type in quantization.WEIGHT_OPS and quantization.layer_name(node, producers) in kept_float:
            assert weights[node.input[1]].data_type == onnx.TensorProto.FLOAT
    dequantized = [n for n in graph.node if n.op_type == "DequantizeLinear"]
    assert any(weights[n.input[0]].data_type == onnx.TensorProto.INT8 for n in dequantized if n.input[0] in weights)
    text = quantization.float_layers_text(path)
    assert all(name in text for name in kept_float) and f"below {quantization.MIN_INT8_REDUCTION}" in text
    # the file runs in a fresh session
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.run(None, {session.get_inputs()[0].name: np.zeros((3, *shape), np.float32)})[0].shape == (3, 10)


def _float_weights(net, shape, tmp_path, legacy):
    """The weights of the layers `float_prefix` keeps FP32 in one exporter's pre-processed graph."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    raw = backends.to_onnx(net, torch.rand(2, *shape), tmp_path / f"{legacy}.onnx", legacy=legacy)
    quant_pre_process(str(raw), str(tmp_path / f"{legacy}.pre.onnx"), skip_symbolic_shape=False)
    model = onnx.load(str(tmp_path / f"{legacy}.pre.onnx"))
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    kept = set(quantization.float_prefix(model))
    return [weights[n.input[1]] for n in model.graph.node if n.name in kept]


@pytest.mark.parametrize("arch, shape", [("lenet5_half", (1, 28, 28)), ("resnet8_w8", (1, 28, 28)),
                                         ("resnet20_w16", (3, 32, 32))])
def test_both_exporters_graphs_keep_the_same_layers_float(arch, shape, tmp_path):
    """The rule reads the data flow, not the node order: the TorchScript-based exporter writes a
    residual block's shortcut before its first conv, the dynamo one after its second — an order-based
    prefix kept resnet8_w8's stage-1 shortcut (reduction 8) float on one graph and int8 on the other.
    Layers are matched by their (BatchNorm-folded) weights, the one thing both graphs share."""
    torch.manual_seed(0)
    net = build_classifier(arch, shape[0], shape[1:], 10).eval()
    legacy = _float_weights(net, shape, tmp_path, legacy=True)
    dynamo = _float_weights(net, shape, tmp_path, legacy=False)
    assert len(legacy) == len(dynamo) > 0
    for weight in dynamo:
        assert any(w.shape == weight.shape and np.allclose(w, weight, atol=1e-6) for w in legacy)


def test_threshold_moves_the_boundary(tmp_path):
    torch.manual_seed(0)
    fp32 = backends.to_onnx(build_classifier("lenet5_half", 1, (28, 28), 10).eval(), torch.rand(2, 1, 28, 28),
                            tmp_path / "s.onnx")  # as quantization exports it
    model = onnx.load(str(fp32))
    producers = {out: n for n in model.graph.node for out in n.output}
    nodes = {n.name: n for n in model.graph.node}

    def kept(min_reduction):
        return [quantization.layer_name(nodes[name], producers)
                for name in quantization.float_prefix(model, min_reduction=min_reduction)]

    assert kept(1) == []  # the first layer already pays
    assert kept(20) == []  # 25: conv1 pays already
    # conv2 (75) would pay at 50, but it reads a max-pool's output: the border moves on to fc1
    assert kept(50) == ["conv1", "conv2"]
    assert kept(10_000) == []  # none pays: quantise all


def test_speed_verdict_calls_a_tie_a_tie():
    assert quantization.speed_verdict(1.8).startswith("faster")
    assert quantization.speed_verdict(0.6).startswith("NOT faster")
    for ratio in (0.97, 1.0, 1.03):  # interleaved-median noise: neither "faster" nor "NOT faster"
        assert quantization.speed_verdict(ratio).startswith("as fast as")


def tamper_int8(src, dst):
    """Negate the largest int8 weight tensor: a silently broken INT8 model."""
    model = onnx.load(str(src))
    idx = max((i for i, t in enumerate(model.graph.initializer) if t.data_type == onnx.TensorProto.INT8),
              key=lambda i: numpy_helper.to_array(model.graph.initializer[i]).size)
    array = numpy_helper.to_array(model.graph.initializer[idx])
    flipped = np.clip(-array.astype(np.int16), -127, 127).astype(np.int8)
    model.graph.initializer[idx].CopyFrom(numpy_helper.from_array(flipped, model.graph.initializer[idx].name))
    onnx.save(model, str(dst))


def test_tampered_int8_model_fails_the_check_with_both_numbers(world, exported, tmp_path):
    out, _ = exported
    tamper_int8(out / "model.int8.onnx", tmp_path / "bad.onnx")
    test = load_split(world["data"], "test")
    numbers = quantization.int8_accuracy(tmp_path / "bad.onnx", load_classifier(world["student"]),
                                         torch.from_numpy(test.x), torch.from_numpy(test.y))
    with pytest.raises(ExportError) as err:
        quantization.check_int8(numbers, 0.003)
    message = str(err.value)
    assert f"test accuracy {numbers['int8_test_acc'] * 100:.2f} %" in message
    assert f"the FP32 student's {numbers['fp32_test_acc'] * 100:.2f} %" in message
    assert "export.int8_max_drop = 0.30 points" in message and "agreement with FP32" in message


def test_failed_int8_check_leaves_no_output(world, tmp_path, monkeypatch):
    real = quantization.quantize_onnx

    def broken(fp32_path, out_path, reader):
        real(fp32_path, out_path, reader)
        tamper_int8(out_path, out_path)
        return out_path

    monkeypatch.setattr(quantization, "quantize_onnx", broken)
    out = tmp_path / "exported"
    with pytest.raises(ExportError, match="INT8 model loses too much accuracy"):
        export.run(fast_params(), world["data"], world["student"], world["evaluation"], out, None, world["generator"])
    assert not out.exists() and not list(tmp_path.iterdir())


# -- quantisation-aware distillation ------------------------------------------------------------

def test_fake_quant_rounds_like_int8_and_leaves_a_float_model():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 3))
    x = torch.rand(16, 1, 8, 8)
    reference, keys = model(x).detach(), set(model.state_dict())
    fake = qat.FakeQuant(model)
    model.train()
    out = model(x)
    assert not torch.equal(out, reference)
    # the logits are on a uint8 grid: at most 256 levels, evenly spaced
    levels = torch.unique(out.detach())
    assert len(levels) <= 256
    steps = torch.diff(levels) / torch.diff(levels).min()
    assert torch.allclose(steps, steps.round(), atol=1e-3)
    out.sum().backward()  # straight-through gradients reach the float weights
    assert model[0].weight.grad is not None and model[0].weight.grad.abs().sum() > 0
    w = qat.fake_quant_weight(model[0].weight.detach())
    per_channel = w.flatten(1) / (model[0].weight.detach().abs().flatten(1).amax(1, keepdim=True) / 127)
    assert torch.allclose(per_channel, per_channel.round(), atol=1e-3)
    fake.remove()
    assert set(model.state_dict()) == keys and torch.allclose(model(x), reference)


def test_qat_distillation_selects_inside_the_fake_quant_phase(world, tmp_path):
    params = fast_params()
    params.distill = params.distill.model_copy(update={"method": "kd", "steps": 40, "eval_every": 10,
                                                       "batch_size": 32, "qat": True, "qat_fraction": 0.25})
    params.runtime.checkpoint_every = 40
    result = distill.run(params, world["data"], world["teacher"], None, tmp_path / "student")
    assert result["best_step"] >= 30  # steps 0-29 are float; only evaluations from step 30 on may be chosen
    evaluated = [h["step"] for h in result["history"] if "val_acc" in h]
    assert min(evaluated) < 30  # earlier steps were evaluated (and logged), just not selectable
    student = load_classifier(tmp_path / "student")  # a plain float model
    assert set(student.state_dict()) == set(load_classifier(world["student"]).state_dict())
