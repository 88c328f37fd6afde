"""Submit the pipeline to Kubeflow Pipelines: one run now, or a recurring run on a cron.

    gandistill submit --host https://kfp.example.com [--schedule '0 0 3 * * *']
                      [--pipeline-root s3://bucket/gandistill] [--data-rev SHA]

The endpoint and token use kfp's own client variables: KF_PIPELINES_ENDPOINT (when --host
is not given) and KF_PIPELINES_SA_TOKEN_PATH (a file holding the bearer token).

The DAG is compiled (with params.yaml's per-stage resources, node selector, tolerations
and secret mappings) to a temporary package, then
- without a schedule: `create_run_from_pipeline_package` in the experiment;
- with a schedule: the package is uploaded (a new pipeline, or a new version named by
  the package's hash) and `create_recurring_run(cron_expression=...)` points at it.

Caching is keyed to the data: `data_rev` feeds prepare_data's inputs, so a re-submitted
run with the same params and data revision is served from kfp's cache, and new data runs
everything. When no revision can be named (no --data-rev, no pinned `data.dvc_rev`, no
data.dvc), caching is turned off for that run rather than risk serving stale data.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from gandistill_pipeline import image
from gandistill_pipeline.dag import PIPELINE_NAME, compile_pipeline

from gandistill.config import Params
from gandistill.errors import ConfigError, GandistillError, ServiceError
from gandistill.files import file_hash

CRON_FIELDS = ("second", "minute", "hour", "day-of-month", "month", "day-of-week")
_CRON_FIELD_RE = re.compile(r"^[0-9A-Za-z*?/,\-LW#]+$")
_DESCRIPTORS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
PIPELINE_ROOT_SCHEMES = ("s3://", "gs://", "minio://")


def validate_cron(expr: str) -> str:
    """KFP (robfig/cron) uses SIX fields, seconds first; a 5-field crontab line is a mistake
    that would otherwise be rejected by the server, or worse, shifted by one field."""
    text = " ".join(expr.split())
    if text in _DESCRIPTORS or text.startswith("@every "):
        return text
    fields = text.split(" ") if text else []
    hint = ("KFP cron has six fields, seconds first: 'SECOND MINUTE HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK', "
            "e.g. '0 0 3 * * *' = every day at 03:00:00")
    if len(fields) != 6:
        extra = (f"; for the 5-field crontab '{text}' use '0 {text}'" if len(fields) == 5 else "")
        raise ConfigError(f"--schedule {expr!r} has {len(fields)} field{'s' * (len(fields) != 1)}: {hint}{extra}")
    for name, value in zip(CRON_FIELDS, fields, strict=True):
        if not _CRON_FIELD_RE.match(value):
            raise ConfigError(f"--schedule {expr!r}: the {name} field {value!r} is not valid cron; {hint}")
    second = fields[0]
    if second.isdigit() and int(second) > 59:
        raise ConfigError(f"--schedule {expr!r}: seconds field {second} > 59; {hint}")
    return text


def validate_pipeline_root(root: str | None) -> str | None:
    if root is None:
        return None
    if not root.startswith(PIPELINE_ROOT_SCHEMES):
        raise ConfigError(f"--pipeline-root {root!r}: a cluster needs an object-store URI "
                          f"({', '.join(s + 'BUCKET/PREFIX' for s in PIPELINE_ROOT_SCHEMES)}), not a local path")
    return root


def resolve_data_rev(params: Params, data_rev: str = "", dvc_file: str | Path = "data.dvc") -> str:
    """The data revision that keys the cache: explicit, else a pinned DVC revision, else the
    content hash in data.dvc (what prepare_data verifies against); "" when none is known."""
    if data_rev:
        return data_rev
    if params.data.source == "dvc":
        rev = params.data.dvc_rev or ""
        # A branch name moves: only a full commit SHA pins the data.
        return rev if re.fullmatch(r"[0-9a-f]{40}", rev) else ""
    path = Path(dvc_file)
    if path.is_file():
        outs = (yaml.safe_load(path.read_text()) or {}).get("outs", [])
        if outs and outs[0].get("md5"):
            return f"dvc-md5:{outs[0]['md5']}"
    return ""


# kfp's own client settings (kfp.client): the API endpoint, and a file holding the bearer
# token (a projected service-account token in a pod, or any token file on a laptop).
ENDPOINT_ENV = "KF_PIPELINES_ENDPOINT"
TOKEN_PATH_ENV = "KF_PIPELINES_SA_TOKEN_PATH"
IN_POD_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"


def resolve_host(host: str | None) -> str:
    """--host, else kfp's KF_PIPELINES_ENDPOINT; one message naming both when neither is set."""
    host = host or os.environ.get(ENDPOINT_ENV, "")
    if not host:
        raise ConfigError(f"no KFP endpoint: pass --host URL or set {ENDPOINT_ENV} (e.g. `kubectl -n kubeflow "
                          "port-forward svc/ml-pipeline-ui 8080:80` then http://127.0.0.1:8080)")
    return host.rstrip("/")


def token_path() -> str | None:
    """The bearer-token file kfp's ServiceAccountTokenVolumeCredentials reads (re-read on
    refresh): $KF_PIPELINES_SA_TOKEN_PATH, else the projected token inside a KFP pod, else none."""
    if os.environ.get("KFP_TOKEN"):
        raise ConfigError(f"KFP_TOKEN is no longer read: write the token to a file and set {TOKEN_PATH_ENV} to "
                          "its path (kfp's own variable), e.g. `gcloud auth print-access-token > ~/.kfp-token`")
    path = os.environ.get(TOKEN_PATH_ENV)
    if path:
        if not Path(path).is_file():
            raise ConfigError(f"{TOKEN_PATH_ENV}={path}: no such file; point it at the file holding your KFP "
                              "bearer token, or unset it")
        return path
    return IN_POD_TOKEN_PATH if Path(IN_POD_TOKEN_PATH).is_file() else None


def _connect(host: str) -> Any:
    import kfp
    from kfp.client import ServiceAccountTokenVolumeCredentials

    path = token_path()
    credentials = ServiceAccountTokenVolumeCredentials(path) if path else None
    try:
        return kfp.Client(host=host, credentials=credentials)
    except Exception as exc:  # noqa: BLE001 - auth/config loaders raise many types
        raise ServiceError(f"KFP at {host}: cannot connect ({type(exc).__name__}: {str(exc)[:300]}); is the KFP "
                           "API reachable? check --host (e.g. `kubectl -n kubeflow port-forward "
                           f"svc/ml-pipeline-ui 8080:80` then --host http://127.0.0.1:8080) and "
                           f"{TOKEN_PATH_ENV}") from None


def _service_error(host: str, action: str, exc: Exception) -> ServiceError:
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", None) or str(exc).splitlines()[0][:300]
    if status in (401, 403):
        fix = f"authenticate (a token file in {TOKEN_PATH_ENV} for your KFP ingress) or use a port-forward"
    elif status is None:
        fix = "is the KFP API reachable? check --host and any port-forward"
    else:
        fix = "check the KFP API server's logs"
    return ServiceError(f"KFP at {host}: {action} failed ({status or type(exc).__name__}: {reason}); {fix}")


def submit(params: Params, host: str | None = None, experiment: str = "gandistill", schedule: str | None = None,
           run_name: str | None = None, pipeline_root: str | None = None, data_rev: str = "") -> dict[str, Any]:
    """Compile and submit; returns ids and URLs of what was created (printed by the CLI)."""
    cron = validate_cron(schedule) if schedule is not None else None
    pipeline_root = validate_pipeline_root(pipeline_root)
    params = image.pin(params)  # the image this code was built into: content tag or digest
    rev = resolve_data_rev(params, data_rev)
    # The params are compiled into the package (each task: the keys its stage reads); the typed knobs
    # (seed, gan_steps, distill_steps) default to them, so only the data revision is an argument.
    arguments = {"data_rev": rev}
    # Without a data revision the cache key cannot tell old data from new: run everything.
    enable_caching = None if rev else False
    host = resolve_host(host)
    client = _connect(host)
    with tempfile.TemporaryDirectory(prefix="gandistill-submit-") as tmp:
        package = Path(tmp) / f"{PIPELINE_NAME}.yaml"
        compile_pipeline(params, str(package))
        digest = file_hash(package, "sha256")[:12]
        action = "create run"
        try:
            if cron is None:
                name = run_name or f"{PIPELINE_NAME}-{time.strftime('%Y%m%d-%H%M%S')}"
                result = client.create_run_from_pipeline_package(
                    str(package), arguments=arguments, run_name=name, experiment_name=experiment,
                    pipeline_root=pipeline_root, enable_caching=enable_caching)
                return {"kind": "run", "host": host, "experiment": experiment, "run_name": name,
                        "run_id": result.run_id, "url": f"{host}/#/runs/details/{result.run_id}",
                        "data_rev": rev, "caching": enable_caching is not False, "package_sha256": digest}
            action = "create experiment"
            exp = client.create_experiment(name=experiment)
            action = "upload pipeline"
            pipeline_id, version_id = _upload(client, package, f"{PIPELINE_NAME}-{digest}")
            action = "create recurring run"
            name = run_name or f"{PIPELINE_NAME}-scheduled"
            recurring = client.create_recurring_run(
                experiment_id=exp.experiment_id, job_name=name, cron_expression=cron, params=arguments,
                pipeline_id=pipeline_id, version_id=version_id, pipeline_root=pipeline_root,
                enable_caching=enable_caching, max_concurrency=1, no_catchup=True)
            return {"kind": "recurring_run", "host": host, "experiment": experiment, "name": name,
                    "recurring_run_id": recurring.recurring_run_id, "cron": cron, "pipeline_id": pipeline_id,
                    "pipeline_version_id": version_id, "data_rev": rev, "caching": enable_caching is not False,
                    "url": f"{host}/#/recurringrun/details/{recurring.recurring_run_id}",
                    "package_sha256": digest}
        except GandistillError:
            raise
        except Exception as exc:  # noqa: BLE001 - kfp_server_api.ApiException, urllib3 errors, ...
            raise _service_error(host, action, exc) from None


def _upload(client: Any, package: Path, version_name: str) -> tuple[str, str]:
    """(pipeline id, version id): a new pipeline, or a new version of the existing one."""
    pipeline_id = client.get_pipeline_id(PIPELINE_NAME)
    if pipeline_id is None:
        pipeline = client.upload_pipeline(str(package), pipeline_name=PIPELINE_NAME,
                                          description="gandistill: GAN knowledge distillation")
        versions = client.list_pipeline_versions(pipeline.pipeline_id, page_size=1, sort_by="created_at desc")
        if not versions.pipeline_versions:
            raise ServiceError(f"KFP created pipeline {pipeline.pipeline_id} without a version; re-run submit")
        return pipeline.pipeline_id, versions.pipeline_versions[0].pipeline_version_id
    # The version name is the package hash: re-submitting the same package reuses its version.
    same = json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": version_name}]})
    existing = client.list_pipeline_versions(pipeline_id, page_size=1, filter=same).pipeline_versions
    if existing:
        return pipeline_id, existing[0].pipeline_version_id
    version = client.upload_pipeline_version(str(package), version_name, pipeline_id=pipeline_id)
    return pipeline_id, version.pipeline_version_id
