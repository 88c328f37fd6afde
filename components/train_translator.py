
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output


def train_translator(params_json: str, parent_run_id: str, data: Input[Dataset], teacher: Input[Model],
                     translator: Output[Model], metrics: Output[Metrics], curves: Output[HTML], seed: int):
    """Train the CycleGAN between the source domain and the target domain (distill.method=cyclegan;
    gandistill.stages.train_translator)."""
    from gandistill.stages import entry

    entry.run_task("train_translator", locals())
