"""A toy pipeline stage, whole in one file: its record, its stage function and its component.

tests/test_stage_records.py adds it to a pipeline from its record alone. In the tree, the same
three pieces would go to gandistill/stage_records.py, gandistill/stages/data_census.py and
components/data_census.py. Importing this module registers the record; a kfp.local task imports it
too (tests/ is on the task's PYTHONPATH), so the record exists in the task's process as well.
"""

# No `from __future__ import annotations`: kfp reads the component's types at runtime.

from pathlib import Path
from typing import Any

from kfp.dsl import Artifact, Dataset, Input, Output

from gandistill import stage_records
from gandistill.config import Params
from gandistill.data.dataset import load_meta
from gandistill.results import write_result
from gandistill.tracking import NullTracker, Tracker

RECORD = stage_records.Stage(
    "data_census", reads=("seed", "data.val_fraction"), output="census",
    headline=lambda r: f"{r.get('classes', '?')} classes, {r.get('val_share', 0):.0%} held out for val",
    inputs={"data": "prepare_data.data"}, function="toy_stage:run", component="toy_stage:data_census")
stage_records.STAGES[RECORD.name] = RECORD


def run(params: Params, data_dir: str | Path, out_dir: str | Path, tracker: Tracker | None = None) -> dict[str, Any]:
    """How many images each class has per split (a stage: params and paths in, result.json out)."""
    meta = load_meta(data_dir)
    counts = meta.counts
    result = {"classes": meta.num_classes, "counts": counts,
              "val_share": counts["val"] / (counts["train"] + counts["val"]),
              "asked_val_fraction": params.data.val_fraction, "seed": params.seed}
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    write_result(out_dir, result)
    (tracker or NullTracker()).log_metrics({"val_share": result["val_share"]})
    return result


def data_census(params_json: str, parent_run_id: str, data: Input[Dataset], census: Output[Artifact], seed: int):
    """The component: its typed signature, and the one entry point."""
    import toy_stage  # noqa: F401  (registers the record in this task's process)

    from gandistill.stages import entry

    entry.run_task("data_census", locals())
