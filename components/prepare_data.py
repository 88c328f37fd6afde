
from kfp.dsl import Dataset, Output


def prepare_data(params_json: str, parent_run_id: str, data: Output[Dataset], seed: int, data_rev: str = ""):
    """Load the configured source, validate it, split train/val/test and store it (gandistill.stages.prepare_data).
    `data_rev`: the DVC/git revision that keys this task's cache to the data version."""
    from gandistill.stages import entry

    result = entry.run_task("prepare_data", locals())
    data.metadata.update({f"n_{k}": v for k, v in result["counts"].items()} | {"version": result["version"]})
    data.metadata["data_rev"] = data_rev
