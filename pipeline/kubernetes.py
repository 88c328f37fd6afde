"""Per-stage cluster settings compiled into the pipeline spec: resources, accelerators, node
selector and tolerations (a stage's own, else the pipeline-wide ones), and credentials from
Kubernetes secrets (never parameters): `pipeline.secrets: {k8s-secret-name: {secret-key:
ENV_VAR}}` becomes env vars in every task (e.g. AWS_ACCESS_KEY_ID for the object store,
MLFLOW_TRACKING_URI / _TOKEN for MLflow).

kfp.local ignores all of these (resource settings warn, kfp-kubernetes ones are silent);
they matter only on a cluster and are tested by loading the compiled YAML.
"""

from __future__ import annotations

from typing import Any

from gandistill.checkpoint_store import CHECKPOINT_ROOT_ENV
from gandistill.config import Params
from gandistill.tracking import KFP_RUN_ID_ENV

RUN_ID_LABEL = "pipeline/runid"  # set by KFP on every pod of a run

def placement(stage: str, params: Params) -> tuple[dict[str, str], list[dict[str, str]]]:
    """(node selector, tolerations) of one stage: its own `pipeline.resources.<stage>` values
    where set, else the pipeline-wide ones."""
    res = params.pipeline.resources.get(stage)  # type: ignore[call-overload]
    own_selector = res.node_selector if res is not None else None
    own_tolerations = res.tolerations if res is not None else None
    return (params.pipeline.node_selector if own_selector is None else own_selector,
            params.pipeline.tolerations if own_tolerations is None else own_tolerations)


def processes(params: Params, stage: str) -> int:
    """Worker processes for a stage in its one pod: one per accelerator it asks for."""
    res = params.pipeline.resources.get(stage)  # type: ignore[call-overload]
    return (res.accelerator_count or 1) if res is not None and res.accelerator_type else 1


def configure(task: Any, stage: str, params: Params) -> None:
    """`stage`: the pipeline.resources entry that sizes the task's pod (its record's `resources_name`)."""
    res = params.pipeline.resources.get(stage)  # type: ignore[call-overload]
    if res is not None:
        if res.cpu_request:
            task.set_cpu_request(res.cpu_request)
        if res.cpu_limit:
            task.set_cpu_limit(res.cpu_limit)
        if res.memory_request:
            task.set_memory_request(res.memory_request)
        if res.memory_limit:
            task.set_memory_limit(res.memory_limit)
        if res.accelerator_type:
            task.set_accelerator_type(res.accelerator_type)
            task.set_accelerator_limit(res.accelerator_count or 1)
    from kfp import kubernetes as k8s

    # The KFP run id, from the pod's own label: stages find the run's MLflow parent by it
    # (tracking.pipeline_parent). Platform config, not an input: cache keys stay unchanged.
    k8s.use_field_path_as_env(task, env_name=KFP_RUN_ID_ENV, field_path=f"metadata.labels['{RUN_ID_LABEL}']")
    # The image is pinned by content tag or digest (pipeline/image.py): a node's copy of it is
    # never stale, so pull only what the node lacks.
    k8s.set_image_pull_policy(task, "IfNotPresent")
    node_selector, tolerations = placement(stage, params)
    for key, value in node_selector.items():
        k8s.add_node_selector(task, label_key=key, label_value=value)
    for toleration in tolerations:
        k8s.add_toleration(task, **toleration)
    for secret_name, mapping in params.pipeline.secrets.items():
        k8s.use_secret_as_env(task, secret_name=secret_name, secret_key_to_env=mapping)


def make_resumable(task: Any, params: Params, retries: int) -> None:
    """A training task that outlives its pod: checkpoints where a retried pod finds them
    (`pipeline.checkpoint_root` — an s3:// prefix or a path on `pipeline.checkpoint_volume`,
    the PVC mounted here — put into the task's environment, not an input: the params the stage
    reads stay what they were) and KFP retries with exponential backoff (30 s, 60 s, ... at
    most 1 h). Without a checkpoint root a retry restarts the stage from step 0 on the new pod."""
    volume = params.pipeline.checkpoint_volume
    if volume is not None:
        from kfp import kubernetes as k8s

        k8s.mount_pvc(task, pvc_name=volume.claim, mount_path=volume.mount_path)
    root = params.pipeline.cluster_checkpoint_root()
    if root:
        task.set_env_variable(CHECKPOINT_ROOT_ENV, root)
    if retries:
        task.set_retry(num_retries=retries, backoff_duration="30s", backoff_factor=2.0, backoff_max_duration="3600s")
