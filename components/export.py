from typing import Optional

from kfp.dsl import Artifact, Dataset, Input, Markdown, Model, Output


def export(params_json: str, parent_run_id: str, data: Input[Dataset], student: Input[Model],
           evaluation: Input[Artifact], exported: Output[Model], model_card: Output[Markdown],
           generator: Optional[Input[Model]] = None, seed: int = -1,
           gan_steps: int = -1, distill_steps: int = -1):
    """Export the student to a torch.export program (.pt2), ONNX and INT8 ONNX (calibrated on `generator`'s samples
    when the method distilled from the trained cGAN), prove each, write the model card (which names the
    settings: hence the typed knobs `seed`, `gan_steps`, `distill_steps`; -1 = not given: in `params_json`)."""
    import shutil

    from gandistill.stages import entry
    from gandistill.stages import export as stage

    result = entry.run_stage("export", params_json, parent_run_id,
                             lambda params, tracker: stage.run(params, data.path, student.path, evaluation.path,
                                                               exported.path, tracker,
                                                               generator.path if generator else None),
                             overrides={"seed": seed, "gan.steps": gan_steps, "distill.steps": distill_steps})
    exported.metadata.update(entry.scalar_metrics(result))
    shutil.copyfile(f"{exported.path}/{result['model_card']}", model_card.path)
