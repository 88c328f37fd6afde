"""Data-parallel training under torchrun (gloo, CPU): N ranks compute what one rank computes
at the same global batch, only rank 0 writes, and a dead rank fails the stage clearly.

The slow tests start real torchrun process groups (`tests/torchrun_worker.py` runs the
production worker, `gandistill.launch.worker_main`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from gandistill import launch
from gandistill.augment import random_affine
from gandistill.config import Params, load_params
from gandistill.data.dataset import StepBatches
from gandistill.distributed import World
from gandistill.errors import ConfigError
from gandistill.methods import METHOD_NAMES
from gandistill.nets.gan import build_gan
from gandistill.runtime import Runtime
from gandistill.stages.distill.context import sample_shard

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "torchrun_worker.py"


# -- sharding is a pure function of (seed, step, rank) -------------------------------------

def test_rank_shards_partition_the_global_batch_of_every_step() -> None:
    one = StepBatches(1000, 64, seed=3)
    ranks = [StepBatches(1000, 64, seed=3, world=World(size=4, rank=r)) for r in range(4)]
    for step in (0, 1, 15, 16, 40):  # 15 batches per epoch: crosses epochs
        whole = one.indices(step)
        parts = [b.indices(step) for b in ranks]
        assert all(len(p) == 16 for p in parts)
        for r, part in enumerate(parts):  # interleaved: rank r holds samples r, r+4, r+8, …
            assert torch.equal(part, whole[r::4])


def test_a_global_batch_that_does_not_split_evenly_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"teacher.batch_size=30 cannot be split evenly over 4 processes"):
        StepBatches(1000, 30, seed=0, world=World(size=4, rank=1), what="teacher.batch_size")


def test_augmentation_of_a_shard_is_the_global_batch_augmentation_sliced() -> None:
    x = torch.rand(8, 1, 12, 12)
    torch.manual_seed(5)
    whole = random_affine(x)
    for rank in range(2):
        torch.manual_seed(5)  # every rank's RNG is in the same state
        part = random_affine(x[rank::2], world=World(size=2, rank=rank))
        torch.testing.assert_close(part, whole[rank::2])


@pytest.mark.parametrize("arch", ["conv", "mlp", "dfad"])
def test_a_ranks_generated_batch_is_its_shard_of_the_one_process_batch(arch: str) -> None:
    """gan and data_free batches: each rank draws z and labels for the global batch (the RNG
    every rank shares, so it stays in step) and generates only its shard — the images one
    process generates for those samples. (Eval mode: BatchNorm per sample, so slices compare.)"""
    generator, _ = build_gan(arch, 16, 4, 1, (16, 16), 8, 8, hidden=8, output="normalised", mean=[0.5], std=[0.25])
    generator.eval()
    torch.manual_seed(3)
    whole, labels = generator.sample(8)  # what one process draws (ConditionalGenerator.sample)
    after = torch.get_rng_state()
    for rank in range(2):
        torch.manual_seed(3)
        part, part_labels = sample_shard(Runtime(torch.device("cpu"), world=World(size=2, rank=rank)), generator, 8)
        assert len(part) == 4 and torch.equal(part_labels, labels[rank::2])
        torch.testing.assert_close(part, whole[rank::2])
        assert torch.equal(torch.get_rng_state(), after)


def test_torchrun_command_for_one_and_several_processes() -> None:
    assert launch.torchrun_command(1) == ""
    command = launch.torchrun_command(4)
    assert command.startswith("torchrun ") and "--nproc_per_node=4" in command and "--max-restarts=0" in command


# -- helpers for real process groups -------------------------------------------------------

Run = tuple[str, Params, dict[str, Any], Path]  # stage, params, paths, checkpoint root


def run_workers(nproc: int, runs: list[Run], folder: Path, *, float64: bool = True,
                audit: Path | None = None) -> list[dict[str, Any]]:
    """Run the stages in order in one torchrun group of `nproc` ranks; rank 0's results."""
    specs = []
    for i, (stage, params, paths, ckpt) in enumerate(runs):
        sub = folder / f"spec{i}"
        sub.mkdir(parents=True)
        spec = launch.write_spec(sub, stage, params, {k: None if v is None else str(v) for k, v in paths.items()}, "")
        data = json.loads(spec.read_text()) | {"env": {"GANDISTILL_CHECKPOINT_ROOT": str(ckpt)}}
        spec.write_text(json.dumps(data))
        specs.append(spec)
    env = {**os.environ, "GANDISTILL_TEST_FLOAT64": "1" if float64 else "0", "OMP_NUM_THREADS": "1"}
    if audit is not None:
        audit.mkdir(parents=True, exist_ok=True)
        env["GANDISTILL_TEST_AUDIT_DIR"] = str(audit)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
           f"--nproc_per_node={nproc}", "--max-restarts=0", str(WORKER), *map(str, specs)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    tail = (proc.stdout + proc.stderr).splitlines()
    if proc.returncode:  # the error of the stage that failed
        failed = next((i for i, spec in enumerate(specs) if list(spec.parent.glob("rank-*.json"))), 0)
        launch.collect(runs[failed][0], proc.returncode, tail, specs[failed].parent)
    return [launch.collect(stage, 0, tail, spec.parent) for (stage, *_), spec in zip(runs, specs, strict=True)]


def final_state(ckpt_root: Path) -> dict[str, dict[str, torch.Tensor]]:
    (last,) = ckpt_root.glob("*/last.pt")
    return torch.load(last, weights_only=True)["modules"]


TINY = ["runtime.progress=false", "runtime.checkpoint_every=5",
        "teacher.epochs=2", "teacher.batch_size=32",
        "gan.steps=20", "gan.batch_size=32", "gan.eval_every=10", "gan.eval_samples=100", "gan.hidden=32",
        "gan.nz=16", "distill.steps=12", "distill.batch_size=32", "distill.eval_every=6",
        "distill.generator_width=8"]
METHODS = {  # every distill method; the add-ons, mining, mixup, the sample pool, augmentation and QAT on somewhere
    "scratch": [],
    "kd": ["distill.hint_weight=1", "distill.rkd_distance_weight=1", "distill.rkd_angle_weight=1"],
    "gan": ["distill.hard_fraction=0.5", "distill.mixup=0.5", "distill.sample_reuse=2"],
    "gan_real": ["distill.rkd_distance_weight=0.5", "distill.qat=true", "distill.qat_fraction=0.5"],
    "data_free": ["distill.hint_weight=0.5", "distill.student_ema=0.9", "distill.generator_tv_weight=5"],
    "dafl": [],
    "adversarial": [], "noise": [],
}


# Target-domain methods (their own test below: they need a target domain and a translator).
# (Their teacher signal is a wrapped teacher with logits only, so no hint/RKD add-ons.)
TRANSFER_METHODS = {"cyclegan": [], "pixelda": [], "source_augmented": [], "target_kd": [], "target_supervised": []}


def test_the_equivalence_check_covers_every_distill_method() -> None:
    assert set(METHODS) | set(TRANSFER_METHODS) == set(METHOD_NAMES)
    assert not set(METHODS) & set(TRANSFER_METHODS)


def _pipeline_runs(dataset: Path, out: Path) -> list[Run]:
    """teacher → GAN → every distill method, each stage reading the previous one's output."""
    tiny = load_params(None, TINY)
    runs: list[Run] = [
        ("train_teacher", tiny, {"data_dir": dataset, "out_dir": out / "teacher"}, out / "ckpt" / "teacher"),
        ("train_gan", tiny, {"data_dir": dataset, "teacher_dir": out / "teacher", "out_dir": out / "generator"},
         out / "ckpt" / "generator")]
    for method, extra in METHODS.items():
        params = load_params(None, [*TINY, f"distill.method={method}", *extra])
        runs.append(("distill", params, {"data_dir": dataset, "teacher_dir": out / "teacher",
                                         "generator_dir": out / "generator", "out_dir": out / method},
                     out / "ckpt" / method))
    return runs


def assert_same_final_weights(one: list[Run], two: list[Run], results_one: list[dict[str, Any]],
                              results_two: list[dict[str, Any]]) -> None:
    """Every tensor of every run's final checkpoint within float64 rounding (atol 1e-9), and
    the same steps and selected step."""
    for (stage, params, _, ckpt_one), (_, _, _, ckpt_two), r1, r2 in zip(one, two, results_one, results_two,
                                                                         strict=True):
        name = f"{stage}[{params.distill.method}]" if stage == "distill" else stage
        assert r2["steps"] == r1["steps"] and r2.get("best_step") == r1.get("best_step"), name
        state_one, state_two = final_state(ckpt_one), final_state(ckpt_two)
        assert state_one.keys() == state_two.keys(), name
        for module, tensors in state_one.items():
            for key, value in tensors.items():
                torch.testing.assert_close(state_two[module][key], value, rtol=0, atol=1e-9,
                                           msg=f"{name}: {module}.{key}")


# -- the targets ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_two_ranks_train_every_stage_and_method_to_the_weights_of_one_rank(tiny_dataset: Path,
                                                                             tmp_path: Path) -> None:
    """Same global batch, same steps, same data order: 2 gloo ranks end with the final weights
    of 1 process (float64, so only rounding differs) — teacher, GAN (G with BatchNorm, D with
    minibatch-stddev), and every distill method incl. data_free's in-stage generator, the
    hint/RKD add-ons, hard-sample mining and mixup. Only rank 0 writes."""
    one = _pipeline_runs(tiny_dataset, tmp_path / "one")
    two = _pipeline_runs(tiny_dataset, tmp_path / "two")
    results_one = run_workers(1, one, tmp_path / "specs-one")
    results_two = run_workers(2, two, tmp_path / "specs-two", audit=tmp_path / "audit")

    assert_same_final_weights(one, two, results_one, results_two)

    # Only rank 0 wrote outputs and checkpoints (the audit hook saw every file opened for writing).
    written = {rank: json.loads((tmp_path / "audit" / f"rank-{rank}.json").read_text()) for rank in (0, 1)}
    ours = str(tmp_path / "two")
    assert [p for p in written[1] if p.startswith(ours)] == []
    rank0 = [p for p in written[0] if p.startswith(ours)]
    assert any(p.endswith("model.pt") or "/.model.pt." in p for p in rank0)  # the audit sees writes
    assert any("/ckpt/" in p for p in rank0)


@pytest.mark.slow
def test_two_ranks_train_the_target_domain_methods_to_the_weights_of_one_rank(tmp_path: Path) -> None:
    """The cross-domain methods under torchrun: cyclegan (target images through G_BA plus a
    translated-source share, each sharded), pixelda (translated source + pseudo-labelled target),
    source_augmented, target_kd and target_supervised — 2 ranks end with the weights of 1 (float64).
    The teacher and translators are trained once, here, in float64 (the translator stage runs in
    one process); only distill runs in the ranks."""
    from helpers import train_transfer_world, transfer_domains

    domains = transfer_domains(tmp_path)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:  # train_translator builds the translator distill.method names: one world per translator method
        worlds = {name: train_transfer_world(load_params(None, [*TINY, *domains, f"distill.method={name}"]),
                                             tmp_path / f"w-{name}") for name in ("cyclegan", "pixelda")}
    finally:
        torch.set_default_dtype(default_dtype)

    def runs(folder: Path) -> list[Run]:
        result: list[Run] = []
        for method, extra in TRANSFER_METHODS.items():
            params = load_params(None, [*TINY, *domains, f"distill.method={method}", *extra])
            world = worlds.get(method, worlds["cyclegan"])
            translator = {"translator_dir": world["translator"]} if method in worlds else {}
            result.append(("distill", params, {"data_dir": world["data"], "teacher_dir": world["teacher"],
                                               "generator_dir": None, "out_dir": folder / method, **translator},
                           folder / "ckpt" / method))
        return result

    one, two = runs(tmp_path / "one"), runs(tmp_path / "two")
    results_one = run_workers(1, one, tmp_path / "specs-one")
    results_two = run_workers(2, two, tmp_path / "specs-two")
    assert results_two[0]["selected_on"] == "val_agreement"  # cyclegan selects on the target val split
    assert_same_final_weights(one, two, results_one, results_two)


# -- failures: one clear error, never a hang -------------------------------------------------

STAGE_SCRIPT = """
import sys
from gandistill import launch
from gandistill.config import load_params
from gandistill.errors import GandistillError
from gandistill.tracking import NullTracker
params = load_params(None, sys.argv[3:])
try:
    result = launch.run("train_teacher", params, {"data_dir": sys.argv[1], "out_dir": sys.argv[2]}, NullTracker(),
                        launch.torchrun_command(2))
except GandistillError as exc:
    print(f"ERROR {type(exc).__name__}: {exc}", file=sys.stderr)
    sys.exit(exc.exit_code)
print("RESUMED_FROM", result["resumed_from"])
"""
LONG_TEACHER = ["teacher.epochs=30", "teacher.batch_size=32", "runtime.checkpoint_every=10", "runtime.progress=false"]


def _rank_pids(rank: int, marker: str) -> list[int]:
    """Worker processes of this test (their environment holds `marker`) with RANK=rank."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and marker.encode() in b"\0".join(env):
            pids.append(int(proc.name))
    return pids


@pytest.mark.slow
def test_a_killed_rank_fails_the_stage_clearly_and_the_rerun_resumes_to_the_same_weights(
        tiny_dataset: Path, tmp_path: Path) -> None:
    """SIGKILL of rank 1 mid-training: torchrun stops rank 0, the stage fails within seconds
    with one error naming the rank and the signal (exit 7), nothing is half-written; re-running
    resumes from rank 0's last checkpoint and ends with the weights of an uninterrupted run."""
    def start(ckpt: Path, out: Path) -> subprocess.Popen:
        env = {**os.environ, "GANDISTILL_CHECKPOINT_ROOT": str(ckpt), "OMP_NUM_THREADS": "1"}
        return subprocess.Popen([sys.executable, "-c", STAGE_SCRIPT, str(tiny_dataset), str(out), *LONG_TEACHER],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    reference = start(tmp_path / "ref-ckpt", tmp_path / "ref")
    out, err = reference.communicate(timeout=600)
    assert reference.returncode == 0, err[-3000:]

    victim = start(tmp_path / "ckpt", tmp_path / "out")
    deadline = time.time() + 300
    while time.time() < deadline:
        found = list((tmp_path / "ckpt").glob("*/last.pt"))
        if found and torch.load(found[0], weights_only=True)["step"] >= 20:
            break
        time.sleep(0.05)
    else:
        victim.kill()
        pytest.fail("no checkpoint appeared")
    (pid,) = _rank_pids(1, str(tmp_path / "ckpt"))
    os.kill(pid, signal.SIGKILL)
    killed = time.time()
    _, err = victim.communicate(timeout=120)
    assert time.time() - killed < 60  # failed, not hung
    assert victim.returncode == 7, err[-3000:]
    assert "ERROR WorkerError: [train_teacher] worker rank 1 was killed by SIGKILL" in err
    assert not (tmp_path / "out" / "model.pt").exists()
    assert not _rank_pids(0, str(tmp_path / "ckpt"))  # rank 0 was stopped too

    rerun = start(tmp_path / "ckpt", tmp_path / "out")
    out, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err[-3000:]
    resumed_from = int(out.split("RESUMED_FROM")[1])
    assert resumed_from >= 20
    ref = torch.load(tmp_path / "ref" / "model.pt", weights_only=True)["state_dict"]
    got = torch.load(tmp_path / "out" / "model.pt", weights_only=True)["state_dict"]
    for key in ref:
        assert torch.equal(ref[key], got[key]), key


@pytest.mark.slow
def test_a_params_fault_raised_in_the_ranks_is_the_same_error_as_in_one_process(tiny_dataset: Path,
                                                                                tmp_path: Path) -> None:
    env = {**os.environ, "GANDISTILL_CHECKPOINT_ROOT": str(tmp_path / "ckpt"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", STAGE_SCRIPT, str(tiny_dataset), str(tmp_path / "out"),
                           "teacher.batch_size=33"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2  # ConfigError's exit code, as without torchrun
    assert "ERROR ConfigError: teacher.batch_size=33 cannot be split evenly over 2 processes" in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_run_local_with_nproc_2_trains_teacher_gan_and_student_in_two_ranks(repo_root: Path, tmp_path: Path,
                                                                           mnist_dir: Path) -> None:
    """`gandistill run --local --nproc 2`: kfp.local runs the pipeline; each training task
    starts torchrun with 2 gloo ranks and the run finishes with a promoted student."""
    from gandistill_pipeline.local import run_local

    params = load_params(repo_root / "params.yaml", ["runtime.threads=1"], "smoke")
    summary = run_local(params, runs_root=tmp_path / "runs", run_name="nproc2", nproc=2)
    assert summary["status"] == "FINISHED"
    for stage in ("train_teacher", "train_gan", "distill"):
        result = json.loads((Path(summary["artifacts"][stage]) / "result.json").read_text())
        assert result["processes"] == 2, stage
    assert summary["student"]["test_acc"] is not None and summary["registry"]
