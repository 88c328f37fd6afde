"""Every distillation method through the same distill stage (smoke budgets), and a short
real-training check that a student trained only on GAN samples learns MNIST."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import smoke_params

from gandistill import archs, methods
from gandistill.data.dataset import load_meta, load_split, to_tensors
from gandistill.evaluation.predict import accuracy, predict_logits
from gandistill.fingerprints import model_digest
from gandistill.losses import kd_kl_per_sample
from gandistill.methods import METHODS
from gandistill.model_files import load_classifier, load_frozen_teacher, load_generator
from gandistill.nets import build_classifier
from gandistill.results import read_result
from gandistill.runtime import Runtime
from gandistill.stages import distill, prepare_data, train_gan, train_teacher
from gandistill.stages.distill.generated import generated_batch, hard_sample_indices
from gandistill.tracking import NullTracker


@pytest.fixture(scope="module")
def world(tmp_path_factory, mnist_dir):
    root = tmp_path_factory.mktemp("methods")
    # Module scope runs before the per-test isolation fixture: keep checkpoints out of runs/.
    mp = pytest.MonkeyPatch()
    mp.setenv("GANDISTILL_CHECKPOINT_ROOT", str(root / "checkpoints"))
    params = smoke_params(f"data.path={mnist_dir}")
    prepare_data.run(params, root / "data")
    train_teacher.run(params, root / "data", root / "teacher")
    train_gan.run(params, root / "data", root / "teacher", root / "gan")
    mp.undo()
    return root


# The loss terms only each method's own step function logs (add-on terms come on top).
OWN_TERMS = {
    "scratch": {"loss"}, "kd": {"kd", "hint", "attention", "rkd_distance", "rkd_angle"},
    "gan": {"kd", "hint", "attention", "rkd_distance", "rkd_angle"}, "gan_real": {"kd_real", "kd_gen"},
    "data_free": {"loss_g", "g_discrepancy", "g_balance", "distill_loss"},
    "dafl": {"loss_g", "g_onehot", "g_activation", "g_balance", "distill_loss"},
    "noise": {"kd", "hint", "attention", "rkd_distance", "rkd_angle"},
    "adversarial": {"loss_d", "fool", "kd"},
    # target-domain methods run on a source + target dataset: tests/test_transfer.py
    "cyclegan": {"kd_target", "kd_translated_source"}, "target_kd": {"kd"}, "target_supervised": {"loss"},
    "pixelda": {"kd_translated_source", "pseudo_label", "pseudo_confident"}, "source_augmented": {"kd"},
}
SOURCE_METHODS = sorted(m for m, record in METHODS.items() if record.domain == "source")


class RecordingTracker(NullTracker):
    """Keeps what the stage logs, in memory (the MLflow tracker's interface, nothing faked)."""

    def __init__(self) -> None:
        super().__init__()
        self.metrics: dict[str, list[float]] = {}

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        for key, value in metrics.items():
            self.metrics.setdefault(key, []).append(float(value))


def test_every_method_has_a_step_and_a_check_here():
    assert set(OWN_TERMS) == set(METHODS) == set(distill.STEPS)


def test_a_student_left_far_under_its_teacher_is_told_why(world, tmp_path, caplog):
    """budget_advice on the production path: a 12-step student against its smoke teacher ends far
    under it; the stage says so on the console (a WARNING) and in its result, with the generator's
    coverage when it learned from one."""
    params = smoke_params("distill.method=gan", "distill.steps=12", "distill.eval_every=3")
    result = distill.run(params, world / "data", world / "teacher", world / "gan", tmp_path / "student")
    teacher_val = read_result(world / "teacher")["val_acc"]
    assert teacher_val - result["val_acc"] > 0.02  # the premise: a student 12 steps old
    said = result["advice"]
    assert said.startswith(f"the student ends {100 * (teacher_val - result['val_acc']):.1f} points under its teacher")
    assert "still gaining" in said or "cover" in said  # flat: the generator's coverage is named
    assert f"[distill] {said}" in caplog.text


@pytest.mark.parametrize("method", SOURCE_METHODS)
def test_every_method_runs_through_the_one_distill_stage(world, method, tmp_path):
    params = smoke_params(f"distill.method={method}", "distill.steps=12", "distill.eval_every=6",
                          "distill.hint_weight=0.5", "distill.attention_weight=100", "distill.rkd_distance_weight=0.5",
                          "distill.rkd_angle_weight=0.5")
    generator = world / "gan" if methods.get(method).needs_trained_gan else None
    tracker = RecordingTracker()
    result = distill.run(params, world / "data", world / "teacher", generator, tmp_path / "student", tracker)
    assert result["method"] == method and result["steps"] == 12
    # the method's own step ran: its loss terms were logged, finite
    logged = set(tracker.metrics)
    assert OWN_TERMS[method] <= logged, f"{method} logged {sorted(logged)}"
    assert all(math.isfinite(v) for key in OWN_TERMS[method] for v in tracker.metrics[key])
    if method == "scratch":
        assert "kd" not in logged  # no teacher term in the baseline
    # the reported accuracies are those of the saved student
    student = load_classifier(tmp_path / "student")
    for split in ("val", "test"):
        x, y = to_tensors(load_split(world / "data", split))
        assert result[f"{split}_acc"] == pytest.approx(accuracy(predict_logits(student, x), y), abs=1e-6)
    # selection: on the real val split when the method may touch real data, else the final step
    record = methods.get(method)
    assert (result["real_images_seen_by_student"] == 0) == (record.real_images == "none")
    if record.selection == "val_acc":
        best = max(result["history"], key=lambda h: h["val_acc"])
        assert result["selected_on"] == "val_acc" and result["best_step"] == best["step"]
        assert result["val_acc"] == pytest.approx(best["val_acc"], abs=1e-6)
    else:
        assert result["selected_on"] == "final" and result["best_step"] == 12
        assert all("val_acc" not in h for h in result["history"])  # nothing real seen while training


def test_hard_sample_mining_keeps_the_hardest_and_fills_the_rest_at_random():
    gap = torch.tensor([0.1, 5.0, 0.2, 3.0, 0.0, 0.3, 4.0, 0.05])
    keep = hard_sample_indices(gap, n=5, n_hard=3)
    assert len(keep) == 5 and len(set(keep.tolist())) == 5
    assert set(keep[:3].tolist()) == {1, 3, 6}  # the three largest gaps
    assert not set(keep[3:].tolist()) & {1, 3, 6}
    assert hard_sample_indices(gap, n=8, n_hard=0).sort().values.tolist() == list(range(8))


def _gan_context(world, hard_fraction: float) -> distill.Context:
    params = smoke_params(f"distill.hard_fraction={hard_fraction}", "distill.augment=false")
    meta = load_meta(world / "data")
    teacher = load_frozen_teacher(world / "teacher", "cpu")
    student = build_classifier(archs.auto_pair(*meta.input_shape)[1], meta.channels, (meta.height, meta.width),
                               meta.num_classes, mean=meta.mean, std=meta.std)
    return distill.Context(params, Runtime.from_params(params.runtime), meta, teacher, student, None, None, None,
                           None, load_generator(world / "gan"))


def test_gan_batches_mine_the_samples_the_student_gets_most_wrong(world):
    n, ctx = 64, _gan_context(world, 0.5)
    n_hard = round(n * 0.5)
    torch.manual_seed(7)
    with torch.no_grad():
        candidates, _ = ctx.generator.sample(n + n_hard)  # what the stage draws first, same seed
        gap = kd_kl_per_sample(ctx.student.eval()(candidates), ctx.teacher(candidates), ctx.params.distill.temperature)
    torch.manual_seed(7)
    x, y, t = generated_batch(ctx, n)
    assert x.shape[0] == y.shape[0] == n
    with torch.no_grad():
        assert torch.allclose(t, ctx.teacher(x), atol=1e-5)  # the mining pass's teacher logits, reused
    kept = {tuple(row.flatten()[:16].tolist()) for row in x}
    hardest = gap.argsort(descending=True)[:n_hard]
    assert all(tuple(candidates[i].flatten()[:16].tolist()) in kept for i in hardest.tolist())
    with torch.no_grad():
        kept_gap = kd_kl_per_sample(ctx.student(x), ctx.teacher(x), ctx.params.distill.temperature)
    assert kept_gap.mean() > gap.mean()  # the batch is harder than plain sampling's expectation
    plain = _gan_context(world, 0.0)
    torch.manual_seed(7)
    assert generated_batch(plain, n)[0].shape[0] == n


def test_gan_distillation_with_hard_mining_trains_a_different_student(world, tmp_path):
    """distill.hard_fraction reaches the stage: same seed, same budget, different batches."""
    students = {}
    for fraction in (0.0, 0.5):
        params = smoke_params("distill.method=gan", "distill.steps=6", "distill.eval_every=3",
                              f"distill.hard_fraction={fraction}")
        result = distill.run(params, world / "data", world / "teacher", world / "gan", tmp_path / f"s{fraction}")
        assert result["steps"] == 6 and result["real_images_seen_by_student"] == 0
        students[fraction] = load_classifier(tmp_path / f"s{fraction}").state_dict()
    assert any(not torch.equal(students[0.0][k], students[0.5][k]) for k in students[0.0])


@pytest.mark.slow
def test_student_trained_only_on_gan_samples_beats_chance_by_far(tmp_path, mnist_dir):
    """Real training on a 3,000-image subset: teacher → MLP cGAN → student on generated samples only."""
    params = smoke_params(f"data.path={mnist_dir}", "data.limit_train=3000", "data.limit_test=1000",
                          "teacher.epochs=6", "gan.steps=1500", "gan.eval_every=500", "gan.eval_samples=500",
                          "distill.steps=600", "distill.eval_every=200")
    prepare_data.run(params, tmp_path / "data")
    teacher = train_teacher.run(params, tmp_path / "data", tmp_path / "teacher")
    gan = train_gan.run(params, tmp_path / "data", tmp_path / "teacher", tmp_path / "gan")
    student = distill.run(params, tmp_path / "data", tmp_path / "teacher", tmp_path / "gan", tmp_path / "student")
    assert teacher["test_acc"] > 0.9
    assert gan["selected_coverage"] > 0.8
    assert student["real_images_seen_by_student"] == 0
    assert student["test_acc"] > 0.6  # chance is 0.1


@pytest.mark.slow
def test_data_free_student_beats_the_noise_baseline(tmp_path, mnist_dir):
    """Real training, small budget: the data-free generator must carry the teacher's knowledge
    beyond what distilling on random images of the data's statistics gives (the noise baseline,
    18–25 % on MNIST at 5,000 steps). Same teacher, student, steps and batch for both."""
    common = (f"data.path={mnist_dir}", "data.limit_train=3000", "data.limit_test=1000", "teacher.epochs=6",
              "distill.steps=600", "distill.eval_every=300")
    params = smoke_params(*common)
    prepare_data.run(params, tmp_path / "data")
    train_teacher.run(params, tmp_path / "data", tmp_path / "teacher")
    accuracy = {method: distill.run(smoke_params(*common, f"distill.method={method}"), tmp_path / "data",
                                    tmp_path / "teacher", None, tmp_path / method)["test_acc"]
                for method in ("noise", "data_free")}
    assert accuracy["data_free"] > accuracy["noise"] + 0.15, accuracy


def test_noise_baseline_sees_only_random_images_with_the_data_statistics(world, tmp_path):
    params = smoke_params("distill.method=noise", "distill.steps=6", "distill.eval_every=3")
    result = distill.run(params, world / "data", world / "teacher", None, tmp_path / "student")
    assert result["selected_on"] == "final" and result["real_images_seen_by_student"] == 0
    from gandistill.data.dataset import load_meta
    from gandistill.runtime import Runtime
    from gandistill.stages.distill import Context

    meta = load_meta(world / "data")
    ctx = Context.__new__(Context)
    ctx.meta, ctx.runtime = meta, Runtime(torch.device("cpu"))
    torch.manual_seed(0)
    x = ctx.noise_batch(3)
    torch.manual_seed(0)
    expected = (meta.mean[0] + meta.std[0] * torch.randn(3, *meta.input_shape)).clamp(0, 1)
    assert torch.allclose(x, expected)  # N(train mean, train std) per pixel, clipped to the pixel range


@pytest.mark.parametrize("method", ["data_free", "dafl"])
def test_free_generator_and_student_ema_resume_exactly_after_a_crash(world, method, tmp_path, monkeypatch):
    """The in-stage generator and the student's EMA are checkpointed state: a run that crashes after a
    checkpoint and is re-run ends with the same student as an uninterrupted run."""
    from gandistill.stages import distill as stage
    from gandistill.stages.distill import data_free

    params = smoke_params(f"distill.method={method}", "distill.steps=16", "distill.eval_every=8",
                          "distill.batch_size=32", "distill.student_ema=0.9", "runtime.checkpoint_every=8")
    monkeypatch.setenv("GANDISTILL_CHECKPOINT_ROOT", str(tmp_path / "ck-whole"))
    stage.run(params, world / "data", world / "teacher", None, tmp_path / "whole")

    monkeypatch.setenv("GANDISTILL_CHECKPOINT_ROOT", str(tmp_path / "ck-crash"))
    real_free_batch, calls = data_free._free_batch, {"n": 0}

    def crash_at_step_12(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 13:
            raise KeyboardInterrupt("simulated crash")
        return real_free_batch(*args, **kwargs)

    monkeypatch.setattr(data_free, "_free_batch", crash_at_step_12)
    with pytest.raises(KeyboardInterrupt):
        stage.run(params, world / "data", world / "teacher", None, tmp_path / "crashed")
    monkeypatch.setattr(data_free, "_free_batch", real_free_batch)
    resumed = stage.run(params, world / "data", world / "teacher", None, tmp_path / "resumed")
    assert resumed["resumed_from"] == 8
    whole = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)["state_dict"]
    again = torch.load(tmp_path / "resumed" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(whole[k], again[k]) for k in whole)



def test_gan_distillation_with_adaptive_generation_trains_g_prime_and_a_different_student(world, tmp_path):
    """distill.adaptive_every reaches the stage: G' steps (its terms are logged), half of each batch
    comes from it, the student differs from plain gan distillation's, and the cGAN on disk is untouched."""
    before = model_digest(world / "gan")
    students, trackers = {}, {}
    for every in (0, 2):
        params = smoke_params("distill.method=gan", "distill.steps=6", "distill.eval_every=3",
                              f"distill.adaptive_every={every}", "distill.adaptive_lr=0.01")
        trackers[every] = RecordingTracker()
        result = distill.run(params, world / "data", world / "teacher", world / "gan", tmp_path / f"s{every}",
                             trackers[every])
        assert result["steps"] == 6 and result["real_images_seen_by_student"] == 0
        students[every] = load_classifier(tmp_path / f"s{every}").state_dict()
    assert "adaptive_gap" in trackers[2].metrics and "adaptive_gap" not in trackers[0].metrics
    assert all(math.isfinite(v) for v in trackers[2].metrics["adaptive_gap"])
    assert any(not torch.equal(students[0][k], students[2][k]) for k in students[0])
    assert model_digest(world / "gan") == before
