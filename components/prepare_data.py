
from kfp.dsl import Dataset, Output


def prepare_data(params_json: str, parent_run_id: str, data: Output[Dataset], data_rev: str = "",
                 seed: int = -1):
    """Load the configured source, validate it, split train/val/test and store it. `params_json`: the
    keys this stage reads (gandistill.stage_params); `seed`: the run's typed knob (-1 = not given: in the JSON)."""
    from gandistill.stages import entry
    from gandistill.stages import prepare_data as stage

    result = entry.run_stage("prepare_data", params_json, parent_run_id,
                             lambda params, tracker: stage.run(params, data.path, tracker), dataset=data.path,
                             overrides={"seed": seed})
    data.metadata.update({f"n_{k}": v for k, v in result["counts"].items()} | {"version": result["version"]})
    data.metadata["data_rev"] = data_rev  # the revision that keyed this task's cache
