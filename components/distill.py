from typing import Optional

from kfp.dsl import Dataset, Input, Model, Output


def distill(params_json: str, parent_run_id: str, method: str, data: Input[Dataset], teacher: Input[Model],
            student: Output[Model], generator: Optional[Input[Model]] = None,
            translator: Optional[Input[Model]] = None, launch: str = "", seed: int = -1,
            distill_steps: int = -1):
    """Distill the student by `method` (overrides distill.method, so baselines can fan out).
    `launch`: the torchrun command compiled from pipeline.resources.distill ("" = one process).
    `seed`, `distill_steps`: the run's typed knobs (-1: not given, see `params_json`)."""
    from gandistill.stages import entry

    result = entry.run_training("distill", params_json, parent_run_id, launch, run_name=f"distill_{method}",
                                overrides={"distill.method": method, "seed": seed, "distill.steps": distill_steps},
                                data_dir=data.path,
                                teacher_dir=teacher.path, generator_dir=generator.path if generator else None,
                                out_dir=student.path, translator_dir=translator.path if translator else None)
    student.metadata.update(entry.scalar_metrics(result) | {"method": method})
