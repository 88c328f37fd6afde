
from kfp.dsl import Dataset, Input, Model, Output


def train_teacher(params_json: str, parent_run_id: str, data: Input[Dataset], teacher: Output[Model],
                  launch: str = "", seed: int = -1):
    """Train the teacher classifier (or import one) and evaluate it. `launch`: the torchrun
    command compiled from pipeline.resources.train_teacher ("" = one process). `seed`: the run's typed
    knob (-1: not given, see `params_json`)."""
    from gandistill.stages import entry

    result = entry.run_training("train_teacher", params_json, parent_run_id, launch, data_dir=data.path,
                                out_dir=teacher.path, overrides={"seed": seed})
    teacher.metadata.update(entry.scalar_metrics(result))
