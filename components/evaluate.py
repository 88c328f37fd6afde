from typing import Optional

from kfp.dsl import HTML, ClassificationMetrics, Dataset, Input, Metrics, Model, Output


def evaluate(params_json: str, parent_run_id: str, data: Input[Dataset], teacher: Input[Model],
             student: Input[Model], evaluation: Output[Model], metrics: Output[Metrics],
             confusion: Output[ClassificationMetrics], report: Output[HTML],
             generator: Optional[Input[Model]] = None, translator: Optional[Input[Model]] = None,
             baseline_target_kd: Optional[Input[Model]] = None,
             baseline_target_supervised: Optional[Input[Model]] = None):
    """Evaluate student vs teacher (accuracy, fidelity, calibration, cost, GAN quality, privacy; for a
    cross-domain student the transfer side-by-side with its baselines)."""
    import shutil

    from gandistill.stages import entry
    from gandistill.stages import evaluate as stage

    baselines = {name: artifact.path for name, artifact in (("target_kd", baseline_target_kd),
                                                            ("target_supervised", baseline_target_supervised))
                 if artifact is not None}
    result = entry.run_stage("evaluate", params_json, parent_run_id,
                             lambda params, tracker: stage.run(params, data.path, teacher.path, student.path,
                                                               generator.path if generator else None,
                                                               evaluation.path, tracker, baseline_dirs=baselines,
                                                               translator_dir=translator.path if translator
                                                               else None), dataset=data.path)
    for key, value in result["metrics"].items():
        metrics.log_metric(key, value)
    confusion.log_confusion_matrix(result["class_names"], result["confusion_matrix"])
    shutil.copyfile(result["report_html"], report.path)
