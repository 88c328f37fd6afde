"""Bring your own data and teacher: shapes derived from the data through every training
stage, imported TorchScript / state-dict teachers, and the errors they raise.

Stage-level tests call the stages directly with tiny step counts (seconds each). The
`test_e2e_*` tests run the whole pipeline through the CLI (`-k e2e` selects them; ~1 min each).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gandistill.config import Params, load_params
from gandistill.errors import ConfigError, DataError
from gandistill.model_files import load_classifier, load_model_file
from gandistill.nets import ConditionalDiscriminator, ConditionalGenerator, build_classifier
from gandistill.stages import distill, prepare_data, train_gan, train_teacher

ROOT = Path(__file__).resolve().parents[1]
TINY = ["teacher.min_accuracy=0",  # a tiny budget's teacher: the teaching bar is off
        "teacher.epochs=1", "teacher.batch_size=32", "gan.steps=4", "gan.eval_every=2", "gan.eval_samples=20",
        "gan.batch_size=16", "distill.steps=4", "distill.eval_every=2", "distill.batch_size=16",
        "runtime.checkpoint_every=100"]


def patterns(n: int, k: int, h: int, w: int | None = None, c: int = 1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 N×C×H×W: class j = a bright bar at a class-specific row (learnable in a few steps)."""
    w = w or h
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    rng.shuffle(y)
    x = rng.integers(0, 60, size=(n, c, h, w)).astype(np.uint8)
    for i, label in enumerate(y):
        row = (label * h) // k
        x[i, :, row : row + max(1, h // k), :] = 230
        if c == 3:
            x[i, label % 3] //= 2
    return x, y.astype(np.int64)


def save_imagefolder(root: Path, x: np.ndarray, y: np.ndarray, names: list[str]) -> None:
    from PIL import Image

    for i, (img, label) in enumerate(zip(x, y, strict=True)):
        folder = root / names[label]
        folder.mkdir(parents=True, exist_ok=True)
        pixels = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
        Image.fromarray(pixels).save(folder / f"{i:04d}.{('png', 'jpg')[i % 2]}")


def params_for(*overrides: str) -> Params:
    return load_params(ROOT / "params.yaml", [*TINY, *overrides], "smoke")


def npz_dataset(tmp_path: Path, n: int, k: int, h: int, w: int | None = None, c: int = 1) -> Path:
    x, y = patterns(n, k, h, w, c)
    np.savez(tmp_path / "data.npz", x=x.transpose(0, 2, 3, 1), y=y,
             class_names=np.array([f"c{i}" for i in range(k)]))
    return tmp_path / "data.npz"


def prepared(tmp_path: Path, params: Params) -> Path:
    prepare_data.run(params, tmp_path / "prepared")
    return tmp_path / "prepared"


# -- networks scale to the data ---------------------------------------------------------------

@pytest.mark.parametrize("c,size,k", [(1, (8, 8), 3), (1, (16, 16), 20), (3, (32, 32), 3), (3, (64, 64), 20),
                                      (1, (24, 32), 3), (3, (9, 13), 20)])
def test_gan_and_resnets_fit_any_size_channels_and_classes(c: int, size: tuple[int, int], k: int) -> None:
    gen, disc = ConditionalGenerator(8, k, c, size, ngf=8), ConditionalDiscriminator(k, c, size, ndf=8)
    images, labels = gen.sample(3)
    assert images.shape == (3, c, *size)
    logit, phi = disc(images, labels)
    assert logit.shape == (3,) and phi.shape == (3, 16)
    for arch in ("resnet8", "resnet20_w8"):
        assert build_classifier(arch, c, size, k)(images).shape == (3, k)


def test_resnet_names_set_depth_and_width() -> None:
    wide, slim = build_classifier("resnet14_w32", 3, (32, 32), 10), build_classifier("resnet8_w8", 3, (32, 32), 10)
    assert len(wide.stages[0]) == 2 and wide.stages[0][0].conv1.out_channels == 32
    assert len(slim.stages[0]) == 1 and slim.stages[2][0].conv1.out_channels == 32
    with pytest.raises(ConfigError, match="6n\\+2"):
        build_classifier("resnet10", 3, (32, 32), 10)


def test_lenet_on_tiny_images_fails_before_anything_is_written_and_names_the_key(tmp_path: Path) -> None:
    source = ["data.source=npz", f"data.path={npz_dataset(tmp_path, 60, 3, 8)}"]
    with pytest.raises(ConfigError, match=r"teacher.arch=lenet5 does not fit .*use a resnet"):
        prepare_data.run(params_for(*source, "teacher.arch=lenet5"), tmp_path / "prepared")
    assert not (tmp_path / "prepared").exists()
    data = prepared(tmp_path, params_for(*source))  # auto: a pair that fits 8×8
    with pytest.raises(ConfigError, match=r"distill.student_arch=lenet5_half does not fit"):
        train_teacher.run(params_for(*source, "distill.student_arch=lenet5_half"), data, tmp_path / "teacher")
    assert not (tmp_path / "teacher" / "model.pt").exists()


# -- the training stages on the data matrix ---------------------------------------------------

def _chain(tmp_path: Path, params: Params) -> dict:
    data = prepared(tmp_path, params)
    teacher = train_teacher.run(params, data, tmp_path / "teacher")
    gan = train_gan.run(params, data, tmp_path / "teacher", tmp_path / "gen")
    student = distill.run(params, data, tmp_path / "teacher", tmp_path / "gen", tmp_path / "student")
    meta = json.loads((data / "meta.json").read_text())
    return {"teacher": teacher, "gan": gan, "student": student, "meta": meta}


@pytest.mark.parametrize("source,k,h,w,c,pair", [
    ("npz", 3, 32, 32, 3, ("resnet8_w8", "resnet8_w4")),    # RGB 32×32, 3 classes
    ("imagefolder", 20, 16, 16, 1, ("lenet5", "lenet5_half")),  # grey 16×16, 20 classes
    ("npz", 3, 24, 32, 1, ("resnet8_w8", "resnet8_w4")),    # non-square
    ("npz", 3, 8, 8, 1, ("resnet8_w8", "resnet8_w4")),      # the smallest size
])
def test_stages_derive_shapes_from_the_data(tmp_path: Path, source: str, k: int, h: int, w: int, c: int,
                                            pair: tuple[str, str]) -> None:
    if source == "npz":
        path = npz_dataset(tmp_path, 20 * k, k, h, w, c)
    else:
        x, y = patterns(10 * k, k, h, w, c)
        path = tmp_path / "imgs"
        save_imagefolder(path, x, y, [f"class{i:02d}" for i in range(k)])
    params = params_for(f"data.source={source}", f"data.path={path}", f"teacher.arch={pair[0]}",
                        f"distill.student_arch={pair[1]}")
    out = _chain(tmp_path, params)
    assert out["meta"]["channels"] == c and (out["meta"]["height"], out["meta"]["width"]) == (h, w)
    assert len(out["meta"]["class_names"]) == k
    student = load_classifier(tmp_path / "student")
    assert student(torch.rand(2, c, h, w)).shape == (2, k)
    assert torch.allclose(student.mean.flatten(), torch.tensor(out["meta"]["mean"]))  # raw pixels in
    assert load_model_file(tmp_path / "student")["class_names"] == out["meta"]["class_names"]
    assert out["teacher"]["params"] > out["student"]["params"]


# -- bring your own teacher -------------------------------------------------------------------

@pytest.fixture
def rgb_data(tmp_path: Path) -> Path:
    params = params_for("data.source=npz", f"data.path={npz_dataset(tmp_path, 90, 3, 16, c=3)}")
    return prepared(tmp_path, params)


def _trained_teacher(data: Path, arch: str = "resnet8_w8") -> torch.nn.Module:
    meta = json.loads((data / "meta.json").read_text())
    model = build_classifier(arch, 3, (16, 16), 3, mean=meta["mean"], std=meta["std"])
    with torch.no_grad():  # deterministic non-trivial BN statistics, to check they survive import
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.9, 1.1)
    return model.eval()


def _import(tmp_path: Path, data: Path, source: str, file: Path, *extra: str) -> dict:
    params = params_for("data.source=npz", f"data.path={tmp_path / 'data.npz'}", f"teacher.source={source}",
                        f"teacher.path={file}", "distill.student_arch=resnet8_w4", *extra)
    return train_teacher.run(params, data, tmp_path / "teacher")


def test_torchscript_teacher_logits_only_runs_gan_and_distill(tmp_path: Path, rgb_data: Path) -> None:
    model = _trained_teacher(rgb_data)
    traced = torch.jit.trace(model, torch.rand(2, 3, 16, 16))
    torch.jit.save(traced, str(tmp_path / "teacher.ts"))
    result = _import(tmp_path, rgb_data, "torchscript", tmp_path / "teacher.ts")
    assert result["source"] == "torchscript" and result["steps"] == 0 and result["arch"] == "torchscript:teacher.ts"
    assert 0 <= result["test_acc"] <= 1
    loaded = load_classifier(tmp_path / "teacher")
    assert not hasattr(loaded, "forward_features")  # logits only, whatever the file had
    x = torch.rand(4, 3, 16, 16)
    assert torch.allclose(loaded(x), model(x), atol=1e-5)
    params = params_for("data.source=npz", f"data.path={tmp_path / 'data.npz'}", "teacher.source=torchscript",
                        f"teacher.path={tmp_path / 'teacher.ts'}", "distill.student_arch=resnet8_w4")
    gan = train_gan.run(params, rgb_data, tmp_path / "teacher", tmp_path / "gen")
    assert gan["steps"] == 4 and np.isfinite(gan["selected_fid"])
    # colour data, gan.* at auto: the ResNet pair with the recipe measured for it (archs.GAN_RECIPES)
    assert gan["recipe"] == {"arch": "resnet", "loss": "hinge", "augment": ["color", "translation", "cutout"],
                             "teacher_weight": 0.0}
    for method in ("gan", "kd"):
        p = params.model_copy(update={"distill": params.distill.model_copy(update={"method": method})})
        student = distill.run(p, rgb_data, tmp_path / "teacher", tmp_path / "gen", tmp_path / f"s_{method}")
        assert 0 <= student["test_acc"] <= 1


def test_scripted_gandistill_teacher_keeps_its_features(tmp_path: Path, rgb_data: Path) -> None:
    torch.jit.save(torch.jit.script(_trained_teacher(rgb_data)), str(tmp_path / "teacher.ts"))
    _import(tmp_path, rgb_data, "torchscript", tmp_path / "teacher.ts", "distill.method=dafl")
    logits, feats = load_classifier(tmp_path / "teacher").forward_features(torch.rand(2, 3, 16, 16))
    assert logits.shape == (2, 3) and feats[-1].ndim == 2


@pytest.mark.parametrize("setting", ["distill.method=dafl", "distill.hint_weight=1", "distill.attention_weight=1",
                                     "distill.rkd_angle_weight=1"])
def test_logits_only_teacher_with_feature_methods_is_a_config_error(tmp_path: Path, rgb_data: Path,
                                                                    setting: str) -> None:
    torch.jit.save(torch.jit.trace(_trained_teacher(rgb_data), torch.rand(2, 3, 16, 16)), str(tmp_path / "t.ts"))
    with pytest.raises(ConfigError, match=rf"{setting.split('=')[0]}.* need teacher features.*logits only"):
        _import(tmp_path, rgb_data, "torchscript", tmp_path / "t.ts", setting)


def test_state_dict_teacher_plain_ddp_and_gandistill_file(tmp_path: Path, rgb_data: Path) -> None:
    model = _trained_teacher(rgb_data)
    x = torch.rand(4, 3, 16, 16)
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, tmp_path / "ddp.pt")
    torch.save({"state_dict": model.state_dict(), "arch": "resnet8_w8", "epoch": 3}, tmp_path / "blob.pt")
    for name in ("plain.pt", "ddp.pt", "blob.pt"):
        result = _import(tmp_path, rgb_data, "state_dict", tmp_path / name, "teacher.arch=resnet8_w8")
        assert result["arch"] == "resnet8_w8"
        loaded = load_classifier(tmp_path / "teacher")
        assert torch.allclose(loaded(x), model(x), atol=1e-5), name  # BN statistics untouched by the probe
    with pytest.raises(ConfigError, match="holds a 'resnet8_w8' but teacher.arch=resnet8; set teacher.arch=resnet8_w8"):
        _import(tmp_path, rgb_data, "state_dict", tmp_path / "blob.pt", "teacher.arch=resnet8")
    assert _import(tmp_path, rgb_data, "state_dict", tmp_path / "blob.pt")["arch"] == "resnet8_w8"  # auto: the file's


def test_teacher_import_errors_name_the_file_and_the_fix(tmp_path: Path, rgb_data: Path) -> None:
    meta = json.loads((rgb_data / "meta.json").read_text())
    wrong_k = build_classifier("resnet8_w8", 3, (16, 16), 5, mean=meta["mean"], std=meta["std"]).eval()
    torch.jit.save(torch.jit.trace(wrong_k, torch.rand(2, 3, 16, 16)), str(tmp_path / "k5.ts"))
    with pytest.raises(DataError, match=r"k5.ts outputs 5 logits per image but the data has 3 classes"):
        _import(tmp_path, rgb_data, "torchscript", tmp_path / "k5.ts")
    torch.save(wrong_k.state_dict(), tmp_path / "k5.pt")
    with pytest.raises(DataError, match=r"k5.pt: the teacher has 5 classes but the data has 3"):
        _import(tmp_path, rgb_data, "state_dict", tmp_path / "k5.pt", "teacher.arch=resnet8_w8")
    torch.save(_trained_teacher(rgb_data).state_dict(), tmp_path / "plain.pt")
    grey = build_classifier("resnet8_w8", 1, (16, 16), 3).eval()
    torch.jit.save(torch.jit.script(grey), str(tmp_path / "grey.ts"))
    with pytest.raises(DataError, match=r"grey.ts does not accept the data's images \(2×3×16×16"):
        _import(tmp_path, rgb_data, "torchscript", tmp_path / "grey.ts")
    with pytest.raises(DataError, match=r"weights do not fit teacher.arch=resnet14_w8.*set teacher.arch"):
        _import(tmp_path, rgb_data, "state_dict", tmp_path / "plain.pt", "teacher.arch=resnet14_w8")
    with pytest.raises(DataError, match=r"not a TorchScript file \(a state dict\? set teacher.source=state_dict"):
        _import(tmp_path, rgb_data, "torchscript", tmp_path / "k5.pt")
    with pytest.raises(DataError, match=r"cannot load as a state dict \(a TorchScript file\?"):
        _import(tmp_path, rgb_data, "state_dict", tmp_path / "k5.ts", "teacher.arch=resnet8_w8")
    with pytest.raises(DataError, match="file not found"):
        _import(tmp_path, rgb_data, "torchscript", tmp_path / "nope.ts")


def test_non_gandistill_forward_features_is_hidden(tmp_path: Path, rgb_data: Path) -> None:
    class TimmLike(torch.nn.Module):  # forward_features returns a feature map, as timm's do
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)
            self.fc = torch.nn.Linear(4, 3)

        @torch.jit.export
        def forward_features(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.forward_features(x).mean((2, 3)))

    torch.jit.save(torch.jit.script(TimmLike()), str(tmp_path / "timm.ts"))
    _import(tmp_path, rgb_data, "torchscript", tmp_path / "timm.ts")
    assert not hasattr(load_classifier(tmp_path / "teacher"), "forward_features")


# -- end to end through the CLI (kfp.local): `pytest -k e2e` ----------------------------------

def _run_cli(tmp_path: Path, *overrides: str) -> dict:
    env = os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
                        "GANDISTILL_CHECKPOINT_ROOT": str(tmp_path / "checkpoints")}
    args = [sys.executable, "-m", "gandistill", "run", "--local", "--profile", "smoke",
            "--runs-dir", str(tmp_path / "runs"), "--run-name", "byo"]
    for item in overrides:
        args += ["--set", item]
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return json.loads((tmp_path / "runs" / "byo" / "summary.json").read_text())


E2E_FAST = ["gan.steps=10", "gan.eval_every=5", "distill.steps=10", "distill.eval_every=5",
            "gan.batch_size=64", "distill.batch_size=64"]


def _e2e_checks(summary: dict, k: int, names: list[str]) -> None:
    assert summary["status"] == "FINISHED"
    report = Path(summary["report"]["html"]).read_text() if summary["report"].get("html") else ""
    assert all(name in report for name in names[:3]), "class names should appear in the report"
    assert summary["compression_ratio"] and summary["compression_ratio"] > 1
    assert summary["export"], "the export stage should have run"


@pytest.mark.slow
def test_e2e_rgb32_npz_nhwc_3_classes(tmp_path: Path) -> None:
    path = npz_dataset(tmp_path, 150, 3, 32, c=3)
    summary = _run_cli(tmp_path, "data.source=npz", f"data.path={path}", "teacher.arch=resnet8",
                       "distill.student_arch=resnet8_w8", *E2E_FAST)
    _e2e_checks(summary, 3, ["c0", "c1", "c2"])


@pytest.mark.slow
def test_e2e_grey16_imagefolder_20_classes(tmp_path: Path) -> None:
    x, y = patterns(400, 20, 16)
    names = [f"kind{i:02d}" for i in range(20)]
    save_imagefolder(tmp_path / "imgs", x, y, names)
    summary = _run_cli(tmp_path, "data.source=imagefolder", f"data.path={tmp_path / 'imgs'}", *E2E_FAST)
    _e2e_checks(summary, 20, names)


@pytest.mark.slow
def test_e2e_imported_torchscript_teacher(tmp_path: Path) -> None:
    path = npz_dataset(tmp_path, 150, 3, 16, c=3)
    params = params_for("data.source=npz", f"data.path={path}", "teacher.arch=resnet8_w8",
                        "distill.student_arch=resnet8_w4", "teacher.epochs=3")
    data = prepared(tmp_path, params)
    train_teacher.run(params, data, tmp_path / "trained")
    teacher = load_classifier(tmp_path / "trained")
    torch.jit.save(torch.jit.trace(teacher, torch.rand(2, 3, 16, 16)), str(tmp_path / "teacher.ts"))
    summary = _run_cli(tmp_path, "data.source=npz", f"data.path={path}", "teacher.source=torchscript",
                       f"teacher.path={tmp_path / 'teacher.ts'}", "distill.student_arch=resnet8_w4", *E2E_FAST)
    _e2e_checks(summary, 3, ["c0", "c1", "c2"])
