from typing import Optional

from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output


def distill(params_json: str, parent_run_id: str, method: str, data: Input[Dataset], teacher: Input[Model],
            student: Output[Model], metrics: Output[Metrics], curves: Output[HTML], seed: int, distill_steps: int,
            generator: Optional[Input[Model]] = None, translator: Optional[Input[Model]] = None, launch: str = ""):
    """Distill the student by `method` (sets distill.method, so baselines can fan out;
    gandistill.stages.distill). `launch`: the torchrun command compiled from pipeline.resources.distill
    ("" = one process)."""
    from gandistill.stages import entry

    entry.run_task("distill", locals())
