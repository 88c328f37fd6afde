"""evaluate: everything a reviewer needs to trust (or reject) the student, in one report.

On the real test split, teacher, student and any baseline students are compared; each block
of the report is one module here, and `run` reads like the report's table of contents:

- accuracy (`accuracy`): accuracy with a 95 % Wilson interval, McNemar's exact paired test
  student vs teacher, per-class accuracy and the confusion matrix; fidelity to the teacher
  (top-1 agreement, KL(p^T ‖ p^S)); calibration (15-bin ECE, reliability diagrams);
- what the student learned and why not the rest (`explain`): per-class coverage of what it
  learned from against its error, the disagreement atlas, teacher and student input-gradient
  maps, agreement over training (explain.json holds every number);
- cost and speed (`speed`): parameters, MACs (FlopCounterMode), serialized size, and batch-1
  latency p50/p95 and batch-256 throughput for eager PyTorch, the .pt2 program and ONNX Runtime,
  all timed interleaved in this one process after warm-up;
- GAN quality (`gan_quality`, when a generator is given): teacher-IS, teacher-FID of generated
  vs real test images (with the real-vs-real FID of val vs test as the floor to read it
  against), class coverage, conditioning agreement;
- a memorisation audit (`privacy`): nearest-train distances of generated samples vs held-out
  real ones, in pixel and teacher-feature space;
- training curves of every stage (`summary`);
- for a target-domain student (cross-domain transfer), the transfer side by side with its
  baselines (`gandistill.evaluation.transfer`), right after the summary; the generic blocks
  then read the target test split, with the teacher reading raw target images.

The test split is one no stage trains or selects on (train_teacher and distill also score
their final model on it, for their own result.json; nothing reads that back): this stage is
where test figures are reported, with intervals and tests.

Outputs in `out_dir`: result.json (read by export, promote and the CLI), report.html
(self-contained), report.md, summary.md (the headline tables, no figures: the kfp Markdown
output) and the PNG figures.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from gandistill import stage_params
from gandistill.config import Params
from gandistill.evaluation import transfer
from gandistill.evaluation.report import Section, write_html, write_markdown
from gandistill.results import write_result
from gandistill.runtime import seed_everything
from gandistill.stages.evaluate import accuracy, explain, gan_quality, privacy, speed
from gandistill.stages.evaluate.inputs import STUDENT, TEACHER, Block, Inputs, load_inputs
from gandistill.stages.evaluate.summary import summary_section, training_curves
from gandistill.tracking import NullTracker, Tracker

log = logging.getLogger(__name__)
T = TypeVar("T")

__all__ = ["Block", "Inputs", "run"]


def run(params: Params, data_dir: str | Path, teacher_dir: str | Path, student_dir: str | Path,
        generator_dir: str | Path | None, out_dir: str | Path, tracker: Tracker | None = None,
        baseline_dirs: dict[str, str | Path] | None = None,
        translator_dir: str | Path | None = None) -> dict[str, Any]:
    """Evaluate teacher vs student (and optional baseline students, name → model folder; the
    translator of a cross-domain student).

    Returns the result dict also written to `out_dir/result.json`: "metrics" (flat name →
    float), "class_names", "confusion_matrix" (student; rows = true class), "report_html",
    "report_md" and "summary_md" (absolute paths), "figures", "per_class_accuracy",
    "baselines", "speed", "data_version" and a few top-level scalars for summaries.
    """
    started = time.perf_counter()
    params = stage_params.view(params, "evaluate")  # only what it reads (its stage record): its cache key
    seed_everything(params.seed)
    if params.runtime.threads:
        torch.set_num_threads(params.runtime.threads)
    ev = load_inputs(params, data_dir, teacher_dir, student_dir, generator_dir, out_dir, baseline_dirs,
                     translator_dir)

    clock = _BlockClock()
    cross_domain = clock.time("transfer", transfer_block, ev)
    acc = clock.time("accuracy", accuracy.block, ev)
    explained = clock.time("explain", explain.block, ev, acc)
    cost = clock.time("speed", speed.block, ev, acc)
    generated = clock.time("gan_sample", gan_quality.sample, ev) if ev.generator_dir is not None else None
    gan = clock.time("gan_quality", gan_quality.block, ev, generated) if generated is not None else Block()
    audit = clock.time("privacy", privacy.block, ev, generated) if generated is not None else Block()
    curves = clock.time("curves", training_curves, ev)
    blocks = [cross_domain, acc, explained, cost, gan, audit, curves, Block(result={"block_seconds": clock.seconds})]

    metrics = {key: value for b in blocks for key, value in b.metrics.items()}
    summary = summary_section(ev, acc, metrics)
    result = _write_report(ev, [summary, *(section for b in blocks for section in b.sections)],
                           [summary, *cost.sections], blocks, metrics, started)
    tracker = tracker or NullTracker()
    tracker.log_metrics(metrics)
    tracker.set_tags({"student.method": ev.method, "student.arch": ev.info[STUDENT].get("arch", "?")})
    files = [path.name for b in blocks for path in b.files.values()]
    for name in [*result["figures"].values(), *files, "report.html", "report.md", "summary.md", "result.json"]:
        tracker.log_artifact(ev.out_dir / name, "evaluation")
    log.info("[evaluate] teacher %.4f, student %.4f (agreement %.4f, %.1f× fewer params) in %.1f s (%s)",
             metrics["teacher_test_acc"], metrics["student_test_acc"], metrics["agreement"],
             metrics["compression_ratio"], result["wall_s"],
             ", ".join(f"{name} {secs:.1f} s" for name, secs in clock.seconds.items()))
    return result


class _BlockClock:
    """Wall seconds of each report block (result.json "block_seconds"): what each costs a run,
    e.g. the explain block's budget (bench/explain_cost.py reads them)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def time(self, name: str, build: Callable[..., T], *args: Any) -> T:
        started = time.perf_counter()
        built = build(*args)
        self.seconds[name] = time.perf_counter() - started
        return built


def transfer_block(ev: Inputs) -> Block:
    """The cross-domain side by side (`gandistill.evaluation.transfer`); nothing for other students."""
    if not transfer.is_target_student(ev.info[STUDENT].get("method")):
        return Block()
    baselines = {name: ev.folders[name] for name in ev.baselines}
    found = transfer.evaluate_transfer(ev.source_dir, ev.folders[TEACHER], ev.folders[STUDENT], ev.translator_dir,
                                       baselines, ev.out_dir, ev.params.evaluate.batch_size)
    return Block(metrics=found.metrics, figures=found.figures, sections=[found.section],
                 result={"transfer": transfer.summary_rows(found.metrics)})


def _write_report(ev: Inputs, sections: list[Section], headline: list[Section], blocks: list[Block],
                  metrics: dict[str, float], started: float) -> dict[str, Any]:
    """report.html and report.md (every section), summary.md (the headline sections' text and
    tables, no figures: it is published as a kfp Markdown output) and result.json."""
    title = f"gandistill evaluation — {ev.meta.source}"
    report_html = write_html(title, sections, ev.out_dir / "report.html")
    report_md = write_markdown(title, sections, ev.out_dir / "report.md")
    summary_md = write_markdown(title, [Section(s.title, s.paragraphs, s.tables) for s in headline],
                                ev.out_dir / "summary.md")
    result: dict[str, Any] = {"metrics": metrics}
    for b in blocks:
        result |= b.result
    result |= {
        "report_html": str(report_html.resolve()), "report_md": str(report_md.resolve()),
        "summary_md": str(summary_md.resolve()),
        "figures": {key: path.name for b in blocks for key, path in b.figures.items()},
        "data_version": ev.meta.version, "data_source": ev.meta.source,
        "teacher": ev.info[TEACHER], "student": ev.info[STUDENT] | {"method": ev.method},
        "teacher_test_acc": metrics["teacher_test_acc"], "student_test_acc": metrics["student_test_acc"],
        "agreement": metrics["agreement"], "compression_ratio": metrics["compression_ratio"],
        "wall_s": time.perf_counter() - started,
    }
    write_result(ev.out_dir, result)
    return result
