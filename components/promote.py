from kfp.dsl import Artifact, Input, Model


def promote(params_json: str, parent_run_id: str, exported: Input[Model], evaluation: Input[Artifact]) -> str:
    """Register the student in the MLflow model registry; the quality gate picks the alias.
    Returns the registry decision (version, alias, reason, …) as a JSON string."""
    import json

    from gandistill.stages import entry
    from gandistill.stages import promote as stage

    result = entry.run_stage("promote", params_json, parent_run_id,
                             lambda params, tracker: stage.run(params, exported.path, evaluation.path,
                                                               parent_run_id, tracker))
    return json.dumps(result, default=str)


def promote_gate(params_json: str, parent_run_id: str, evaluation: Input[Artifact]) -> bool:
    """The promotion gate alone (read-only against the registry), for a pipeline that branches
    with dsl.If on its output; `promote` applies the same gate again when it registers."""
    from gandistill.stages import entry
    from gandistill.stages import promote as stage

    outcome = {}

    def body(params, tracker):
        outcome["passed"], outcome["reason"] = stage.gate(params, evaluation.path, tracker)
        return outcome

    entry.run_stage("promote_gate", params_json, parent_run_id, body)
    return bool(outcome["passed"])
