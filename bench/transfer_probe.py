"""Exploratory probe for issue 22: the PixelDA translator and the target student, trained directly
(no kfp, no MLflow, no checkpoints) with target-label probes the pipeline never has, timed in CPU
seconds of this process (1 thread) so settings compare per CPU-minute on a shared machine.

    python -m bench.transfer_probe --target mnistm --seed 0 --steps 1500 [--width 16 --blocks 2 ...]
    python -m bench.transfer_probe --target digits8 --seed 0 --student both

Data and teacher come from bench.transfer_ablations' cache (same params → same folders). The
translator is saved under bench/work/transfer-probe/ keyed by its settings, so student-only
probes reuse it. Each run appends one JSON line to bench/results/transfer-probe.jsonl with the
command, commit, load and every probe (this is a notebook, not a results table).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from bench.domains import digits8
from bench.quality import git_commit
from bench.transfer_ablations import make_params
from gandistill import losses, transfer
from gandistill.augment import random_affine, random_colour
from gandistill.data.dataset import StepBatches, as_float, load_meta, load_split, target_folder
from gandistill.fingerprints import fingerprint, params_sections
from gandistill.loop import warmup_cosine
from gandistill.model_files import load_classifier
from gandistill.nets import build_classifier
from gandistill.nets.pixelda import NoisyDiscriminator, PixelDAGenerator
from gandistill.nets.translator import ShapeAdapter
from gandistill.pixelda import PixelDATranslator, PixelDAWeights, pixelda_step
from gandistill.stages import prepare_data, train_teacher

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / "work" / "transfer-probe"
ABL = ROOT / "bench" / "work" / "transfer-ablations"
LOG = ROOT / "bench" / "results" / "transfer-probe.jsonl"


def cpu() -> float:
    return time.process_time()


def target_overrides(target: str) -> list[str]:
    if target == "mnistm":
        return []
    if target == "digits8":
        return ["data.target_source=npz", f"data.target_path={digits8(ROOT / 'bench' / 'work' / 'domains')}",
                "distill.student_arch=auto"]
    raise SystemExit(f"unknown target {target}")


def data_and_teacher(seed: int, overrides: list[str]) -> tuple[Path, Path]:
    from bench.quality import code_fingerprint

    params = make_params(seed, overrides)
    data_dir = ABL / f"data-seed{seed}-{fingerprint(params.data.model_dump(), params.seed)[:8]}"
    if not (data_dir / "result.json").is_file():
        prepare_data.run(params, data_dir)
    key = fingerprint(params_sections(params, "teacher", "data"), code_fingerprint("gandistill.stages.train_teacher"))
    teacher_dir = ABL / f"teacher-seed{seed}-{key[:10]}"
    if not (teacher_dir / "result.json").is_file():
        train_teacher.run(params, data_dir, teacher_dir)
    return data_dir, teacher_dir


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    return torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)])


def acc(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(1) == y).float().mean())


def atc_estimate(conf_ref: torch.Tensor, correct_ref: torch.Tensor, conf_new: torch.Tensor) -> float:
    """Garg et al. 2022 (ATC): threshold t with P_ref[conf > t] = acc_ref; estimate = P_new[conf > t]."""
    t = torch.quantile(conf_ref, 1 - correct_ref.float().mean().clamp(1e-4, 1 - 1e-4))
    return float((conf_new > t).float().mean())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default="mnistm")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--nz", type=int, default=10)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--task-arch", default="auto")
    ap.add_argument("--task-weight", type=float, default=1.0)
    ap.add_argument("--teacher-weight", type=float, default=0.0)
    ap.add_argument("--d-width", type=int, default=32)
    ap.add_argument("--d-noise", type=float, default=0.2)
    ap.add_argument("--d-dropout", type=float, default=0.1)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--student", default="none", choices=["none", "translated", "pseudo", "both", "mean_teacher"])
    ap.add_argument("--student-steps", type=int, default=1000)
    ap.add_argument("--student-batch", type=int, default=128)
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--colour", action="store_true")
    ap.add_argument("--note", default="")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    started_wall, load0 = time.time(), os.getloadavg()[0]

    data_dir, teacher_dir = data_and_teacher(args.seed, target_overrides(args.target))
    meta_a, meta_b = load_meta(data_dir), load_meta(target_folder(data_dir))
    teacher = load_classifier(teacher_dir).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    tr_a = load_split(data_dir, "train")
    xa_all = torch.from_numpy(tr_a.x)
    xb_all = torch.from_numpy(load_split(target_folder(data_dir), "train").x)
    va = load_split(data_dir, "val")
    val_a, val_a_y = as_float(torch.from_numpy(va.x[:1000])), torch.from_numpy(va.y[:1000])
    vb = load_split(target_folder(data_dir), "val")
    val_b, val_b_y = as_float(torch.from_numpy(vb.x[:2000])), torch.from_numpy(vb.y[:2000])
    tb = load_split(target_folder(data_dir), "test")
    test_b, test_b_y = as_float(torch.from_numpy(tb.x)), torch.from_numpy(tb.y)
    shape_a, shape_b = meta_a.input_shape, meta_b.input_shape
    to_a = ShapeAdapter(shape_b, shape_a)
    src_only = transfer.source_only(teacher, meta_a, meta_b)
    so_test = acc(predict(src_only, test_b), test_b_y)
    so_val_logits = predict(src_only, val_b)
    t0 = cpu()
    labels_a = torch.cat([predict(teacher, as_float(xa_all[i:i + 5000])).argmax(1) for i in range(0, len(xa_all), 5000)])
    label_cpu = cpu() - t0
    print(f"source-only teacher on target test {so_test:.4f}; teacher labels on source train in {label_cpu:.1f} CPU-s")

    task_arch = args.task_arch
    if task_arch == "auto":
        c, h, w = shape_b
        task_arch = "lenet5" if min(h, w) >= 12 and max(h, w) <= 32 else "resnet8_w8"
    key = hashlib.sha1(json.dumps({k: v for k, v in vars(args).items() if k not in (
        "student", "student_steps", "student_batch", "threshold", "colour", "note")}, sort_keys=True).encode()
    ).hexdigest()[:10]
    tdir = WORK / f"pixelda-{args.target}-s{args.seed}-{key}"
    record: dict[str, Any] = {"args": vars(args), "commit": git_commit(), "load_start": load0,
                              "source_only_test": so_test, "task_arch": task_arch}
    gen = PixelDAGenerator(shape_a, shape_b, args.width, args.blocks, args.nz)
    task = build_classifier(task_arch, shape_b[0], shape_b[1:], meta_b.num_classes, mean=meta_b.mean, std=meta_b.std)
    translator = PixelDATranslator(gen, task)
    curve = []
    if (tdir / "translator.pt").is_file():
        translator.load_state_dict(torch.load(tdir / "translator.pt", weights_only=True))
        record["translator"] = json.loads((tdir / "translator.json").read_text())
        print("translator from cache", tdir)
    else:
        disc = NoisyDiscriminator(shape_b, args.d_width, args.d_noise, args.d_dropout)
        opt_g = torch.optim.Adam(gen.parameters(), lr=args.lr, betas=(0.5, 0.999))
        opt_dt = torch.optim.Adam([*disc.parameters(), *task.parameters()], lr=args.lr, betas=(0.5, 0.999))
        sched = [warmup_cosine(o, args.steps, final_fraction=0.05) for o in (opt_g, opt_dt)]
        ba = StepBatches(len(xa_all), args.batch, args.seed)
        bb = StepBatches(len(xb_all), args.batch, args.seed + 7919)
        weights = PixelDAWeights(task=args.task_weight, teacher=args.teacher_weight)
        train_cpu = 0.0
        for step in range(1, args.steps + 1):
            c0 = cpu()
            ia, ib = ba.indices(step - 1), bb.indices(step - 1)
            terms = pixelda_step(translator, disc, teacher, opt_g, opt_dt, as_float(xa_all[ia]), labels_a[ia],
                                 as_float(xb_all[ib]), weights, to_a)
            for s in sched:
                s.step()
            train_cpu += cpu() - c0
            if step % args.eval_every == 0 or step == args.steps:
                translator.eval()
                with torch.no_grad():
                    fake = gen(val_a)
                    sem = acc(teacher(to_a(fake)), val_a_y)
                    t_val_b = predict(task, val_b)
                    point = {
                        "step": step, "train_cpu_s": train_cpu,
                        "task_target_val": acc(t_val_b, val_b_y),
                        "task_translated": acc(task(fake), val_a_y),
                        "semantic_acc": sem,
                        "agree_task_teacher_raw": float((t_val_b.argmax(1) == so_val_logits.argmax(1)).float().mean()),
                        "teacher_raw_val": acc(so_val_logits, val_b_y),
                        "atc_teacher_raw_from_translated": atc_estimate(
                            F.softmax(teacher(to_a(fake)), 1).amax(1), teacher(to_a(fake)).argmax(1) == val_a_y,
                            F.softmax(so_val_logits, 1).amax(1)),
                        "atc_teacher_raw_from_source": atc_estimate(
                            F.softmax(teacher(val_a), 1).amax(1), teacher(val_a).argmax(1) == val_a_y,
                            F.softmax(so_val_logits, 1).amax(1)),
                        "task_conf_mean_b": float(F.softmax(t_val_b, 1).amax(1).mean()),
                        **{k: float(v) for k, v in terms.items()},
                    }
                translator.train()
                curve.append(point)
                print(json.dumps({k: round(v, 4) for k, v in point.items()}), flush=True)
        tdir.mkdir(parents=True, exist_ok=True)
        torch.save(translator.state_dict(), tdir / "translator.pt")
        record["translator"] = {"curve": curve, "train_cpu_s": train_cpu}
        (tdir / "translator.json").write_text(json.dumps(record["translator"]))
        save_grid(gen, val_a, tdir / "grid.png")
    translator.eval()
    for p in translator.parameters():
        p.requires_grad_(False)
    record["task_target_test"] = acc(predict(task, test_b), test_b_y)
    print(f"task classifier on target test {record['task_target_test']:.4f}")

    if args.student != "none":
        record["student"] = train_student(args, translator, teacher, xa_all, xb_all, meta_b, test_b, test_b_y)
    record |= {"wall_s": time.time() - started_wall, "load_end": os.getloadavg()[0]}
    LOG.parent.mkdir(parents=True, exist_ok=True)
    with open(LOG, "a") as f:
        f.write(json.dumps(record) + "\n")


def save_grid(gen: PixelDAGenerator, x: torch.Tensor, path: Path) -> None:
    import numpy as np
    from PIL import Image

    with torch.no_grad():
        out = gen(x[:16])
        src = gen.adapt(x[:16])
    rows = [torch.cat(list(src), dim=2), torch.cat(list(out), dim=2)]
    img = torch.cat(rows, dim=1)
    arr = (img.clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    if arr.shape[2] == 1:
        arr = arr[..., 0]
    Image.fromarray(arr).resize((arr.shape[1] * 3, arr.shape[0] * 3), Image.NEAREST).save(path)


def train_student(args: argparse.Namespace, translator: PixelDATranslator, teacher: torch.nn.Module,
                  xa_all: torch.Tensor, xb_all: torch.Tensor, meta_b: Any, test_b: torch.Tensor,
                  test_b_y: torch.Tensor) -> dict[str, Any]:
    c, h, w = meta_b.input_shape
    arch = "lenet5" if args.target == "mnistm" else "resnet8_w8"
    student = build_classifier(arch, c, (h, w), meta_b.num_classes, mean=meta_b.mean, std=meta_b.std)
    opt = torch.optim.AdamW(student.parameters(), lr=3e-3)
    sched = warmup_cosine(opt, args.student_steps, warmup_steps=min(200, args.student_steps // 10))
    ema = None
    if args.student == "mean_teacher":
        import copy
        ema = copy.deepcopy(student).eval()
    # Fixed pseudo-labels from the translator's task classifier on the target train images.
    pl_logits = torch.cat([predict(translator.task, as_float(xb_all[i:i + 2000])) for i in range(0, len(xb_all), 2000)])
    pl_conf, pl_label = F.softmax(pl_logits, 1).max(1)
    keep = pl_conf >= args.threshold
    print(f"pseudo-labels: {int(keep.sum())}/{len(keep)} above {args.threshold}")
    ba = StepBatches(len(xa_all), args.student_batch, args.seed + 1)
    bb = StepBatches(len(xb_all), args.student_batch, args.seed + 2)
    n_src = args.student_batch if args.student == "translated" else (
        0 if args.student == "pseudo" else args.student_batch // 2)
    n_tgt = args.student_batch - n_src
    curve, train_cpu = [], 0.0
    for step in range(1, args.student_steps + 1):
        c0 = cpu()
        loss = torch.zeros(())
        if n_src:
            ia = ba.indices(step - 1)[:n_src]
            x_a = random_affine(as_float(xa_all[ia]))
            with torch.no_grad():
                x_t = translator.translate(x_a)
                t_logits = teacher(x_a)
            if args.colour:
                x_t = random_colour(x_t)
            loss = loss + n_src / args.student_batch * losses.kd_kl(student(x_t), t_logits, 4.0)
        if n_tgt:
            ib = bb.indices(step - 1)[:n_tgt]
            x_b = as_float(xb_all[ib])
            if ema is None:
                m = keep[ib]
                if m.any():
                    logits = student(random_affine(x_b[m]))
                    loss = loss + n_tgt / args.student_batch * m.float().mean() * F.cross_entropy(logits, pl_label[ib][m])
            else:
                with torch.no_grad():
                    p = F.softmax(ema(x_b), 1)
                conf, lab = p.max(1)
                m = conf >= args.threshold
                if m.any():
                    loss = loss + n_tgt / args.student_batch * m.float().mean() * F.cross_entropy(
                        student(random_affine(x_b[m])), lab[m])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if ema is not None:
            with torch.no_grad():
                for pe, ps in zip(ema.parameters(), student.parameters(), strict=True):
                    pe.mul_(0.99).add_(ps, alpha=0.01)
                for be, bs in zip(ema.buffers(), student.buffers(), strict=True):
                    be.copy_(bs)
        train_cpu += cpu() - c0
        if step % 250 == 0 or step == args.student_steps:
            student.eval()
            point = {"step": step, "train_cpu_s": train_cpu, "test": acc(predict(student, test_b), test_b_y)}
            if ema is not None:
                point["ema_test"] = acc(predict(ema, test_b), test_b_y)
            student.train()
            curve.append(point)
            print("student", json.dumps(point), flush=True)
    return {"mode": args.student, "curve": curve, "final_test": curve[-1]["test"], "arch": arch}


if __name__ == "__main__":
    main()
