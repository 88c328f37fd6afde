"""The report's first section (what a reviewer reads first) and its last (training curves)."""

from __future__ import annotations

from pathlib import Path

from gandistill.evaluation import plots
from gandistill.evaluation.report import Figure, Section, fmt
from gandistill.results import read_result
from gandistill.stages.evaluate import accuracy
from gandistill.stages.evaluate.inputs import STUDENT, TEACHER, Block, Inputs


def summary_section(ev: Inputs, acc: accuracy.AccuracyBlock, metrics: dict[str, float]) -> Section:
    """Data, the headline comparison, and where each number comes from."""
    s, t = acc.classes[STUDENT], acc.classes[TEACHER]
    meta = ev.meta
    version = ", ".join(f"{key}={value}" for key, value in sorted(meta.version.items())) or "unversioned"
    seen = ev.student_result.get("real_images_seen_by_student", "an unknown number of")
    return Section("Summary", [
        f"Dataset: {meta.source}, {len(ev.test_y)} test images, {meta.num_classes} classes; data version: {version}.",
        f"Student ({ev.info[STUDENT].get('arch', '?')}, method {ev.method}) reaches {fmt(s.acc, '%')} test "
        f"accuracy vs the teacher's {fmt(t.acc, '%')} (drop {fmt(metrics['acc_drop'], '%')}; McNemar "
        f"p = {metrics['mcnemar_p_student_vs_teacher']:.3g}), agrees with the teacher on "
        f"{fmt(metrics['agreement'], '%')} of test images, with {metrics['compression_ratio']:.1f}× fewer "
        f"parameters and {metrics.get('macs_ratio', float('nan')):.1f}× fewer MACs.",
        f"Student saw {seen} real training images; model selection used the validation split (data-free methods: "
        "none, the final student). No stage selects on the test split; the earlier stages log their test "
        "accuracy only to be watched, and this report is where it is stated with its interval and tests."],
        [accuracy.accuracy_table(ev, acc)])


def _history(folder: Path | None) -> list[dict[str, float]]:
    return list(read_result(folder).get("history") or []) if folder else []


def training_curves(ev: Inputs) -> Block:
    """Every stage loop's logged metrics against its step (nothing when no history was kept)."""
    histories = {TEACHER: _history(ev.folders[TEACHER]), "generator (train_gan)": _history(ev.generator_dir),
                 "translator (train_translator)": _history(ev.translator_dir),
                 f"student ({ev.info[STUDENT].get('method', 'distill')})": _history(ev.folders[STUDENT])}
    histories |= {f"baseline {name}": _history(ev.folders[name]) for name in ev.baselines}
    curves = plots.training_curves(histories, ev.out_dir / "training_curves.png")
    if curves is None:
        return Block()
    return Block(figures={"training_curves": curves}, sections=[
        Section("Training curves", ["Metrics at each evaluation of every stage's loop."], [],
                [Figure(curves, "training curves")])])
