from typing import Optional

from kfp.dsl import Dataset, Input, Model, Output


def distill(params_json: str, parent_run_id: str, method: str, data: Input[Dataset], teacher: Input[Model],
            student: Output[Model], generator: Optional[Input[Model]] = None,
            translator: Optional[Input[Model]] = None):
    """Distill the student by `method` (overrides distill.method, so baselines can fan out)."""
    from gandistill.stages import distill as stage
    from gandistill.stages import entry

    def body(params, tracker):
        params.distill.method = method
        return stage.run(params, data.path, teacher.path, generator.path if generator else None, student.path,
                         tracker, translator_dir=translator.path if translator else None)

    result = entry.run_stage(f"distill_{method}", params_json, parent_run_id, body, dataset=data.path)
    student.metadata.update(entry.scalar_metrics(result) | {"method": method})
