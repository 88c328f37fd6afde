from typing import Optional

from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output


def evaluate(params_json: str, parent_run_id: str, data: Input[Dataset], teacher: Input[Model],
             student: Input[Model], evaluation: Output[Artifact], metrics: Output[Metrics],
             confusion: Output[ClassificationMetrics], report: Output[HTML], summary: Output[Markdown], seed: int,
             generator: Optional[Input[Model]] = None, translator: Optional[Input[Model]] = None,
             baselines: Optional[Input[list[Model]]] = None):
    """Evaluate student vs teacher (accuracy, fidelity, calibration, cost, GAN quality, privacy; for a
    cross-domain student the transfer side-by-side), and any baseline students (named by the method
    recorded in their metadata; gandistill.stages.evaluate); the headline numbers, the confusion
    matrix, the report and its summary also as kfp outputs."""
    import shutil

    from gandistill.stages import entry

    result = entry.run_task("evaluate", locals())
    for key, value in result["metrics"].items():
        metrics.log_metric(key, value)
    confusion.log_confusion_matrix(result["class_names"], result["confusion_matrix"])
    shutil.copyfile(result["report_html"], report.path)
    shutil.copyfile(result["summary_md"], summary.path)
