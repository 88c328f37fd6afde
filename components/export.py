from typing import Optional

from kfp.dsl import Artifact, Dataset, Input, Markdown, Model, Output


def export(params_json: str, parent_run_id: str, data: Input[Dataset], student: Input[Model],
           evaluation: Input[Artifact], exported: Output[Model], model_card: Output[Markdown], seed: int,
           distill_steps: int, generator: Optional[Input[Model]] = None):
    """Export the student (torch.export program, ONNX, INT8 ONNX calibrated on `generator`'s samples when
    the method distilled from the trained cGAN), prove each, write the model card (gandistill.stages.export)."""
    import shutil

    from gandistill.stages import entry

    result = entry.run_task("export", locals())
    shutil.copyfile(f"{exported.path}/{result['model_card']}", model_card.path)
