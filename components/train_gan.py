
from kfp.dsl import Dataset, Input, Model, Output


def train_gan(params_json: str, parent_run_id: str, data: Input[Dataset], teacher: Input[Model],
              generator: Output[Model], launch: str = "", seed: int = -1,
              gan_steps: int = -1):
    """Train the conditional GAN (adversarial + λ·feature matching, optional teacher guidance).
    `launch`: the torchrun command compiled from pipeline.resources.train_gan ("" = one process).
    `seed`, `gan_steps`: the run's typed knobs (-1: not given, see `params_json`)."""
    from gandistill.stages import entry

    result = entry.run_training("train_gan", params_json, parent_run_id, launch, data_dir=data.path,
                                teacher_dir=teacher.path, out_dir=generator.path,
                                overrides={"seed": seed, "gan.steps": gan_steps})
    generator.metadata.update(entry.scalar_metrics(result))
