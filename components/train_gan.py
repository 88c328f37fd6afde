from kfp.dsl import Dataset, Input, Model, Output


def train_gan(params_json: str, parent_run_id: str, data: Input[Dataset], teacher: Input[Model],
              generator: Output[Model]):
    """Train the conditional GAN (adversarial + λ·feature matching, optional teacher guidance)."""
    from gandistill.stages import entry
    from gandistill.stages import train_gan as stage

    result = entry.run_stage("train_gan", params_json, parent_run_id,
                             lambda params, tracker: stage.run(params, data.path, teacher.path, generator.path,
                                                               tracker), dataset=data.path)
    generator.metadata.update(entry.scalar_metrics(result))
