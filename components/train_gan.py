
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output


def train_gan(params_json: str, parent_run_id: str, data: Input[Dataset], teacher: Input[Model],
              generator: Output[Model], metrics: Output[Metrics], curves: Output[HTML], seed: int,
              gan_steps: int, launch: str = ""):
    """Train the conditional GAN (adversarial + λ·feature matching, optional teacher guidance;
    gandistill.stages.train_gan). `launch`: the torchrun command compiled from
    pipeline.resources.train_gan ("" = one process)."""
    from gandistill.stages import entry

    entry.run_task("train_gan", locals())
