"""Which teacher and student classifiers a run uses, and whether they fit the data.

`teacher.arch` and `distill.student_arch` default to `auto`, resolved from the data's
C×H×W by one rule (a local run, a cluster run and a stage called directly agree):

- grey, 12–32 px per side (MNIST 28×28) → lenet5 → lenet5_half: the LeNet-5 pair of
  DAFL/DFAD (61,706 → 15,738 params on MNIST);
- smaller than 12 px (e.g. 8×8 digits) → resnet8 → resnet8_w8: LeNet-5's 5×5 convs and two
  pools need ≥ 12 px, a CIFAR ResNet's stride-2 stages work down to 8;
- colour, or larger than 32 px → resnet20 → resnet8: the CIFAR ResNet pair of the KD
  literature (He et al. 2016 §4.2).

`gan.arch: auto` is resolved in train_gan (`resolve_gan`): the MLP pair for grey ≤ 32 px, the ResNet
pair otherwise, each with the objective measured for it (`GAN_RECIPES`) where gan.loss / gan.augment /
gan.teacher_weight are `auto`.

An explicit name is used as given. `check_fit` builds both networks for the data's shape, so
a pair that cannot fit (LeNet-5 on 8×8 images, an unknown name) is a ConfigError (exit 2):
at `gandistill run` / `validate` when the source's shape can be read cheaply
(gandistill.data.probe), and in prepare_data on the loaded arrays before anything is written.
"""

from __future__ import annotations

from typing import Any

from gandistill.config import Params
from gandistill.errors import ConfigError

AUTO = "auto"
LENET_SIDES = (12, 32)  # LeNet-5 (pad 2, two 5×5 convs, two 2×2 pools) needs ≥ 12 px; beyond 32 it is a poor fit


def auto_pair(channels: int, height: int, width: int) -> tuple[str, str]:
    """(teacher, student) architecture names for images of this shape."""
    if min(height, width) < LENET_SIDES[0]:
        return "resnet8", "resnet8_w8"
    if channels == 1 and max(height, width) <= LENET_SIDES[1]:
        return "lenet5", "lenet5_half"
    return "resnet20", "resnet8"


def resolve(params: Params, channels: int, height: int, width: int,
            student_shape: tuple[int, int, int] | None = None) -> Params:
    """Replace `auto` in teacher.arch / distill.student_arch by the pair for this shape (in place;
    returns `params`); `student_shape`: the target domain's C×H×W when the student learns there.
    An imported state-dict teacher keeps `auto` here: its file names the architecture it was saved
    as (train_teacher reads it)."""
    resolve_teacher(params, channels, height, width)
    return resolve_student(params, *(student_shape or (channels, height, width)))


def resolve_teacher(params: Params, channels: int, height: int, width: int) -> Params:
    """Replace `auto` in teacher.arch by the teacher for images of this shape (in place), unless the
    teacher is imported (a state-dict file names its own architecture)."""
    if params.teacher.arch == AUTO and params.teacher.source == "train":
        params.teacher.arch = auto_pair(channels, height, width)[0]
    return params


def resolve_student(params: Params, channels: int, height: int, width: int) -> Params:
    """Replace `auto` in distill.student_arch by the student for images of this shape (in place)."""
    if params.distill.student_arch == AUTO:
        params.distill.student_arch = auto_pair(channels, height, width)[1]
    return params


# The objective that goes with each GAN pair when gan.loss / gan.augment / gan.teacher_weight are `auto`.
# resnet (auto's pick for colour, texture, larger images): hinge, DiffAugment and no teacher guidance, measured
# as one recipe on the MNIST-M-style set — the guided BCE cGAN drew one teacher-favourite glyph per class and
# its student reached 37.4 %, this recipe's 75.2 % (bench/results/colour-ablations.md). mlp / conv: the cGAN
# paper's BCE with light teacher guidance, measured on MNIST (bench/results/quality.md).
GAN_RECIPES: dict[str, dict[str, Any]] = {
    "resnet": {"loss": "hinge", "augment": ["color", "translation", "cutout"], "teacher_weight": 0.0},
}
DEFAULT_GAN_RECIPE: dict[str, Any] = {"loss": "bce", "augment": [], "teacher_weight": 0.2}


def resolve_gan(params: Params, channels: int, height: int, width: int) -> Params:
    """Replace `auto` in gan.arch by the pair for this shape, then `auto` in gan.loss / gan.augment /
    gan.teacher_weight by that pair's recipe (in place; a value the user set is kept)."""
    from gandistill.nets.gan import resolve_gan_arch

    gan = params.gan
    gan.arch = resolve_gan_arch(gan.arch, channels, (height, width))
    for key, value in GAN_RECIPES.get(gan.arch, DEFAULT_GAN_RECIPE).items():
        if getattr(gan, key) == AUTO:
            setattr(gan, key, value)
    return params


def check_fit(params: Params, channels: int, height: int, width: int, num_classes: int,
              student_shape: tuple[int, int, int] | None = None) -> None:
    """Build the teacher and student for this shape now: a pair that cannot fit fails before any
    training, naming the key and the fix. `student_shape` is the target domain's C×H×W when the
    student learns there (cross-domain transfer); the teacher always fits the source's."""
    from gandistill.nets import build_classifier

    teacher_shape = (channels, height, width)
    student_shape = student_shape or teacher_shape
    resolved = resolve(params.model_copy(deep=True), *teacher_shape, student_shape=student_shape)
    teacher, student = resolved.teacher, resolved.distill
    names: dict[str, tuple[str, tuple[int, int, int]]] = {}
    if teacher.source != "torchscript" and teacher.arch != AUTO:
        names["teacher.arch"] = (teacher.arch, teacher_shape)
    names["distill.student_arch"] = (student.student_arch, student_shape)
    for key, (arch, (c, h, w)) in names.items():
        try:
            build_classifier(arch, c, (h, w), max(2, num_classes))
        except ConfigError as exc:
            given = getattr(params.teacher if key == "teacher.arch" else params.distill, key.split(".")[1])
            via = f" (auto → {arch})" if given == AUTO else ""
            raise ConfigError(f"{key}={given}{via} does not fit the data ({c}×{h}×{w}, "
                              f"{num_classes or '?'} classes): {exc}") from None


def check_before_run(params: Params, resolve_auto: bool = False) -> tuple[int, int, int] | None:
    """The fit check at `gandistill run` / `validate`, on the shape the source (and the target domain,
    when the student learns there) will produce when it can be read cheaply; returns the source's
    shape (None: prepare_data checks it on the loaded data). `resolve_auto` (`gandistill run --local`,
    which runs on this very data): `auto` is then decided here, once, and every stage's params name
    the architectures (a submitted run leaves it to the stage that builds each model: the cluster's
    data decides)."""
    from gandistill.data.probe import input_shape

    data = params.data
    shape = input_shape(data)
    student_shape = None
    if data.target_source is not None:
        student_shape = input_shape(data.model_copy(update={"source": data.target_source, "path": data.target_path,
                                                            "target_source": None, "target_path": None}))
        if student_shape is None:
            return None
    if shape is not None:
        check_fit(params, *shape, num_classes=0, student_shape=student_shape)
        if resolve_auto:
            resolve(params, *shape, student_shape=student_shape)
    return shape
