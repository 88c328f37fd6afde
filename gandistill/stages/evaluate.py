"""evaluate: everything a reviewer needs to trust (or reject) the student, in one report.

On the real test split — which no stage trains or selects on (train_teacher and distill
also score their final model on it, for their own result.json; nothing reads that back) —
teacher, student and any baseline students are compared on:

- accuracy with a 95 % Wilson interval, McNemar's paired test student vs teacher,
  per-class accuracy and the confusion matrix;
- fidelity to the teacher: top-1 agreement and KL(p^T ‖ p^S);
- calibration: 15-bin ECE and reliability diagrams;
- cost: parameters, MACs (FlopCounterMode), serialized size, and speed — batch-1 latency
  p50/p95 and batch-256 throughput for eager PyTorch, TorchScript and ONNX Runtime, all
  timed interleaved in this one process after warm-up;
- GAN quality (when a generator is given): teacher-IS, teacher-FID of generated vs real
  test images (with the real-vs-real FID of val vs test as the floor to read it against),
  class coverage, conditioning agreement;
- a memorisation audit: nearest-train distances of generated samples vs held-out real ones,
  in pixel and teacher-feature space (see `gandistill.evaluation.privacy`).

Outputs in `out_dir`: result.json (read by export, promote and the CLI), report.html
(self-contained), report.md, and the PNG figures.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gandistill.config import Params
from gandistill.data.dataset import as_float, load_meta, load_split, to_tensors
from gandistill.errors import DataError
from gandistill.evaluation import backends, cost, plots, privacy, transfer
from gandistill.evaluation import metrics as M
from gandistill.evaluation.gan_quality import (
    frechet_distance,
    sample_balanced,
    sample_quality,
    teacher_features,
)
from gandistill.evaluation.report import Figure, Section, Table, fmt, write_html, write_markdown
from gandistill.nets import count_parameters
from gandistill.runtime import seed_everything
from gandistill.stages.common import (
    accuracy,
    load_classifier,
    load_generator,
    load_model_file,
    predict_logits,
    read_result,
    write_result,
)
from gandistill.tracking import NullTracker, Tracker

log = logging.getLogger(__name__)

BACKENDS = ("eager", "torchscript", "onnxruntime")
THROUGHPUT_BATCH = 256
GAN_SEED_OFFSET = 7919  # evaluation samples differ from any the training stages drew


def _model_info(folder: Path) -> dict[str, Any]:
    """Architecture / method recorded next to a model (empty for imported TorchScript)."""
    try:
        blob = load_model_file(folder)
    except DataError:
        return {}
    return {k: blob[k] for k in ("arch", "method") if k in blob}


def _classification(name: str, logits: torch.Tensor, labels: torch.Tensor, num_classes: int,
                    bins: int) -> dict[str, Any]:
    preds = logits.argmax(1)
    cm = M.confusion_matrix(labels.numpy(), preds.numpy(), num_classes)
    correct = int((preds == labels).sum())
    lo, hi = M.wilson_interval(correct, len(labels))
    return {"name": name, "acc": accuracy(logits, labels), "ci": (lo, hi), "cm": cm,
            "per_class": M.per_class_accuracy(cm), "calibration": M.calibration(logits, labels, bins),
            "correct": (preds == labels).numpy()}


def _speed(models: dict[str, nn.Module], example: torch.Tensor, batch: torch.Tensor, runs: int,
           opset: int, workdir: Path) -> tuple[dict[str, dict[str, dict[str, float]]], dict[str, int]]:
    """Time every (model, backend) pair interleaved; also returns each model's ONNX size."""
    runners: dict[str, cost.Runner] = {}
    onnx_bytes: dict[str, int] = {}
    for name, model in models.items():
        runners[f"{name}/eager"] = model
        runners[f"{name}/torchscript"] = backends.to_torchscript(model, example)
        path = backends.to_onnx(model, example, workdir / f"{name}.onnx", opset)
        onnx_bytes[name] = path.stat().st_size
        runners[f"{name}/onnxruntime"] = backends.onnx_runner(backends.onnx_session(path))
    timed = cost.benchmark(runners, example[:1], batch, runs=runs, warmup=10)
    nested: dict[str, dict[str, dict[str, float]]] = {}
    for key, value in timed.items():
        model, backend = key.split("/")
        nested.setdefault(model, {})[backend] = value
    return nested, onnx_bytes


def _real_grid(x: torch.Tensor, y: torch.Tensor, preds: torch.Tensor, class_names: list[str],
               per_class: int = 6) -> dict[str, list[tuple[np.ndarray, str, bool]]]:
    """Per class: up to 2 misclassified test images first (the informative ones), then correct."""
    rows = {}
    for k, name in enumerate(class_names):
        idx = torch.nonzero(y == k).flatten()
        wrong = idx[preds[idx] != k][:2]
        right = idx[preds[idx] == k][: per_class - len(wrong)]
        cells = [(as_float(x[i : i + 1])[0].numpy(), f"→{class_names[int(preds[i])]}", bool(preds[i] == k))
                 for i in torch.cat([wrong, right]).tolist()]
        rows[name] = cells
    return rows


def _history(folder: str | Path | None) -> list[dict[str, float]]:
    return list(read_result(folder).get("history") or []) if folder else []


def run(params: Params, data_dir: str | Path, teacher_dir: str | Path, student_dir: str | Path,
        generator_dir: str | Path | None, out_dir: str | Path, tracker: Tracker | None = None,
        baseline_dirs: dict[str, str | Path] | None = None,
        translator_dir: str | Path | None = None) -> dict[str, Any]:
    """Evaluate teacher vs student (and optional baseline students, name → model folder).

    Returns the result dict also written to `out_dir/result.json`: "metrics" (flat name →
    float), "class_names", "confusion_matrix" (student; rows = true class), "report_html" and
    "report_md" (absolute paths), "figures", "per_class_accuracy", "baselines", "speed",
    "data_version" and a few top-level scalars for summaries.
    """
    tracker = tracker or NullTracker()
    ep = params.evaluate
    started = time.perf_counter()
    seed_everything(params.seed)
    if params.runtime.threads:
        torch.set_num_threads(params.runtime.threads)
    source_dir, out_dir = Path(data_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    teacher_info, student_info = _model_info(Path(teacher_dir)), _model_info(Path(student_dir))
    # A target-domain student (cross-domain transfer) is evaluated on the target test split, against
    # the teacher reading raw target images (the source-only baseline); see evaluation/transfer.py.
    data_dir = transfer.evaluation_data(source_dir, student_info.get("method"))
    meta = load_meta(data_dir)
    names = list(meta.class_names)
    k = meta.num_classes
    test_x, test_y = to_tensors(load_split(data_dir, "test"))
    if len(test_y) == 0:
        raise DataError(f"{data_dir}: the test split is empty; re-run prepare_data with a test split")

    teacher = transfer.evaluation_teacher(load_classifier(teacher_dir).eval(), source_dir, student_info.get("method"))
    student = load_classifier(student_dir).eval()
    baselines = {name: load_classifier(folder).eval() for name, folder in (baseline_dirs or {}).items()}
    student_result = read_result(student_dir)

    # -- accuracy, fidelity, calibration ---------------------------------------------------
    logits = {"teacher": predict_logits(teacher, test_x, ep.batch_size),
              "student": predict_logits(student, test_x, ep.batch_size)}
    for name, model in baselines.items():
        logits[name] = predict_logits(model, test_x, ep.batch_size)
    cls = {name: _classification(name, lg, test_y, k, ep.ece_bins) for name, lg in logits.items()}
    t, s = cls["teacher"], cls["student"]
    metrics: dict[str, float] = {
        "teacher_test_acc": t["acc"], "student_test_acc": s["acc"],
        "student_test_acc_ci_low": s["ci"][0], "student_test_acc_ci_high": s["ci"][1],
        "acc_drop": t["acc"] - s["acc"],
        "mcnemar_p_student_vs_teacher": M.mcnemar_p(t["correct"], s["correct"]),
        "agreement": M.agreement(logits["teacher"], logits["student"]),
        "kl_teacher_student": M.mean_kl(logits["teacher"], logits["student"]),
        "ece_teacher": t["calibration"].ece, "ece_student": s["calibration"].ece,
        "test_samples": float(len(test_y)),
    }

    # -- cost --------------------------------------------------------------------------------
    example = as_float(test_x[:2].clone())
    batch = as_float(test_x[:THROUGHPUT_BATCH].repeat(-(-THROUGHPUT_BATCH // len(test_y)), 1, 1, 1)
                     [:THROUGHPUT_BATCH].clone())
    sizes = {"teacher": teacher, "student": student}
    for name, model in sizes.items():
        metrics[f"params_{name}"] = float(count_parameters(model))
        metrics[f"size_bytes_{name}"] = float(backends.serialized_bytes(model))
        try:
            metrics[f"macs_{name}"] = float(cost.count_macs(model, example[:1]))
        except Exception as exc:  # an imported TorchScript teacher may hide its ops
            log.warning("[evaluate] cannot count MACs of the %s: %s", name, exc)
    metrics["compression_ratio"] = metrics["params_teacher"] / max(1.0, metrics["params_student"])
    metrics["size_ratio"] = metrics["size_bytes_teacher"] / max(1.0, metrics["size_bytes_student"])
    if metrics.get("macs_student"):
        metrics["macs_ratio"] = metrics.get("macs_teacher", float("nan")) / metrics["macs_student"]
    with tempfile.TemporaryDirectory() as tmp:
        speed, onnx_bytes = _speed(sizes, example, batch, ep.latency_runs, params.export.onnx_opset,
                                   Path(tmp))
    for name in sizes:
        metrics[f"onnx_bytes_{name}"] = float(onnx_bytes[name])
        for backend, values in speed[name].items():
            for key, value in values.items():
                metrics[f"{key}_{name}_{backend}"] = value
    for backend in BACKENDS:
        metrics[f"speedup_latency_{backend}"] = (speed["teacher"][backend]["latency_p50_ms"]
                                                 / speed["student"][backend]["latency_p50_ms"])
        metrics[f"speedup_throughput_{backend}"] = (speed["student"][backend]["throughput_ips"]
                                                    / speed["teacher"][backend]["throughput_ips"])
    metrics["threads"] = float(torch.get_num_threads())

    # -- figures -----------------------------------------------------------------------------
    figures: dict[str, Path] = {}
    figures["reliability"] = plots.reliability_diagram(
        {"teacher": t["calibration"], "student": s["calibration"]}, out_dir / "reliability.png")
    figures["confusion"] = plots.confusion_heatmap(s["cm"], names, out_dir / "confusion_student.png",
                                                   "student confusion matrix (test)")
    figures["per_class"] = plots.per_class_bars({n: c["per_class"] for n, c in cls.items()}, names,
                                                out_dir / "per_class_accuracy.png")
    figures["samples"] = plots.sample_grid(
        _real_grid(test_x, test_y, logits["student"].argmax(1), names), out_dir / "samples_test.png",
        "test images per class with the student's prediction (red = wrong)")
    figures["speed"] = plots.speed_bars(speed, out_dir / "speed.png")
    histories = {"teacher": _history(teacher_dir), "generator (train_gan)": _history(generator_dir),
                 "translator (train_translator)": _history(translator_dir),
                 f"student ({student_info.get('method', 'distill')})": _history(student_dir)}
    histories |= {f"baseline {n}": _history(f) for n, f in (baseline_dirs or {}).items()}
    curves = plots.training_curves(histories, out_dir / "training_curves.png")
    if curves is not None:
        figures["training_curves"] = curves

    # -- GAN quality and privacy audit ----------------------------------------------------------
    gan_section: Section | None = None
    privacy_section: Section | None = None
    if generator_dir is not None:
        generator = load_generator(generator_dir)
        n_gen = max(ep.gan_samples, ep.privacy_samples)
        images, labels = sample_balanced(generator, n_gen, k, seed=params.seed + GAN_SEED_OFFSET)
        real_test = as_float(test_x[: ep.gan_samples].clone())
        quality = sample_quality(images[: ep.gan_samples], labels[: ep.gan_samples], teacher, real_test)
        metrics |= {f"gan_{key}": value for key, value in quality.items()}
        metrics["gan_conditioning_agreement"] = metrics.pop("gan_agreement")
        val = load_split(data_dir, "val")
        if len(val):
            # FID has a small-sample bias: read gan_fid against two *real* samples of similar size
            val_feats, _ = teacher_features(teacher, as_float(torch.from_numpy(val.x[: ep.gan_samples])))
            test_feats, _ = teacher_features(teacher, real_test)
            metrics["fid_real_val_vs_test"] = frechet_distance(val_feats.numpy(), test_feats.numpy())
        gen_preds = teacher(images[:k * 6]).argmax(1)
        gen_rows: dict[str, list[tuple[np.ndarray, str, bool]]] = {n: [] for n in names}
        for i in range(min(len(labels), k * 6)):
            c = int(labels[i])
            pred = int(gen_preds[i])
            gen_rows[names[c]].append((images[i].numpy(), f"T:{names[pred]}", pred == c))
        figures["samples_generated"] = plots.sample_grid(
            gen_rows, out_dir / "samples_generated.png",
            "generated images per conditioning class with the teacher's label (red = disagrees)")
        gan_section = Section("GAN sample quality (teacher as feature extractor)", [
            "Inception Score and FID use the trained teacher in place of an Inception network (which "
            "has never seen this domain): IS from its softmax, FID from its penultimate features. "
            "Read FID against the real-vs-real floor (val vs test, same sample size)."],
            [Table(["metric", "value"], [
                ["teacher-IS (1…K)", fmt(metrics["gan_inception_score"])],
                ["teacher-FID generated vs real test", fmt(metrics["gan_fid"])],
                ["teacher-FID real val vs real test (floor)", fmt(metrics.get("fid_real_val_vs_test"))],
                ["class coverage (normalised entropy)", fmt(metrics["gan_coverage"])],
                ["conditioning agreement P[teacher(G(z,y)) = y]",
                 fmt(metrics["gan_conditioning_agreement"], "%")],
                ["mean teacher confidence", fmt(metrics["gan_teacher_confidence"], "%")],
            ])], [Figure(figures["samples_generated"], "generated samples")])

        # privacy: nearest-train distances, pixels and teacher features
        n_priv = ep.privacy_samples
        train = load_split(data_dir, "train")
        train_f = as_float(torch.from_numpy(train.x))
        gen_p, real_p = images[:n_priv], as_float(test_x[:n_priv].clone())
        pixel = privacy.audit_space(gen_p, real_p, train_f)
        feats = {name: teacher_features(teacher, x)[0] for name, x in
                 (("gen", gen_p), ("real", real_p), ("train", train_f))}
        feature = privacy.audit_space(feats["gen"], feats["real"], feats["train"])
        metrics |= pixel.summary("privacy_pixel") | feature.summary("privacy_feature")
        closest = np.argsort(pixel.generated)[:8]
        figures["privacy_pairs"] = plots.privacy_pairs(
            gen_p[closest].numpy(), train_f[pixel.nearest_index[closest]].numpy(), pixel.generated[closest],
            pixel.threshold, out_dir / "privacy_pairs.png")
        figures["privacy_hist"] = plots.distance_histogram(
            {"pixel L2": (pixel.generated, pixel.real, pixel.threshold),
             "teacher-feature L2": (feature.generated, feature.real, feature.threshold)},
            out_dir / "privacy_distances.png")
        flag = max(pixel.fraction_below, feature.fraction_below)
        verdict = ("no sign of memorisation: generated samples are no closer to training images than "
                   "held-out real images are" if flag <= 0.05 else
                   f"WARNING: {flag * 100:.1f} % of generated samples are closer to a training image than "
                   "99 % of held-out real images — inspect the closest pairs before sharing the generator")
        privacy_section = Section("Privacy audit (memorisation)", [
            "For each generated sample, the distance to its nearest training image; the same for held-out "
            "real test images. The threshold is the 1st percentile of the real distances, so a generator "
            "that does not copy puts about 1 % of its samples below it.", verdict],
            [Table(["space", "median gen→train", "median real→train", "min gen→train", "threshold (p1 real)",
                    "generated below threshold"],
                   [[space, fmt(np.median(a.generated)), fmt(np.median(a.real)),
                     fmt(a.generated.min()), fmt(a.threshold), fmt(a.fraction_below, "%")]
                    for space, a in (("pixel", pixel), ("teacher features", feature))])],
            [Figure(figures["privacy_hist"], "nearest-train distance distributions"),
             Figure(figures["privacy_pairs"], "closest generated/train pairs")])

    # -- baselines -------------------------------------------------------------------------------
    baseline_rows: dict[str, dict[str, float]] = {}
    for name, model in baselines.items():
        c = cls[name]
        row = {"test_acc": c["acc"], "agreement": M.agreement(logits["teacher"], logits[name]),
               "ece": c["calibration"].ece, "params": float(count_parameters(model)),
               "mcnemar_p_vs_student": M.mcnemar_p(s["correct"], c["correct"])}
        baseline_rows[name] = row
        metrics |= {f"baseline_{name}_{key}": value for key, value in row.items()}

    # -- report ----------------------------------------------------------------------------------
    method = student_info.get("method", student_result.get("method", "?"))
    acc_rows = [["teacher", teacher_info.get("arch", "imported"), fmt(t["acc"], "%"),
                 f"{fmt(t['ci'][0], '%')} – {fmt(t['ci'][1], '%')}", "100.00 %",
                 fmt(t["calibration"].ece, "%"),
                 fmt(metrics["params_teacher"], "int")],
                [f"student ({method})", student_info.get("arch", "?"), fmt(s["acc"], "%"),
                 f"{fmt(s['ci'][0], '%')} – {fmt(s['ci'][1], '%')}", fmt(metrics["agreement"], "%"),
                 fmt(s["calibration"].ece, "%"), fmt(metrics["params_student"], "int")]]
    for name, row in baseline_rows.items():
        c = cls[name]
        acc_rows.append([f"baseline {name}", _model_info(Path((baseline_dirs or {})[name])).get("arch", "?"),
                         fmt(row["test_acc"], "%"), f"{fmt(c['ci'][0], '%')} – {fmt(c['ci'][1], '%')}",
                         fmt(row["agreement"], "%"), fmt(row["ece"], "%"), fmt(row["params"], "int")])
    per_class_rows = [[n] + [fmt(c["per_class"][i], "%") for c in cls.values()] for i, n in enumerate(names)]
    speed_rows = [[m, b, fmt(v["latency_p50_ms"], "ms"), fmt(v["latency_p95_ms"], "ms"),
                   f"{v['throughput_ips']:,.0f}"] for m, per in speed.items() for b, v in per.items()]
    version = ", ".join(f"{key}={value}" for key, value in sorted(meta.version.items())) or "unversioned"
    sections = [
        Section("Summary", [
            f"Dataset: {meta.source}, {len(test_y)} test images, {k} classes; data version: {version}.",
            f"Student ({student_info.get('arch', '?')}, method {method}) reaches {fmt(s['acc'], '%')} test "
            f"accuracy vs the teacher's {fmt(t['acc'], '%')} (drop {fmt(metrics['acc_drop'], '%')}; McNemar "
            f"p = {metrics['mcnemar_p_student_vs_teacher']:.3g}), agrees with the teacher on "
            f"{fmt(metrics['agreement'], '%')} of test images, with "
            f"{metrics['compression_ratio']:.1f}× fewer parameters and "
            f"{metrics.get('macs_ratio', float('nan')):.1f}× fewer MACs.",
            f"Student saw {student_result.get('real_images_seen_by_student', 'an unknown number of')} real "
            "training images; model selection used the validation split, test is reported once here."],
            [Table(["model", "arch", "test accuracy", "95 % CI (Wilson)", "agreement with teacher", "ECE",
                    "parameters"], acc_rows)]),
        Section("Fidelity and calibration", [
            f"Top-1 agreement {fmt(metrics['agreement'], '%')}; mean KL(teacher ‖ student) "
            f"{metrics['kl_teacher_student']:.4f} nats. ECE uses {ep.ece_bins} equal-width confidence bins "
            "(Guo et al. 2017)."], [], [Figure(figures["reliability"], "reliability diagrams")]),
        Section("Per-class accuracy", [], [Table(["class", *cls.keys()], per_class_rows)],
                [Figure(figures["per_class"], "per-class test accuracy"),
                 Figure(figures["confusion"], "student confusion matrix (rows = true class)"),
                 Figure(figures["samples"], "test samples per class")]),
        Section("Cost and speed", [
            f"Timed in one process on {torch.get_num_threads()} thread(s), {ep.latency_runs} interleaved "
            f"batch-1 calls per backend after warm-up; throughput at batch {THROUGHPUT_BATCH}. Student "
            f"speed-up (p50 latency): eager {metrics['speedup_latency_eager']:.2f}×, TorchScript "
            f"{metrics['speedup_latency_torchscript']:.2f}×, ONNX Runtime "
            f"{metrics['speedup_latency_onnxruntime']:.2f}×."],
            [Table(["", "teacher", "student", "ratio"], [
                ["parameters", fmt(metrics["params_teacher"], "int"), fmt(metrics["params_student"], "int"),
                 fmt(metrics["compression_ratio"], "x")],
                ["MACs / image", fmt(metrics.get("macs_teacher"), "int"),
                 fmt(metrics.get("macs_student"), "int"),
                 fmt(metrics.get("macs_ratio"), "x")],
                ["state-dict bytes", fmt(metrics["size_bytes_teacher"], "int"),
                 fmt(metrics["size_bytes_student"], "int"), fmt(metrics["size_ratio"], "x")],
                ["ONNX bytes", fmt(metrics["onnx_bytes_teacher"], "int"),
                 fmt(metrics["onnx_bytes_student"], "int"),
                 fmt(metrics["onnx_bytes_teacher"] / max(1.0, metrics["onnx_bytes_student"]), "x")]]),
             Table(["model", "backend", "p50 latency", "p95 latency", "images/s"], speed_rows)],
            [Figure(figures["speed"], "latency and throughput")]),
    ]
    transfer_eval = None
    if transfer.is_target_student(student_info.get("method")):
        transfer_eval = transfer.evaluate_transfer(source_dir, teacher_dir, student_dir, translator_dir,
                                                   baseline_dirs, out_dir, ep.batch_size)
        metrics |= transfer_eval.metrics
        figures |= transfer_eval.figures
        sections.insert(1, transfer_eval.section)
    if gan_section:
        sections.append(gan_section)
    if privacy_section:
        sections.append(privacy_section)
    if "training_curves" in figures:
        sections.append(Section("Training curves", ["Metrics at each evaluation of every stage's loop."],
                                [], [Figure(figures["training_curves"], "training curves")]))
    title = f"gandistill evaluation — {meta.source}"
    report_html = write_html(title, sections, out_dir / "report.html")
    report_md = write_markdown(title, sections, out_dir / "report.md")

    result: dict[str, Any] = {
        "metrics": metrics, "class_names": names,
        "confusion_matrix": s["cm"].tolist(), "confusion_matrix_teacher": t["cm"].tolist(),
        "per_class_accuracy": {n: [None if np.isnan(v) else float(v) for v in c["per_class"]]
                               for n, c in cls.items()},
        "baselines": baseline_rows, "speed": speed,
        "report_html": str(report_html.resolve()), "report_md": str(report_md.resolve()),
        "figures": {key: path.name for key, path in figures.items()},
        "data_version": meta.version, "data_source": meta.source,
        "teacher": teacher_info, "student": student_info | {"method": method},
        "teacher_test_acc": t["acc"], "student_test_acc": s["acc"], "agreement": metrics["agreement"],
        "compression_ratio": metrics["compression_ratio"], "wall_s": time.perf_counter() - started,
    }
    if transfer_eval is not None:
        result["transfer"] = transfer.summary_rows(metrics)
    write_result(out_dir, result)
    tracker.log_metrics(metrics)
    tracker.set_tags({"student.method": method, "student.arch": student_info.get("arch", "?")})
    for path in [*figures.values(), report_html, report_md, out_dir / "result.json"]:
        tracker.log_artifact(path, "evaluation")
    log.info("[evaluate] teacher %.4f, student %.4f (agreement %.4f, %.1f× fewer params) in %.1f s",
             t["acc"], s["acc"], metrics["agreement"], metrics["compression_ratio"], result["wall_s"])
    return result
