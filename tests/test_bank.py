"""The pool of generated samples a `gan` student reuses (gandistill.bank)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import smoke_params

from gandistill.bank import SampleBank, bank_sizes
from gandistill.runtime import Runtime
from gandistill.stages import distill, prepare_data, train_gan, train_teacher
from gandistill.stages.distill import generated


class Counter:
    """A stand-in for generator + augmentation + teacher: sample k's image is filled with k."""

    def __init__(self) -> None:
        self.drawn = 0

    def __call__(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ids = torch.arange(self.drawn, self.drawn + n, dtype=torch.float32)
        self.drawn += n
        return ids.view(n, 1, 1, 1).expand(n, 1, 2, 2).clone(), ids.long() % 10, ids.view(n, 1).repeat(1, 10)


def test_sizes_give_each_sample_the_asked_reuse_and_split_over_processes() -> None:
    assert bank_sizes(384, 1.0) == (1536, 384)  # reuse 1: as many fresh samples as candidates
    size, fresh = bank_sizes(384, 4.0)
    assert fresh == 96 and size % fresh == 0 and size >= 4 * 384
    size, fresh = bank_sizes(385, 2.0, world_size=2)
    assert fresh % 2 == 0 and size % fresh == 0


def test_every_step_replaces_the_oldest_samples_and_the_whole_pool_turns_over() -> None:
    draw = Counter()
    bank = SampleBank(draw, candidates=12, reuse=3.0, runtime=Runtime(torch.device("cpu")))
    assert bank.fresh_per_step == 4 and bank.reuse == 3.0
    first = set(bank.images[:, 0, 0, 0].tolist())
    assert first == set(range(bank.size))

    x, y, t = bank.candidates_shard()
    ids = bank.images[:, 0, 0, 0]
    assert set(ids.tolist()) == set(range(4, bank.size + 4))  # the 4 oldest replaced by 4 new ones
    # a candidate's label and teacher logits travel with its image
    assert torch.equal(y, x[:, 0, 0, 0].long() % 10) and torch.equal(t[:, 0], x[:, 0, 0, 0])
    assert len(set(x[:, 0, 0, 0].tolist())) == 12  # drawn without replacement

    for _ in range(bank.size // bank.fresh_per_step - 1):
        bank.candidates_shard()
    assert min(bank.images[:, 0, 0, 0].tolist()) >= bank.size  # nothing left from the first fill
    assert draw.drawn == 2 * bank.size


def test_samples_are_used_about_reuse_times_each() -> None:
    torch.manual_seed(0)
    bank = SampleBank(Counter(), candidates=64, reuse=4.0, runtime=Runtime(torch.device("cpu")))
    uses: dict[int, int] = {}
    steps = 400
    for _ in range(steps):
        x, _, _ = bank.candidates_shard()
        for k in x[:, 0, 0, 0].long().tolist():
            uses[k] = uses.get(k, 0) + 1
    retired = [uses.get(k, 0) for k in range(bank.size, steps * bank.fresh_per_step)]  # lived a full life
    assert abs(sum(retired) / len(retired) - 4.0) < 0.3


@pytest.fixture(scope="module")
def world(tmp_path_factory, mnist_dir):
    root = tmp_path_factory.mktemp("bank")
    mp = pytest.MonkeyPatch()
    mp.setenv("GANDISTILL_CHECKPOINT_ROOT", str(root / "checkpoints"))
    params = smoke_params(f"data.path={mnist_dir}")
    prepare_data.run(params, root / "data")
    train_teacher.run(params, root / "data", root / "teacher")
    train_gan.run(params, root / "data", root / "teacher", root / "gan")
    mp.undo()
    return root


def test_a_gan_student_with_a_pool_resumes_exactly_after_a_crash(world: Path, tmp_path: Path, monkeypatch) -> None:
    """The pool is checkpointed state: a crash and a re-run end with the uninterrupted run's student,
    and the pool really serves the candidates (the generator runs fresh_per_step samples a step)."""
    params = smoke_params("distill.method=gan", "distill.steps=16", "distill.eval_every=8", "distill.batch_size=32",
                          "distill.sample_reuse=3", "runtime.checkpoint_every=8")
    monkeypatch.setenv("GANDISTILL_CHECKPOINT_ROOT", str(tmp_path / "ck-whole"))
    drawn: list[int] = []
    fresh = generated.fresh_generated

    def counted(ctx, n):
        drawn.append(n)
        return fresh(ctx, n)

    monkeypatch.setattr(generated, "fresh_generated", counted)
    distill.run(params, world / "data", world / "teacher", world / "gan", tmp_path / "whole")
    size, per_step = bank_sizes(48, 3.0)
    assert drawn == [size] + [per_step] * 16  # one fill, then 16 fresh samples per step (48 candidates)

    monkeypatch.setenv("GANDISTILL_CHECKPOINT_ROOT", str(tmp_path / "ck-crash"))

    def crash_at_step_12(ctx, n):
        if len(drawn) == 1 + 16 + 1 + 13:  # the first run, this run's fill, 12 steps done
            raise KeyboardInterrupt("simulated crash")
        return counted(ctx, n)

    monkeypatch.setattr(generated, "fresh_generated", crash_at_step_12)
    with pytest.raises(KeyboardInterrupt):
        distill.run(params, world / "data", world / "teacher", world / "gan", tmp_path / "crashed")
    monkeypatch.setattr(generated, "fresh_generated", fresh)
    resumed = distill.run(params, world / "data", world / "teacher", world / "gan", tmp_path / "resumed")
    assert resumed["resumed_from"] == 8
    whole = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)["state_dict"]
    again = torch.load(tmp_path / "resumed" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(whole[k], again[k]) for k in whole)
