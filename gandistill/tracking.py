"""MLflow glue: one parent run per pipeline run, one child run per stage.

Stages receive a `Tracker` (injected) and never import mlflow themselves; tests can pass
`NullTracker()`. The tracking URI comes from `MLFLOW_TRACKING_URI`, defaulting to the
embedded `sqlite:///mlflow.db` in the working directory (tracking + model registry).
Metrics go through `MlflowClient.log_batch` — one round trip per call, not per value.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "gandistill"
_KEY_RE = re.compile(r"[^A-Za-z0-9_\-. /]")


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path('mlflow.db').resolve()}"


def experiment_name() -> str:
    return os.environ.get("MLFLOW_EXPERIMENT_NAME", DEFAULT_EXPERIMENT)


def _clean_key(key: str) -> str:
    return _KEY_RE.sub("_", key)[:250]


class Tracker:
    """Logs to one MLflow run. Values are stringified/truncated to MLflow's limits."""

    def __init__(self, run_id: str, client: Any):
        self.run_id = run_id
        self.client = client

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(_clean_key(k), str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(_clean_key(k), float(v), now, step or 0) for k, v in metrics.items()
                 if isinstance(v, int | float)]
        for start in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[start : start + 1000])

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(_clean_key(k), str(v)[:5000]) for k, v in tags.items()])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)


class NullTracker(Tracker):
    """Tracks nothing: for library use and unit tests."""

    def __init__(self) -> None:
        super().__init__(run_id="", client=None)

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        pass

    def set_tags(self, tags: dict[str, Any]) -> None:
        pass

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        pass


def client() -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri(), registry_uri=os.environ.get("MLFLOW_REGISTRY_URI"))


def ensure_experiment(mlflow_client: Any, name: str | None = None) -> str:
    name = name or experiment_name()
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return mlflow_client.create_experiment(name)
    except Exception:  # created concurrently by another stage
        return mlflow_client.get_experiment_by_name(name).experiment_id


def start_parent_run(run_name: str, tags: dict[str, str] | None = None) -> str:
    """Create the pipeline's parent run (left RUNNING; `finish_run` closes it)."""
    c = client()
    run = c.create_run(ensure_experiment(c), run_name=run_name, tags=tags or {})
    return run.info.run_id


def finish_run(run_id: str, status: str = "FINISHED") -> None:
    client().set_terminated(run_id, status=status)


@contextlib.contextmanager
def stage_run(stage: str, parent_run_id: str | None) -> Iterator[Tracker]:
    """A child run for one stage under the pipeline's parent run (or a NullTracker when the
    parent id is empty: a stage run on its own, e.g. in unit tests)."""
    if not parent_run_id:
        yield NullTracker()
        return
    c = client()
    parent = c.get_run(parent_run_id)
    run = c.create_run(parent.info.experiment_id, run_name=stage,
                       tags={"mlflow.parentRunId": parent_run_id, "gandistill.stage": stage})
    tracker = Tracker(run.info.run_id, c)
    try:
        yield tracker
    except BaseException:
        c.set_terminated(run.info.run_id, status="FAILED")
        raise
    c.set_terminated(run.info.run_id, status="FINISHED")
