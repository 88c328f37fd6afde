
from kfp.dsl import Dataset, Input, Model, Output


def train_translator(params_json: str, parent_run_id: str, data: Input[Dataset], teacher: Input[Model],
                     translator: Output[Model], seed: int = -1):
    """Train the CycleGAN between the source domain and the target domain (distill.method=cyclegan).
    `seed`: the run's typed knob (-1: not given, see `params_json`)."""
    from gandistill.stages import entry
    from gandistill.stages import train_translator as stage

    result = entry.run_stage("train_translator", params_json, parent_run_id,
                             lambda params, tracker: stage.run(params, data.path, teacher.path, translator.path,
                                                               tracker), dataset=data.path,
                             overrides={"seed": seed})
    translator.metadata.update(entry.scalar_metrics(result))
