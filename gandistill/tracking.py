"""MLflow glue: one parent run per pipeline run, one child run per stage.

Stages receive a `Tracker` (injected) and never import mlflow themselves; tests can pass
`NullTracker()`. The tracking URI comes from `MLFLOW_TRACKING_URI`, defaulting to the
embedded `sqlite:///mlflow.db` in the working directory (tracking + model registry).
Metrics go through `MlflowClient.log_batch` — one round trip per call, not per value.

Faulty servers: MLflow's own HTTP retries default to 7 with a factor-2 backoff and a 120 s
timeout (minutes before an unreachable server is reported). Unless the user set them,
`client()` bounds them to `HTTP_DEFAULTS` (an unreachable server fails in ~5-10 s), and
every tracking call made through this module turns a failure into one `TrackingError`
(a `ServiceError`, exit 5) naming the endpoint and the fix.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gandistill.errors import ServiceError

log = logging.getLogger(__name__)

# Bounded MLflow HTTP retries: 3 retries, backoff 0/2/4 s (+ ≤1 s jitter), 30 s per request.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
_SECRET_ENV = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


class TrackingError(ServiceError):
    """The MLflow tracking server / registry failed after bounded retries."""


def bound_http_retries() -> None:
    """Set MLflow's HTTP retry/timeout variables to `HTTP_DEFAULTS` where the user has not."""
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)


def redact(text: str) -> str:
    """`text` with the values of credential variables (if set) replaced by ***."""
    for key in _SECRET_ENV:
        value = os.environ.get(key)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return text


def tracking_error(exc: BaseException, action: str) -> TrackingError:
    """One clear error for a failed MLflow call: what failed, where, why, and the fix."""
    uri = tracking_uri()
    detail = redact(f"{type(exc).__name__}: {exc}")
    low = detail.lower()
    if any(code in low for code in ("401", "403", "unauthorized", "forbidden", "permission_denied",
                                    "unauthenticated")):
        fix = ("the server rejected the credentials: check MLFLOW_TRACKING_USERNAME / "
               "MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN")
    elif any(s in low for s in ("connection refused", "max retries exceeded", "name or service not known",
                                "failed to establish", "timed out", "timeout", "connectionerror")):
        fix = ("the server is unreachable or too slow: check that it is running and that MLFLOW_TRACKING_URI "
               "is right (or unset it to use the embedded sqlite default); retries are bounded by "
               "MLFLOW_HTTP_REQUEST_MAX_RETRIES / MLFLOW_HTTP_REQUEST_TIMEOUT")
    else:
        fix = "check the MLflow server's log and MLFLOW_TRACKING_URI, then re-run (stages resume from checkpoints)"
    if len(detail) > 600:
        detail = detail[:600] + "…"
    return TrackingError(f"MLflow at {uri} failed while {action} ({detail}); {fix}")


@contextlib.contextmanager
def _guard(action: str) -> Iterator[None]:
    try:
        yield
    except ServiceError:
        raise
    except Exception as exc:
        raise tracking_error(exc, action) from None

DEFAULT_EXPERIMENT = "gandistill"
# MLflow 3's UI opens an experiment by its kind; without one it guesses, and an empty or
# mixed experiment lands on the GenAI overview (traces, tokens). Ours trains models.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
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
        with _guard("logging params"):
            for start in range(0, len(items), 100):
                self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(_clean_key(k), float(v), now, step or 0) for k, v in metrics.items()
                 if isinstance(v, int | float)]
        with _guard("logging metrics"):
            for start in range(0, len(items), 1000):
                self.client.log_batch(self.run_id, metrics=items[start : start + 1000])

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        with _guard("setting tags"):
            self.client.log_batch(self.run_id, tags=[RunTag(_clean_key(k), str(v)[:5000]) for k, v in tags.items()])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        with _guard(f"uploading artifact {path.name}"):
            if path.is_dir():
                self.client.log_artifacts(self.run_id, str(path), artifact_path)
            else:
                self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_dataset(self, dataset: dict[str, Any], context: str) -> None:
        """Record the prepared dataset as this run's input (the MLflow UI's Dataset column);
        `dataset` is `dataset_input(meta)`'s description, `context` e.g. "training"."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        entity = Dataset(name=dataset["name"], digest=dataset["digest"], source_type=dataset["source_type"],
                         source=dataset["source"], schema=dataset["schema"], profile=dataset["profile"])
        with _guard("logging the dataset input"):
            self.client.log_inputs(self.run_id, datasets=[
                DatasetInput(entity, tags=[InputTag("mlflow.data.context", context)])])


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

    def log_dataset(self, dataset: dict[str, Any], context: str) -> None:
        pass


def dataset_input(source: str, version: dict[str, str], shape: list[int], class_names: list[str],
                  counts: dict[str, int]) -> dict[str, str]:
    """How a prepared dataset appears in MLflow: its digest is the DVC md5 when the data was
    verified against a DVC pointer (data.dvc, or the dvc source's revision), so the UI's Dataset
    column names exactly the `dvc checkout` that reproduces it; else a hash of its file checksums."""
    import hashlib
    import json

    dvc_md5 = version.get("dvc_md5", "")
    digest = dvc_md5 or hashlib.md5(json.dumps(version, sort_keys=True).encode()).hexdigest()
    return {"name": source, "digest": digest[:36], "source_type": "dvc" if dvc_md5 else "local",
            "source": json.dumps({"source": source, **version}, sort_keys=True),
            "schema": json.dumps({"image": shape, "dtype": "uint8", "classes": class_names}),
            "profile": json.dumps({"num_rows": counts, "num_classes": len(class_names)})}


@contextlib.contextmanager
def system_metrics(tracker: Tracker) -> Iterator[None]:
    """MLflow's system metrics (CPU, memory, disk, network; GPU when present) for `tracker`'s run
    while the block runs, through MLflow's public switch (`start_run(log_system_metrics=True)`
    on the stage's run): one sample every MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL seconds
    (default 10), so a stage shorter than that records none."""
    if not tracker.run_id:
        yield
        return
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    with _guard("starting system metrics"):
        mlflow.start_run(run_id=tracker.run_id, log_system_metrics=True)
    try:
        yield
    finally:
        # Stops the monitor. The run's status is stage_run's to set; and when the server is the
        # fault, the stage's own TrackingError must stay the one reported.
        try:
            mlflow.end_run()
        except Exception as exc:  # noqa: BLE001 - machine metrics must never mask the stage's outcome
            log.warning("system metrics: not closed cleanly (%s)", redact(str(exc))[:200])


# What a pipeline run's parent shows in the MLflow run list (its metric columns), from the
# stage that knows it: the run's own student, not a baseline's.
def record_on_parent(parent_run_id: str, on_parent: dict[str, str], result: dict[str, Any],
                     dataset: dict[str, Any] | None = None) -> None:
    """Give the pipeline's parent run what its row in the run list should show: the stage's
    headline metrics (`on_parent`: result key → the parent's metric, from its stage record) and,
    from prepare_data, the dataset (Dataset column). Best effort: the stage itself succeeded and
    its own run holds the same numbers."""
    headline = {name: float(result[key]) for key, name in on_parent.items()
                if isinstance(result.get(key), int | float)}
    if not headline and dataset is None:
        return
    try:
        parent = Tracker(parent_run_id, client())
        if headline:
            parent.log_metrics(headline)
        if dataset is not None:
            parent.log_dataset(dataset, "training")
    except ServiceError as exc:
        log.warning("[parent run] headline not recorded on the pipeline's MLflow run: %s", redact(str(exc))[:300])


def client() -> Any:
    from mlflow.tracking import MlflowClient

    bound_http_retries()
    uri = tracking_uri()
    if uri.startswith("sqlite:") and importlib.util.find_spec("sqlalchemy") is None:
        raise TrackingError(
            f"MLflow tracking store {uri}: this environment has only the MLflow client (mlflow-skinny, as in the "
            "component image), which cannot open a sqlite store; set MLFLOW_TRACKING_URI to your MLflow server "
            "(on a cluster: map it from a secret in pipeline.secrets), or install the full mlflow package")
    # The registry defaults to the tracking store explicitly: left None, MLflow would resolve it from its
    # process-global URI, which an earlier mlflow.set_tracking_uri in the same process may have set.
    return MlflowClient(tracking_uri=uri, registry_uri=os.environ.get("MLFLOW_REGISTRY_URI") or uri)


def ensure_experiment(mlflow_client: Any, name: str | None = None) -> str:
    """The experiment's id, created if missing, declared a model-training experiment (the
    MLflow UI's training view) unless it already declares a kind of its own."""
    name = name or experiment_name()
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return mlflow_client.create_experiment(name, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except Exception:  # created concurrently by another stage
            experiment = mlflow_client.get_experiment_by_name(name)
    if EXPERIMENT_KIND_TAG not in (experiment.tags or {}):  # made by an older gandistill, or by hand
        mlflow_client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return experiment.experiment_id


def start_parent_run(run_name: str, tags: dict[str, str] | None = None) -> str:
    """Create the pipeline's parent run (left RUNNING; `finish_run` closes it)."""
    c = client()
    with _guard("creating the pipeline's parent run"):
        run = c.create_run(ensure_experiment(c), run_name=run_name, tags=tags or {})
    return run.info.run_id


# On a cluster, `submit` cannot name the parent run (it does not exist before the KFP run, and
# a run-specific task input would change every task's cache key). Instead every pod gets its KFP
# run id in $KFP_RUN_ID from its `pipeline/runid` label (pipeline/kubernetes.py), and the first
# stage that runs creates the parent run, tagged with that id; the others find it by the tag.
KFP_RUN_ID_ENV = "KFP_RUN_ID"
TAG_KFP_RUN = "gandistill.kfp_run_id"
_KFP_RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def _runs_tagged(mlflow_client: Any, experiment_id: str, kfp_run_id: str) -> list[Any]:
    runs = mlflow_client.search_runs([experiment_id], filter_string=f"tags.`{TAG_KFP_RUN}` = '{kfp_run_id}'",
                                     max_results=50)
    return sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))


def pipeline_parent(parent_run_id: str, tags: dict[str, str] | None = None) -> str:
    """The pipeline's parent run id: `parent_run_id` when given (`gandistill run --local`);
    when empty (a submitted run), the run tagged with $KFP_RUN_ID in the experiment — found,
    or created by the first stage to ask — provided MLFLOW_TRACKING_URI is set; else ""
    (the stage runs untracked). Two stages creating it at once both keep the earliest run."""
    kfp_run_id = os.environ.get(KFP_RUN_ID_ENV, "")
    if parent_run_id or not kfp_run_id or not os.environ.get("MLFLOW_TRACKING_URI"):
        return parent_run_id
    if not _KFP_RUN_ID_RE.match(kfp_run_id):
        raise TrackingError(f"{KFP_RUN_ID_ENV}={kfp_run_id[:80]!r} is not a KFP run id; it is set from the pod's "
                            "`pipeline/runid` label: unset it outside a KFP pod")
    c = client()
    with _guard("finding the pipeline's parent run"):
        experiment_id = ensure_experiment(c)
        found = _runs_tagged(c, experiment_id, kfp_run_id)
        if found:
            if found[0].info.status == "FAILED":  # a stage failed earlier and KFP retries it: running again
                c.update_run(found[0].info.run_id, status="RUNNING")
            return found[0].info.run_id
        own = c.create_run(experiment_id, run_name=f"kfp-{kfp_run_id}",
                           tags={**(tags or {}), TAG_KFP_RUN: kfp_run_id}).info.run_id
        winner = _runs_tagged(c, experiment_id, kfp_run_id)[0].info.run_id
        if winner != own:  # another stage created one first: use it, drop ours
            c.delete_run(own)
        log.info("MLflow parent run %s for KFP run %s", winner, kfp_run_id)
        return winner


def finish_run(run_id: str, status: str = "FINISHED") -> None:
    with _guard("closing the pipeline's parent run"):
        client().set_terminated(run_id, status=status)


def fail_parent(run_id: str) -> None:
    """Mark a submitted run's parent FAILED when one of its stages fails (promote, which
    closes it, will not run; a retried stage reopens it in `pipeline_parent`). Best effort:
    the stage's own error is the one to report."""
    try:
        client().set_terminated(run_id, status="FAILED")
    except Exception as exc:  # noqa: BLE001 - the stage's failure is the real fault
        log.warning("could not mark the pipeline's MLflow run %s FAILED: %s", run_id, redact(str(exc))[:300])


@contextlib.contextmanager
def stage_run(stage: str, parent_run_id: str | None) -> Iterator[Tracker]:
    """A child run for one stage under the pipeline's parent run (or a NullTracker when the
    parent id is empty: a stage run on its own, e.g. in unit tests)."""
    if not parent_run_id:
        yield NullTracker()
        return
    c = client()
    with _guard(f"opening the {stage} stage's run"):
        parent = c.get_run(parent_run_id)
        run = c.create_run(parent.info.experiment_id, run_name=stage,
                           tags={"mlflow.parentRunId": parent_run_id, "gandistill.stage": stage})
    tracker = Tracker(run.info.run_id, c)
    try:
        yield tracker
    except TrackingError:
        raise  # the server is the fault: marking the run FAILED would only retry against it again
    except BaseException:
        try:
            c.set_terminated(run.info.run_id, status="FAILED")
        except Exception as exc:  # keep the stage's own error, the real fault
            log.warning("could not mark MLflow run %s FAILED: %s", run.info.run_id, redact(str(exc))[:300])
        raise
    with _guard(f"closing the {stage} stage's run"):
        c.set_terminated(run.info.run_id, status="FINISHED")
