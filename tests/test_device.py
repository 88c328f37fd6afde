"""Device placement: every tensor the training and evaluation code creates follows the
model's device.

No GPU here, so the CPU-only check makes a stray tensor fail loudly another way: while the
training loop runs a stage's step and eval functions, torch's default device is `meta`. A
tensor created without `device=` (the bug that crashes a CUDA run: a CPU tensor meeting CUDA
ones, e.g. `torch.stack` of a CUDA mean and a CPU `torch.tensor(0.0)`) then lands on `meta`
and fails at its first use with the model's CPU tensors — the same fault, same place. The
`cuda` variants run the real thing where a GPU is present and are skipped otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gandistill.config import load_params
from gandistill.loop import TrainingLoop
from gandistill.methods import METHOD_NAMES
from gandistill.stages import distill, train_gan, train_teacher
from gandistill.stages.distill.selection import macro_agreement

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
TINY = ["runtime.progress=false", "runtime.checkpoint_every=5", "teacher.epochs=1", "teacher.batch_size=32",
        "gan.steps=6", "gan.batch_size=32", "gan.eval_every=3", "gan.eval_samples=64", "gan.hidden=32", "gan.nz=16",
        "distill.steps=6", "distill.batch_size=32", "distill.eval_every=3", "distill.generator_width=8"]
METHODS = {
    "scratch": [], "kd": ["distill.hint_weight=1", "distill.rkd_distance_weight=1", "distill.rkd_angle_weight=1"],
    "gan": ["distill.mixup=0.5"], "gan_real": ["distill.qat=true"], "data_free": ["distill.hint_weight=1"], "dafl": [],
    "adversarial": [], "noise": [],
}
TRANSFER_METHODS = ["cyclegan", "pixelda", "source_augmented", "target_kd", "target_supervised"]  # need a target domain


def test_the_device_checks_cover_every_distill_method() -> None:
    assert set(METHODS) | set(TRANSFER_METHODS) == set(METHOD_NAMES)


@pytest.fixture
def stray_tensors_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every step_fn / eval_fn with `meta` as torch's default device."""
    run = TrainingLoop.run

    def on_meta(fn):
        def call(*args):
            with torch.device("meta"):
                return fn(*args)
        return call

    def patched(self, step_fn, eval_fn=None, health_fn=None):
        return run(self, on_meta(step_fn), on_meta(eval_fn) if eval_fn else None, health_fn)

    monkeypatch.setattr(TrainingLoop, "run", patched)


def _run_all_stages(dataset: Path, out: Path, *overrides: str) -> None:
    params = load_params(None, [*TINY, *overrides])
    train_teacher.run(params, dataset, out / "teacher")
    train_gan.run(params, dataset, out / "teacher", out / "generator")
    # auto's pick for colour data and its recipe (hinge, DiffAugment's random shifts / masks / colours)
    train_gan.run(load_params(None, [*TINY, *overrides, "gan.arch=resnet"]), dataset, out / "teacher",
                  out / "generator-resnet")
    for method, extra in METHODS.items():
        method_params = load_params(None, [*TINY, *overrides, f"distill.method={method}", *extra])
        distill.run(method_params, dataset, out / "teacher", out / "generator", out / method)
    _run_target_domain(out / "transfer", *overrides)


def _run_target_domain(out: Path, *overrides: str) -> None:
    """The translator stage and the target-domain methods, on two tiny domains."""
    from helpers import train_transfer_world, transfer_domains

    out.mkdir(parents=True)
    domains = transfer_domains(out)
    # train_translator builds the translator distill.method names: one world per translator method
    worlds = {name: train_transfer_world(load_params(None, [*TINY, *domains, f"distill.method={name}", *overrides]),
                                         out / f"world-{name}") for name in ("cyclegan", "pixelda")}
    for method in TRANSFER_METHODS:
        params = load_params(None, [*TINY, *domains, f"distill.method={method}", *overrides])
        world = worlds.get(method, worlds["cyclegan"])
        distill.run(params, world["data"], world["teacher"], None, out / method,
                    translator_dir=world["translator"] if method in worlds else None)


def test_the_meta_default_device_catches_a_stray_tensor(stray_tensors_fail: None, tmp_path: Path) -> None:
    """The check itself: the old macro_agreement (a CPU torch.tensor(0.0) for a class missing
    from the bank, stacked with the device's per-class means) fails under it."""
    def old_macro_agreement(student_pred: torch.Tensor, teacher_pred: torch.Tensor, k: int) -> float:
        per_class = [(student_pred[teacher_pred == c] == c).float().mean() if (teacher_pred == c).any()
                     else torch.tensor(0.0) for c in range(k)]
        return float(torch.stack(per_class).mean())

    loop = TrainingLoop("probe", 1, None, progress=False)
    preds = torch.tensor([0, 1, 1, 0])  # class 2 missing
    with pytest.raises((RuntimeError, NotImplementedError)):
        loop.run(lambda step: {"loss": old_macro_agreement(preds, preds, 3)})
    assert TrainingLoop("probe", 1, None, progress=False).run(
        lambda step: {"loss": macro_agreement(preds, preds, 3)}).steps == 1


@pytest.mark.slow
def test_every_stage_and_method_creates_its_tensors_on_the_models_device(stray_tensors_fail: None,
                                                                          tiny_dataset: Path,
                                                                          tmp_path: Path) -> None:
    _run_all_stages(tiny_dataset, tmp_path)


def test_the_hint_regressor_is_sized_on_the_students_device() -> None:
    """AddOns probes the student and teacher with a batch on their device (a CPU probe of a
    CUDA student crashed before the first step)."""
    from gandistill.data.dataset import DatasetMeta
    from gandistill.nets import build_classifier

    meta = DatasetMeta(class_names=list("abcd"), channels=1, height=16, width=16, mean=[0.5], std=[0.25],
                       source="test")
    with torch.device("meta"):
        student = build_classifier("lenet5_half", 1, (16, 16), 4)
        teacher = build_classifier("lenet5", 1, (16, 16), 4)
    addons = distill.AddOns(load_params(None, ["distill.hint_weight=1"]), student, teacher, meta)
    assert addons.regressor is not None


@CUDA
@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_every_stage_and_method_runs_on_cuda(tiny_dataset: Path, tmp_path: Path, precision: str) -> None:
    _run_all_stages(tiny_dataset, tmp_path, "runtime.device=cuda", f"runtime.precision={precision}")
