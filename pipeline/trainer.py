"""Multi-node training through Kubeflow's training engine, generated from params: a Kubeflow
Trainer v2 `TrainJob` (trainer.kubeflow.org/v1alpha1, the default) or, for clusters still on
the Training Operator v1, a `PyTorchJob` (kubeflow.org/v1).

One node (one pod, N GPUs) needs none of this: the pipeline's task runs torchrun itself
(pipeline.resources.<stage>.accelerator_count). Past one node the engine starts `nodes` pods
and gives each the PET_* variables torchrun reads (PET_NNODES, PET_NODE_RANK,
PET_MASTER_ADDR, PET_MASTER_PORT, PET_NPROC_PER_NODE), so every pod runs the same command:
`torchrun -m gandistill.launch --spec-json SPEC`, the worker the single-pod path runs.

- TrainJob: the job names a `ClusterTrainingRuntime` (default `torch-distributed`, which
  Kubeflow Trainer installs) whose Torch ML policy sets the PET_* variables; the job's
  `trainer` gives the image, command, node count, processes per node, resources and env, and
  one `runtimePatches` entry adds the shared volume, node selector and tolerations to the
  runtime's `node` pods (v2.2+ replaced podTemplateOverrides with runtimePatches).
- PyTorchJob: Master + Workers with the same pod; `nprocPerNode` per node.

The stage's inputs and outputs must be the same paths in every pod: both mount one
ReadWriteMany PersistentVolumeClaim at `mount_path` (data, teacher, generator, the output
folder and the checkpoints live there). docs/cluster.md §4b says how to use them. Tests
validate the TrainJob against the published API types (PyPI `kubeflow-trainer-api`) and the
PyTorchJob against the operator's published CRD schema (v1.9.0).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from gandistill import stage_params, stage_records
from gandistill.config import Params
from gandistill.errors import ConfigError
from gandistill.launch import check_batch_split

TRAINER_API_VERSION = "trainer.kubeflow.org/v1alpha1"
DEFAULT_RUNTIME = "torch-distributed"  # the ClusterTrainingRuntime Kubeflow Trainer ships for PyTorch
TRAINJOB_CONTAINER = "node"  # the trainer container of a Trainer v2 runtime (its Torch plugin targets it)
PYTORCHJOB_CONTAINER = "pytorch"  # the operator finds the training container by this name
PATCH_MANAGER = "gandistill.io/trainer-manifest"  # owner of our runtimePatches entry
_NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


@dataclass(frozen=True)
class _Job:
    """What both manifests say, decided once: the worker command, env, resources, placement."""
    name: str
    namespace: str | None
    stage: str
    nodes: int
    per_node: int
    image: str
    command: list[str]
    env: list[dict[str, Any]]
    resources: dict[str, dict[str, Any]]
    volume: dict[str, Any]
    mount: dict[str, Any]
    node_selector: dict[str, str]
    tolerations: list[dict[str, Any]]

    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": self.name, "labels": {"app.kubernetes.io/name": "gandistill",
                                                               "gandistill/stage": self.stage.replace("_", "-")}}
        if self.namespace:
            meta["namespace"] = self.namespace
        return meta


def _job(params: Params, stage: str, paths: dict[str, str | None], *, name: str, nodes: int, claim: str,
         mount_path: str, namespace: str | None) -> _Job:
    if stage not in stage_records.data_parallel():
        raise ConfigError(f"{stage} is not a training stage; multi-node stages: "
                          f"{', '.join(stage_records.data_parallel())}")
    if not _NAME_RE.fullmatch(name):
        raise ConfigError(f"job name {name!r}: use lowercase letters, digits and '-' (a Kubernetes name)")
    if nodes < 1:
        raise ConfigError(f"nodes={nodes}: a job needs at least one node")
    mount_path = mount_path.rstrip("/")
    outside = [f"{k}={v}" for k, v in paths.items() if v and not v.startswith(mount_path + "/")]
    if outside:
        raise ConfigError(f"{', '.join(outside)}: every path must be on the shared volume mounted at {mount_path} "
                          "(each pod sees only that volume)")
    res = params.pipeline.resources.get(stage)  # type: ignore[call-overload]
    per_node = (res.accelerator_count or 1) if res is not None and res.accelerator_type else 1
    check_batch_split(params, stage, nodes * per_node)
    spec = {"stage": stage, "params": json.dumps(stage_params.select(params, stage)), "paths": paths, "run_id": "",
            "result": "/tmp/gandistill-result.json", "failures": "/tmp"}
    env = ([{"name": "GANDISTILL_CHECKPOINT_ROOT", "value": f"{mount_path}/checkpoints"}]
           + [{"name": env, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
              for secret, mapping in params.pipeline.secrets.items() for key, env in mapping.items()])
    return _Job(name=name, namespace=namespace, stage=stage, nodes=nodes, per_node=per_node,
                image=params.pipeline.image,
                command=["torchrun", "-m", "gandistill.launch", "--spec-json", json.dumps(spec)],
                env=env, resources=_resources(res),
                volume={"name": "shared", "persistentVolumeClaim": {"claimName": claim}},
                mount={"name": "shared", "mountPath": mount_path},
                node_selector=dict(params.pipeline.node_selector),
                tolerations=[dict(t) for t in params.pipeline.tolerations])


def trainjob(params: Params, stage: str, paths: dict[str, str | None], *, name: str, nodes: int, claim: str,
             mount_path: str = "/shared", namespace: str | None = None,
             runtime: str = DEFAULT_RUNTIME) -> dict[str, Any]:
    """The Kubeflow Trainer v2 TrainJob that runs `stage` on `nodes` pods of the
    ClusterTrainingRuntime `runtime`, each with the accelerators of pipeline.resources.<stage>
    and one torchrun worker per accelerator (one per pod without)."""
    job = _job(params, stage, paths, name=name, nodes=nodes, claim=claim, mount_path=mount_path,
               namespace=namespace)
    trainer: dict[str, Any] = {"image": job.image, "command": job.command, "numNodes": job.nodes,
                               "numProcPerNode": job.per_node, "env": job.env}
    if job.resources:
        trainer["resourcesPerNode"] = job.resources
    # The runtime's trainer env may only be set through `trainer.env`; a patch adds the volume
    # (and the container's mount of it) and the placement to the runtime's `node` pods.
    pod: dict[str, Any] = {"volumes": [job.volume],
                           "containers": [{"name": TRAINJOB_CONTAINER, "volumeMounts": [job.mount]}]}
    if job.node_selector:
        pod["nodeSelector"] = job.node_selector
    if job.tolerations:
        pod["tolerations"] = job.tolerations
    patch = {"manager": PATCH_MANAGER, "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [
        {"name": TRAINJOB_CONTAINER, "template": {"spec": {"template": {"spec": pod}}}}]}}}}
    return {
        "apiVersion": TRAINER_API_VERSION,
        "kind": "TrainJob",
        "metadata": job.metadata(),
        "spec": {"runtimeRef": {"name": runtime, "apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime"},
                 "trainer": trainer, "runtimePatches": [patch]},
    }


def pytorchjob(params: Params, stage: str, paths: dict[str, str | None], *, name: str, nodes: int,
               claim: str, mount_path: str = "/shared", namespace: str | None = None) -> dict[str, Any]:
    """The Training Operator v1 PyTorchJob that runs `stage` on `nodes` pods (Master +
    Workers), for clusters without Kubeflow Trainer v2."""
    job = _job(params, stage, paths, name=name, nodes=nodes, claim=claim, mount_path=mount_path,
               namespace=namespace)
    container: dict[str, Any] = {"name": PYTORCHJOB_CONTAINER, "image": job.image, "command": job.command,
                                 "env": job.env, "volumeMounts": [job.mount]}
    if job.resources:
        container["resources"] = job.resources
    pod: dict[str, Any] = {"containers": [container], "volumes": [job.volume]}
    if job.node_selector:
        pod["nodeSelector"] = job.node_selector
    if job.tolerations:
        pod["tolerations"] = job.tolerations

    def replicas(count: int) -> dict[str, Any]:
        # Never restart a pod on its own: a failed rank fails the job, and re-running the
        # stage resumes from its last checkpoint on the shared volume.
        return {"replicas": count, "restartPolicy": "Never", "template": {"spec": pod}}

    specs = {"Master": replicas(1)}
    if nodes > 1:
        specs["Worker"] = replicas(nodes - 1)
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": job.metadata(),
        "spec": {
            "nprocPerNode": str(job.per_node),
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
