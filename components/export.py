from kfp.dsl import Dataset, Input, Model, Output


def export(params_json: str, parent_run_id: str, data: Input[Dataset], student: Input[Model],
           evaluation: Input[Model], exported: Output[Model]):
    """Export the student to TorchScript and ONNX, prove parity, write the model card."""
    from gandistill.stages import entry
    from gandistill.stages import export as stage

    result = entry.run_stage("export", params_json, parent_run_id,
                             lambda params, tracker: stage.run(params, data.path, student.path, evaluation.path,
                                                               exported.path, tracker))
    exported.metadata.update(entry.scalar_metrics(result))
