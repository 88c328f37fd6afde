
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output


def train_teacher(params_json: str, parent_run_id: str, data: Input[Dataset], teacher: Output[Model],
                  metrics: Output[Metrics], curves: Output[HTML], seed: int, launch: str = ""):
    """Train the teacher classifier (or import one) and evaluate it (gandistill.stages.train_teacher).
    `launch`: the torchrun command compiled from pipeline.resources.train_teacher ("" = one process)."""
    from gandistill.stages import entry

    entry.run_task("train_teacher", locals())
