"""Same seed, same weights: a recorded check for refactors that must not change what trains.

Runs every training stage at tiny budgets on CPU, one process, with a fixed seed — the teacher,
the cGAN, a student by each distillation method (with the add-on terms on), a translator and a
cross-domain student — then evaluate and export for the `gan` student, and writes one hash per
trained model (its state dict's tensors, byte for byte) and per result (the numbers in result.json
that do not measure time) to a JSON file.

    python -m bench.weights_identity --out bench/results/weights-identity.json   # record
    python -m bench.weights_identity --check bench/results/weights-identity.json # compare, exit 1 on a difference

Why a recorded check and not a test: bit-identical weights are a fact about one machine's CPU
kernels as much as about the code (another instruction set rounds differently), so a hash
committed here would fail CI on other hardware for reasons no change caused. The recorded file
names the machine it was made on (torch version, CPU capability); `--check` refuses to compare
across machines rather than report a false difference.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
# Result keys that measure time or name a temporary path: never part of the identity.
VOLATILE = ("wall_s", "latency", "throughput", "_ms", "report_", "summary_md", "path", "figures", "speedup",
            "elapsed", "_per_s", "seconds", "git_commit", "files")  # files: digests of the exported formats
# The add-on terms on for every method: their code paths (hint regressor, RKD) are part of the identity.
ADDONS = ("distill.hint_weight=0.5", "distill.rkd_distance_weight=0.5", "distill.rkd_angle_weight=0.5")


def _tensor_hash(state: dict[str, Any]) -> str:
    digest = hashlib.sha256()
    for key in sorted(state):
        value = state[key]
        digest.update(key.encode())
        if isinstance(value, torch.Tensor):
            digest.update(str(value.dtype).encode())
            digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
                          if value.numel() else b"")
        elif isinstance(value, dict):
            digest.update(_tensor_hash(value).encode())
        else:
            digest.update(repr(value).encode())
    return digest.hexdigest()[:16]


def model_hash(folder: Path) -> str:
    blob = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
    return _tensor_hash(blob["state_dict"])


def _numbers(value: Any, key: str = "") -> Any:
    """The identity-relevant part of a result: numbers and strings, timing keys dropped."""
    if any(v in key for v in VOLATILE):
        return None
    if isinstance(value, dict):
        kept = {k: _numbers(v, k) for k, v in sorted(value.items())}
        return {k: v for k, v in kept.items() if v is not None}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, float):
        return repr(value)
    return value


def result_hash(folder: Path) -> str:
    result = json.loads((folder / "result.json").read_text())
    return hashlib.sha256(json.dumps(_numbers(result), sort_keys=True).encode()).hexdigest()[:16]


def _target_npz(folder: Path) -> Path:
    """A 10-class colour 'target domain' of 28×28 images (tinted, inverted bars): the translator's B."""
    rng = np.random.default_rng(5)
    y = np.arange(600) % 10
    x = rng.integers(0, 60, size=(600, 3, 28, 28)).astype(np.uint8)
    for i, label in enumerate(y):
        x[i, :, 2 * label + 3 : 2 * label + 6, :] = 230
    x = (255 - x) // 2 + np.arange(3, dtype=np.uint8).reshape(1, 3, 1, 1) * 40
    np.savez(folder / "target.npz", x=x, y=y.astype(np.int64))
    return folder / "target.npz"


def run_all(work: Path) -> dict[str, str]:
    from gandistill import methods
    from gandistill.config import load_params
    from gandistill.stages import distill, evaluate, export, prepare_data, train_gan, train_teacher, train_translator

    mnist = ROOT / "data" / "mnist"

    def params(*overrides: str):
        return load_params(ROOT / "params.yaml", [f"data.path={mnist}", "runtime.threads=1", *overrides], "smoke")

    hashes: dict[str, str] = {}
    base = params()
    prepare_data.run(base, work / "data")
    train_teacher.run(base, work / "data", work / "teacher")
    train_gan.run(base, work / "data", work / "teacher", work / "gan")
    hashes |= {"teacher": model_hash(work / "teacher"), "teacher.result": result_hash(work / "teacher"),
               "gan": model_hash(work / "gan"), "gan.result": result_hash(work / "gan")}
    for method in sorted(m for m, r in methods.METHODS.items() if r.domain == "source"):
        extra = () if method in ("scratch",) else ADDONS
        p = params(f"distill.method={method}", "distill.steps=12", "distill.eval_every=6", *extra)
        out = work / f"student-{method}"
        generator = work / "gan" if methods.get(method).needs_trained_gan else None
        distill.run(p, work / "data", work / "teacher", generator, out)
        hashes |= {f"student.{method}": model_hash(out), f"student.{method}.result": result_hash(out)}
        if (out / "generator" / "model.pt").is_file():
            hashes[f"student.{method}.generator"] = model_hash(out / "generator")
    # evaluate + export of the gan student: their numbers (accuracies, INT8 accuracy) must not move
    gan_params = params("distill.method=gan", "distill.steps=12", "distill.eval_every=6", *ADDONS)
    evaluate.run(gan_params, work / "data", work / "teacher", work / "student-gan", work / "gan", work / "evaluation")
    export.run(gan_params, work / "data", work / "student-gan", work / "evaluation", work / "export", None,
               work / "gan")
    hashes |= {"evaluate.result": result_hash(work / "evaluation"), "export.result": result_hash(work / "export")}

    # cross-domain: MNIST → a tinted, inverted 10-class colour set; the translator and a cyclegan student
    target = _target_npz(work)
    cross = ("data.target_source=npz", f"data.target_path={target}", "translator.steps=4", "translator.eval_every=2",
             "translator.eval_samples=40", "translator.batch_size=8", "translator.ngf=4", "translator.ndf=8",
             "translator.n_blocks=1", "translator.min_diversity=0", "distill.method=cyclegan",
             "distill.student_arch=lenet5", "distill.steps=8", "distill.eval_every=4", "distill.colour_augment=true")
    tp = params(*cross)
    prepare_data.run(tp, work / "tdata")
    train_teacher.run(tp, work / "tdata", work / "tteacher")
    train_translator.run(tp, work / "tdata", work / "tteacher", work / "translator")
    distill.run(tp, work / "tdata", work / "tteacher", None, work / "tstudent", translator_dir=work / "translator")
    hashes |= {"translator": model_hash(work / "translator"), "translator.result": result_hash(work / "translator"),
               "student.cyclegan": model_hash(work / "tstudent"),
               "student.cyclegan.result": result_hash(work / "tstudent")}
    return hashes


def machine() -> dict[str, str]:
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "python": sys.version.split()[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--out", type=Path, help="record the hashes here")
    group.add_argument("--check", type=Path, help="compare against a recorded file; exit 1 on any difference")
    parser.add_argument("--keep", type=Path, help="train in this (new) folder and keep it, to compare results by hand")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="gandistill-identity-") as tmp:
        work = args.keep or Path(tmp)
        os.environ["GANDISTILL_CHECKPOINT_ROOT"] = str(work / "checkpoints")  # never resume an older run
        hashes = run_all(work)
    if args.out:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT,
                                check=False).stdout.strip()
        record = {"machine": machine(), "commit": commit,
                  "command": "python -m bench.weights_identity --out " + str(args.out), "hashes": hashes}
        args.out.write_text(json.dumps(record, indent=2) + "\n")
        print(json.dumps(hashes, indent=2))
        return 0
    recorded = json.loads(args.check.read_text())
    if recorded["machine"] != machine():
        print(f"recorded on {recorded['machine']}, this is {machine()}: hashes are not comparable", file=sys.stderr)
        return 2
    differ = {k: (recorded["hashes"].get(k), v) for k, v in hashes.items() if recorded["hashes"].get(k) != v}
    missing = sorted(set(recorded["hashes"]) - set(hashes))
    for key, (old, new) in differ.items():
        print(f"DIFFERS {key}: recorded {old}, now {new}")
    for key in missing:
        print(f"MISSING {key}")
    print(f"{len(hashes) - len(differ)}/{len(recorded['hashes'])} identical")
    return 1 if differ or missing else 0


if __name__ == "__main__":
    sys.exit(main())
