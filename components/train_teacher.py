from kfp.dsl import Dataset, Input, Model, Output


def train_teacher(params_json: str, parent_run_id: str, data: Input[Dataset], teacher: Output[Model]):
    """Train the teacher classifier (or import one) and evaluate it."""
    from gandistill.stages import entry
    from gandistill.stages import train_teacher as stage

    result = entry.run_stage("train_teacher", params_json, parent_run_id,
                             lambda params, tracker: stage.run(params, data.path, teacher.path, tracker),
                             dataset=data.path)
    teacher.metadata.update(entry.scalar_metrics(result))
