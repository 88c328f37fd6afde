"""`teacher.arch` / `distill.student_arch: auto` pick a pair that fits the data, and a pair
that cannot fit is refused (exit 2) before the first stage runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gandistill_pipeline import cli
from helpers import write_idx
from PIL import Image

from gandistill import archs
from gandistill.config import load_params
from gandistill.data.probe import input_shape
from gandistill.errors import ConfigError
from gandistill.nets import build_classifier, count_parameters
from gandistill.stages import distill, prepare_data, train_teacher

ROOT = Path(__file__).resolve().parents[1]
FAST = ["teacher.min_accuracy=0",  # a tiny budget's teacher: the teaching bar is off
        "teacher.epochs=1", "teacher.batch_size=32", "distill.method=kd", "distill.steps=4", "distill.eval_every=2",
        "distill.batch_size=16", "runtime.checkpoint_every=100"]


@pytest.mark.parametrize(("shape", "pair"), [
    ((1, 28, 28), ("lenet5", "lenet5_half")),  # MNIST: the benchmark's pair, unchanged
    ((1, 12, 12), ("lenet5", "lenet5_half")),
    ((1, 32, 24), ("lenet5", "lenet5_half")),
    ((1, 8, 8), ("resnet8", "resnet8_w8")),    # too small for LeNet-5's convs and pools
    ((3, 8, 8), ("resnet8", "resnet8_w8")),
    ((3, 32, 32), ("resnet20", "resnet8")),    # colour
    ((1, 64, 64), ("resnet20", "resnet8")),    # larger
])
def test_auto_picks_a_family_that_fits_the_shape(shape, pair):
    assert archs.auto_pair(*shape) == pair
    teacher, student = (build_classifier(name, shape[0], shape[1:], 10) for name in pair)
    assert count_parameters(teacher) > count_parameters(student)


def test_the_default_mnist_run_keeps_lenet5_to_lenet5_half():
    params = archs.resolve(load_params(ROOT / "params.yaml"), 1, 28, 28)
    assert (params.teacher.arch, params.distill.student_arch) == ("lenet5", "lenet5_half")
    assert count_parameters(build_classifier(params.teacher.arch, 1, (28, 28), 10)) == 61_706
    assert count_parameters(build_classifier(params.distill.student_arch, 1, (28, 28), 10)) == 15_738


def test_explicit_names_are_kept_and_an_imported_state_dict_teacher_waits_for_its_file():
    params = load_params(ROOT / "params.yaml", ["teacher.arch=resnet14", "distill.student_arch=resnet8_w4"])
    archs.resolve(params, 1, 28, 28)
    assert (params.teacher.arch, params.distill.student_arch) == ("resnet14", "resnet8_w4")
    imported = load_params(ROOT / "params.yaml", ["teacher.source=state_dict", "teacher.path=t.pt"])
    assert archs.resolve(imported, 1, 28, 28).teacher.arch == "auto"


# -- the shape each source will produce, read cheaply ----------------------------------------------

def test_probe_reads_the_shape_of_every_local_source(tmp_path, mnist_dir):
    params = load_params(ROOT / "params.yaml")
    assert input_shape(params.data) == (1, 28, 28)
    assert input_shape(params.data.model_copy(update={"resize": 16})) == (1, 16, 16)
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((5, 9, 10), np.uint8))
    assert input_shape(params.data.model_copy(update={"source": "idx", "path": str(tmp_path)})) == (1, 9, 10)
    np.savez(tmp_path / "hwc.npz", x=np.zeros((4, 20, 18, 3), np.uint8), y=np.zeros(4))
    np.savez(tmp_path / "chw.npz", x=np.zeros((4, 1, 8, 8), np.uint8), y=np.zeros(4))
    assert input_shape(params.data.model_copy(update={"source": "npz", "path": str(tmp_path / "hwc.npz")})) == (
        3, 20, 18)
    assert input_shape(params.data.model_copy(update={"source": "npz", "path": str(tmp_path / "chw.npz")})) == (
        1, 8, 8)
    (tmp_path / "imgs" / "cat").mkdir(parents=True)
    Image.fromarray(np.zeros((40, 30, 3), np.uint8)).save(tmp_path / "imgs" / "cat" / "a.png")
    assert input_shape(params.data.model_copy(update={"source": "imagefolder", "path": str(tmp_path / "imgs")})) == (
        3, 40, 30)
    assert input_shape(params.data.model_copy(update={"source": "dvc"})) is None  # known once fetched
    assert input_shape(params.data.model_copy(update={"source": "npz", "path": str(tmp_path / "no.npz")})) is None


# -- refused before the first stage (exit 2), accepted when auto ------------------------------------

def _tiny_npz(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    y = np.arange(90) % 3
    x = rng.integers(0, 60, (90, 8, 8)).astype(np.uint8)
    for i, label in enumerate(y):
        x[i, 2 * label : 2 * label + 2] = 230
    np.savez(tmp_path / "digits8.npz", x=x, y=y)
    return tmp_path / "digits8.npz"


def test_a_pair_that_cannot_fit_exits_2_before_any_stage(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _tiny_npz(tmp_path)
    code = cli.main(["run", "--local", "--params", str(ROOT / "params.yaml"), "--runs-dir", str(tmp_path / "runs"),
                     "--set", "data.source=npz", "--set", f"data.path={path}", "--set", "teacher.arch=lenet5"])
    assert code == 2
    err = capsys.readouterr().err
    assert "teacher.arch=lenet5 does not fit the data (1×8×8" in err and "auto" in err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()  # nothing ran
    assert cli.main(["validate", "--params", str(ROOT / "params.yaml"), "--set", "data.source=npz",
                     "--set", f"data.path={path}", "--set", "distill.student_arch=lenet5_half"]) == 2
    assert "distill.student_arch=lenet5_half does not fit" in capsys.readouterr().err
    assert cli.main(["validate", "--params", str(ROOT / "params.yaml"), "--set", "data.source=npz",
                     "--set", f"data.path={path}"]) == 0
    assert "fit the data's 1×8×8 images" in capsys.readouterr().out
    with pytest.raises(ConfigError, match=r"teacher.arch=resnet10 does not fit"):
        archs.check_fit(load_params(ROOT / "params.yaml", ["teacher.arch=resnet10"]), 1, 28, 28, 10)


def test_auto_trains_a_teacher_and_student_on_8x8_images(tmp_path):
    """The new-user case of the issue: an 8×8 grey-digit npz with the default params."""
    params = load_params(ROOT / "params.yaml", ["data.source=npz", f"data.path={_tiny_npz(tmp_path)}", *FAST],
                         "smoke")
    prepare_data.run(params, tmp_path / "data")
    teacher = train_teacher.run(params.model_copy(deep=True), tmp_path / "data", tmp_path / "teacher")
    student = distill.run(params.model_copy(deep=True), tmp_path / "data", tmp_path / "teacher", None,
                          tmp_path / "student")
    assert (teacher["arch"], student["arch"]) == ("resnet8", "resnet8_w8")
    assert teacher["params"] > student["params"] and student["steps"] == 4
