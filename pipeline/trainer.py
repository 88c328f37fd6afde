"""Multi-node training through the Kubeflow Training Operator: a PyTorchJob manifest
(kubeflow.org/v1) for one training stage, generated from params.

One node (one pod, N GPUs) needs none of this: the pipeline's task runs torchrun itself
(pipeline.resources.<stage>.accelerator_count). Past one node the operator's PyTorchJob is
the engine: it starts `nodes` pods (Master + Workers) and gives each the PET_* variables
torchrun reads (PET_NNODES, PET_NODE_RANK, PET_MASTER_ADDR, PET_MASTER_PORT,
PET_NPROC_PER_NODE from spec.nprocPerNode), so every pod runs the same command:
`torchrun -m gandistill.launch --spec-json SPEC`, the worker the single-pod path runs.

The stage's inputs and outputs must be the same paths in every pod: the manifest mounts one
ReadWriteMany PersistentVolumeClaim at `mount_path` in all of them (data, teacher, generator,
the output folder and the checkpoints live there). docs/cluster.md §4b says how to use it.
The manifest is validated in tests against the operator's published CRD schema (v1.9.0).
"""

from __future__ import annotations

import json
import re
from typing import Any

from gandistill import stage_params
from gandistill.config import Params
from gandistill.errors import ConfigError
from gandistill.launch import TRAINING_STAGES, check_batch_split

CONTAINER = "pytorch"  # the operator finds the training container by this name
_NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def pytorchjob(params: Params, stage: str, paths: dict[str, str | None], *, name: str, nodes: int,
               claim: str, mount_path: str = "/shared", namespace: str | None = None) -> dict[str, Any]:
    """The PyTorchJob that runs `stage` on `nodes` pods, each with the accelerators of
    pipeline.resources.<stage> and one torchrun worker per accelerator (one per pod without)."""
    if stage not in TRAINING_STAGES:
        raise ConfigError(f"{stage} is not a training stage; multi-node stages: {', '.join(TRAINING_STAGES)}")
    if not _NAME_RE.fullmatch(name):
        raise ConfigError(f"job name {name!r}: use lowercase letters, digits and '-' (a Kubernetes name)")
    if nodes < 1:
        raise ConfigError(f"nodes={nodes}: a job needs at least one node")
    outside = [f"{k}={v}" for k, v in paths.items() if v and not v.startswith(mount_path.rstrip("/") + "/")]
    if outside:
        raise ConfigError(f"{', '.join(outside)}: every path must be on the shared volume mounted at {mount_path} "
                          "(each pod sees only that volume)")
    res = params.pipeline.resources.get(stage)  # type: ignore[call-overload]
    per_node = (res.accelerator_count or 1) if res is not None and res.accelerator_type else 1
    check_batch_split(params, stage, nodes * per_node)
    spec = {"stage": stage, "params": json.dumps(stage_params.select(params, stage)), "paths": paths, "run_id": "",
            "result": "/tmp/gandistill-result.json", "failures": "/tmp"}

    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": params.pipeline.image,
        "command": ["torchrun", "-m", "gandistill.launch", "--spec-json", json.dumps(spec)],
        "env": [{"name": "GANDISTILL_CHECKPOINT_ROOT", "value": f"{mount_path.rstrip('/')}/checkpoints"}]
        + [{"name": env, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
           for secret, mapping in params.pipeline.secrets.items() for key, env in mapping.items()],
        "volumeMounts": [{"name": "shared", "mountPath": mount_path}],
    }
    resources = _resources(res)
    if resources:
        container["resources"] = resources
    pod: dict[str, Any] = {"containers": [container],
                           "volumes": [{"name": "shared", "persistentVolumeClaim": {"claimName": claim}}]}
    if params.pipeline.node_selector:
        pod["nodeSelector"] = dict(params.pipeline.node_selector)
    if params.pipeline.tolerations:
        pod["tolerations"] = [dict(t) for t in params.pipeline.tolerations]

    def replicas(count: int) -> dict[str, Any]:
        # Never restart a pod on its own: a failed rank fails the job, and re-running the
        # stage resumes from its last checkpoint on the shared volume.
        return {"replicas": count, "restartPolicy": "Never", "template": {"spec": pod}}

    specs = {"Master": replicas(1)}
    if nodes > 1:
        specs["Worker"] = replicas(nodes - 1)
    metadata: dict[str, Any] = {"name": name, "labels": {"app.kubernetes.io/name": "gandistill",
                                                         "gandistill/stage": stage.replace("_", "-")}}
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": metadata,
        "spec": {
            "nprocPerNode": str(per_node),
            "pytorchReplicaSpecs": specs,
            "runPolicy": {"backoffLimit": 0, "cleanPodPolicy": "Running", "ttlSecondsAfterFinished": 86400},
        },
    }


def _resources(res: Any) -> dict[str, dict[str, Any]]:
    if res is None:
        return {}
    requests = {k: v for k, v in (("cpu", res.cpu_request), ("memory", res.memory_request)) if v}
    limits = {k: v for k, v in (("cpu", res.cpu_limit), ("memory", res.memory_limit)) if v}
    if res.accelerator_type:
        limits[res.accelerator_type] = res.accelerator_count or 1
    return {k: v for k, v in (("requests", requests), ("limits", limits)) if v}
