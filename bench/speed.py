"""Speed benchmark, two parts:

- training: per-step cost of the pieces whose speed drove design choices (GAN architectures,
  G upsampling, a KD step);
- inference: teacher FP32 vs student FP32 vs student INT8 in ONNX Runtime, per teacher/student
  pair, with a profile of where the time goes (`bench.inference`).

    python -m bench.speed [--part training|inference] [--threads N]      (or: make bench-speed)

Measured side by side in one process, interleaved round-robin after warm-up, medians of
N rounds, with ratios — so machine noise hits every variant alike. A part's run replaces its
own entry in bench/results/speed.json; speed.md is rewritten from the json (both parts, each
with the command, machine and date that made it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from bench import inference
from bench.quality import git_commit, machine
from gandistill import losses
from gandistill.nets import build_classifier, build_gan

RESULTS = Path(__file__).resolve().parent / "results"
BATCH = 128


def gan_step(arch: str, **sizes: int) -> Callable[[], None]:
    """One discriminator + generator update of train_gan (adversarial + feature matching)."""
    g, d = build_gan(arch, 64, 10, 1, (28, 28), sizes.get("ngf", 16), sizes.get("ndf", 16), hidden=256)
    opt_g, opt_d = torch.optim.Adam(g.parameters()), torch.optim.Adam(d.parameters())
    real, y = torch.rand(BATCH, 1, 28, 28), torch.randint(0, 10, (BATCH,))

    def step() -> None:
        fake = g(torch.randn(BATCH, 64), y)
        real_logit, real_feat = d(real, y)
        fake_logit, _ = d(fake.detach(), y)
        opt_d.zero_grad()
        losses.d_loss_bce(real_logit, fake_logit).backward()
        opt_d.step()
        fake_logit, fake_feat = d(fake, y)
        opt_g.zero_grad()
        (losses.g_loss_bce(fake_logit) + losses.feature_matching(real_feat, fake_feat)).backward()
        opt_g.step()

    return step


def upsample_then_conv() -> Callable[[], None]:
    """The generator's ×2 stage as nearest-upsample + 3×3 conv (what transposed convs replaced)."""
    conv = torch.nn.Conv2d(32, 16, 3, padding=1)
    h = torch.randn(BATCH, 32, 14, 14)
    return lambda: conv(F.interpolate(h, scale_factor=2.0, mode="nearest")).sum().backward()


def transposed_conv() -> Callable[[], None]:
    conv = torch.nn.ConvTranspose2d(32, 16, 4, 2, 1)
    h = torch.randn(BATCH, 32, 14, 14)
    return lambda: conv(h).sum().backward()


def student_kd_step() -> Callable[[], None]:
    teacher, student = build_classifier("lenet5", 1, (28, 28), 10), build_classifier("lenet5_half", 1, (28, 28), 10)
    opt = torch.optim.AdamW(student.parameters())
    x = torch.rand(256, 1, 28, 28)

    def step() -> None:
        with torch.no_grad():
            t = teacher(x)
        opt.zero_grad()
        losses.kd_kl(student(x), t, 4.0).backward()
        opt.step()

    return step


CASES: dict[str, Callable[[], Callable[[], None]]] = {
    "gan step, conv G/D (ngf=ndf=16)": lambda: gan_step("conv", ngf=16, ndf=16),
    "gan step, conv G/D (ngf=ndf=32)": lambda: gan_step("conv", ngf=32, ndf=32),
    "gan step, MLP G/D (hidden 256)": lambda: gan_step("mlp"),
    "G stage: upsample + conv (fwd+bwd)": upsample_then_conv,
    "G stage: transposed conv (fwd+bwd)": transposed_conv,
    "distill step, KD at batch 256": student_kd_step,
}


def training(rounds: int = 15, reps: int = 5) -> dict[str, object]:
    torch.manual_seed(0)
    fns = {name: make() for name, make in CASES.items()}
    for fn in fns.values():  # warm-up
        for _ in range(3):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):  # interleaved: each round runs every case once
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(reps):
                fn()
            times[name].append((time.perf_counter() - start) / reps * 1000)
    return {"median_ms": {name: statistics.median(v) for name, v in times.items()}, "samples_ms": times,
            "rounds": rounds, "reps": reps}


def training_markdown(result: dict[str, object]) -> list[str]:
    medians: dict[str, float] = result["median_ms"]  # type: ignore[assignment]
    mlp = medians["gan step, MLP G/D (hidden 256)"]
    rows = ["## Training steps", "",
            f"Median ms per call over {result.get('rounds', 15)} interleaved rounds of {result.get('reps', 5)} "
            f"(batch {BATCH} unless noted).", "", "| case | median ms | ratio |", "|---|---|---|"]
    for name, value in medians.items():
        if name.startswith("gan step"):
            ratio = f"{value / mlp:.1f}× the MLP step"
        elif name.startswith("G stage"):
            ratio = f"{value / medians['G stage: transposed conv (fwd+bwd)']:.1f}× transposed conv"
        else:
            ratio = ""
        rows.append(f"| {name} | {value:.1f} | {ratio} |")
    return rows + [""]


PARTS = {"training": (training, training_markdown), "inference": (inference.run, inference.markdown)}


def _load() -> dict[str, dict[str, object]]:
    path = RESULTS / "speed.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    if "median_ms" in data:  # written before the benchmark had parts: it is the training part
        data = {"training": data | {"command": "python -m bench.speed",
                                    "updated": "2026-11-28 19:05 UTC"}}
    return data


def main(parts: list[str], threads: int | None = None) -> None:
    if threads:  # PyTorch's intra-op threads; ONNX Runtime sessions take the same count
        torch.set_num_threads(threads)
    data = _load()
    for part in parts:
        measure, _ = PARTS[part]
        command = f"python -m bench.speed --part {part}" + (f" --threads {threads}" if threads else "")
        key = part + (f"@{threads}" if threads and threads > 1 else "")  # 1- and N-thread results side by side
        data[key] = measure() | {"machine": machine(), "command": command,
                                  "updated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                  "git_commit": git_commit()}
    rows = ["# Speed benchmark", ""]
    for key in sorted(data, key=lambda k: (list(PARTS).index(k.split("@")[0]), k)):
        to_markdown, meta = PARTS[key.split("@")[0]][1], data[key]
        rows += [f"Command: `{meta['command']}` — machine: {meta['machine']} — updated: {meta['updated']}"
                 + (f" — commit: {meta['git_commit']}" if "git_commit" in meta else ""), "",
                 *to_markdown(meta)]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "speed.json").write_text(json.dumps(data, indent=2))
    (RESULTS / "speed.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=sorted(PARTS), action="append",
                        help="measure only this part (repeatable); default: all")
    parser.add_argument("--threads", type=int, default=None, help="torch / ONNX Runtime intra-op threads")
    args = parser.parse_args()
    main(args.part or list(PARTS), args.threads)
