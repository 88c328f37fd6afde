from kfp.dsl import Artifact, Input, Model


def promote(params_json: str, parent_run_id: str, exported: Input[Model], evaluation: Input[Artifact]) -> str:
    """Register the student in the MLflow model registry; the quality gate picks the alias
    (gandistill.stages.promote). Returns the registry decision (version, alias, reason, …) as a JSON string."""
    import json

    from gandistill.stages import entry

    return json.dumps(entry.run_task("promote", locals()), default=str)


def promote_gate(params_json: str, parent_run_id: str, evaluation: Input[Artifact]) -> bool:
    """The promotion gate alone (read-only against the registry), for a pipeline that branches
    with dsl.If on its output; `promote` applies the same gate again when it registers."""
    from gandistill.stages import entry

    return bool(entry.run_task("promote_gate", locals())["passed"])
