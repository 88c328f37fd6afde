from typing import Optional

from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output


def evaluate(params_json: str, parent_run_id: str, data: Input[Dataset], teacher: Input[Model],
             student: Input[Model], evaluation: Output[Artifact], metrics: Output[Metrics],
             confusion: Output[ClassificationMetrics], report: Output[HTML], summary: Output[Markdown],
             generator: Optional[Input[Model]] = None, translator: Optional[Input[Model]] = None,
             baselines: Optional[Input[list[Model]]] = None, seed: int = -1):
    """Evaluate student vs teacher (accuracy, fidelity, calibration, cost, GAN quality, privacy; for a
    cross-domain student the transfer side-by-side), and any baseline students (named by the method
    recorded in their metadata). `seed`: the run's typed knob (-1: not given, see `params_json`)."""
    import shutil

    from gandistill.stages import entry
    from gandistill.stages import evaluate as stage

    baseline_dirs = entry.named_by_method(baselines or [])
    result = entry.run_stage("evaluate", params_json, parent_run_id,
                             lambda params, tracker: stage.run(params, data.path, teacher.path, student.path,
                                                               generator.path if generator else None,
                                                               evaluation.path, tracker, baseline_dirs,
                                                               translator.path if translator else None),
                             dataset=data.path, overrides={"seed": seed})
    for key, value in result["metrics"].items():
        metrics.log_metric(key, value)
    confusion.log_confusion_matrix(result["class_names"], result["confusion_matrix"])
    shutil.copyfile(result["report_html"], report.path)
    shutil.copyfile(result["summary_md"], summary.path)
