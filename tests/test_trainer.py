"""The multi-node jobs generated from params: the Kubeflow Trainer v2 TrainJob, validated
against the published API types (PyPI `kubeflow-trainer-api`, the models generated from
Trainer's OpenAPI spec), and the Training Operator v1 PyTorchJob, validated against the
operator's published CRD schema (v1.9.0, vendored in tests/schemas/). No cluster here (a
Kubernetes API is the boundary): this is what `kubectl apply` would send; the API server
validates the same schema (unknown fields rejected, as kubectl's strict field validation does)."""

from __future__ import annotations

import copy
import hashlib
import json
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from gandistill_pipeline.cli import main as cli
from gandistill_pipeline.trainer import pytorchjob, trainjob
from kubeflow_trainer_api.models import TrainerV1alpha1TrainJob

from gandistill import stage_params
from gandistill.config import load_params
from gandistill.errors import ConfigError

CRD = Path(__file__).parent / "schemas" / "kubeflow.org_pytorchjobs.v1.9.0.yaml"
CRD_SHA256 = "eb80e57a984cdc7ceefaaf3fc561e21b673c30cbb58589f2389528d2b2760d22"
GPU = ["pipeline.image=registry.example/gandistill:1.2.3-cuda",
       "pipeline.resources={train_teacher: {cpu_request: '4', memory_limit: 16Gi, accelerator_type: nvidia.com/gpu, "
       "accelerator_count: 4}}",
       "pipeline.tolerations=[{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]",
       "pipeline.node_selector={pool: gpu}",
       "pipeline.secrets={mlflow: {uri: MLFLOW_TRACKING_URI}}"]
PATHS = {"data_dir": "/shared/data", "out_dir": "/shared/runs/teacher"}


def _closed(schema: Any) -> Any:
    """The CRD schema with every object closed to unknown fields (what strict field validation
    enforces; plain JSON-schema would accept a misspelt key)."""
    if isinstance(schema, dict):
        schema = {k: _closed(v) for k, v in schema.items()}
        if (schema.get("type") == "object" and "properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_closed(v) for v in schema]
    return schema


@pytest.fixture(scope="module")
def validator() -> jsonschema.Validator:
    assert hashlib.sha256(CRD.read_bytes()).hexdigest() == CRD_SHA256  # the published file, unedited
    crd = yaml.safe_load(CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = _closed(version["schema"]["openAPIV3Schema"])
    return jsonschema.Draft7Validator(schema)


def _errors(validator: jsonschema.Validator, job: dict[str, Any]) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(job)]


def test_the_job_for_a_gpu_stage_is_valid_against_the_operators_schema(validator: jsonschema.Validator) -> None:
    job = pytorchjob(load_params(None, GPU), "train_teacher", PATHS, name="teacher-4x4", nodes=4,
                     claim="gandistill-shared", namespace="ml")
    assert _errors(validator, job) == []
    spec = job["spec"]
    assert (job["apiVersion"], job["kind"]) == ("kubeflow.org/v1", "PyTorchJob")
    assert spec["nprocPerNode"] == "4"  # one torchrun worker per GPU of the node
    assert spec["pytorchReplicaSpecs"]["Master"]["replicas"] == 1
    assert spec["pytorchReplicaSpecs"]["Worker"]["replicas"] == 3
    assert spec["runPolicy"]["backoffLimit"] == 0  # a dead rank fails the job; a re-run resumes
    pod = spec["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["name"] == "pytorch" and container["image"] == "registry.example/gandistill:1.2.3-cuda"
    assert container["command"][:4] == ["torchrun", "-m", "gandistill.launch", "--spec-json"]
    worker_spec = json.loads(container["command"][4])
    assert worker_spec["stage"] == "train_teacher" and worker_spec["paths"] == PATHS
    # the keys train_teacher reads (gandistill.stage_params), as a pipeline task would receive them
    assert stage_params.select(load_params(None, GPU), "train_teacher") == json.loads(worker_spec["params"])
    assert container["resources"] == {"requests": {"cpu": "4"}, "limits": {"memory": "16Gi", "nvidia.com/gpu": 4}}
    assert {"name": "MLFLOW_TRACKING_URI", "valueFrom": {"secretKeyRef": {"name": "mlflow", "key": "uri"}}} \
        in container["env"]
    assert pod["volumes"] == [{"name": "shared", "persistentVolumeClaim": {"claimName": "gandistill-shared"}}]
    assert pod["nodeSelector"] == {"pool": "gpu"} and pod["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_the_schema_check_rejects_what_the_api_server_would(validator: jsonschema.Validator) -> None:
    job = pytorchjob(load_params(None, GPU), "train_teacher", PATHS, name="t", nodes=2, claim="c")
    misspelt = copy.deepcopy(job)
    misspelt["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "x"
    wrong_type = copy.deepcopy(job)
    wrong_type["spec"]["pytorchReplicaSpecs"]["Master"]["replicas"] = "one"
    assert any("imagePullPolice" in e for e in _errors(validator, misspelt))
    assert any("replicas" in e for e in _errors(validator, wrong_type))


def test_a_cpu_stage_runs_one_worker_per_node_and_single_node_jobs_have_no_workers(
        validator: jsonschema.Validator) -> None:
    job = pytorchjob(load_params(None, []), "distill", PATHS | {"teacher_dir": "/shared/t",
                                                                "generator_dir": "/shared/g"},
                     name="distill-1", nodes=1, claim="c")
    assert _errors(validator, job) == []
    assert job["spec"]["nprocPerNode"] == "1" and set(job["spec"]["pytorchReplicaSpecs"]) == {"Master"}
    assert "resources" not in job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"nodes": 3}, r"teacher.batch_size=128 cannot be split evenly over the 12 processes"),
    ({"name": "Bad_Name"}, "a Kubernetes name"),
    ({"paths": {"data_dir": "/elsewhere/data", "out_dir": "/shared/o"}}, "data_dir=/elsewhere/data"),
])
def test_bad_jobs_are_refused_with_the_fault_and_the_fix(kwargs: dict[str, Any], message: str) -> None:
    args = {"paths": PATHS, "name": "t", "nodes": 2, "claim": "c"} | kwargs
    with pytest.raises(ConfigError, match=message):
        pytorchjob(load_params(None, GPU), "train_teacher", args.pop("paths"), **args)


# --- Kubeflow Trainer v2 -------------------------------------------------------------------


def _trainjob_errors(job: dict[str, Any]) -> list[str]:
    """What the published TrainJob types refuse: wrong types or missing required fields
    (pydantic), and — as strict field validation does — any field they do not know (the
    generated models drop unknown keys, so a round trip that loses something names it)."""
    import pydantic

    try:
        parsed = TrainerV1alpha1TrainJob.from_dict(job)
    except (pydantic.ValidationError, ValueError) as exc:
        return [str(exc)]
    assert parsed is not None
    return _lost(job, json.loads(parsed.to_json()))


def _lost(sent: Any, kept: Any, path: str = "") -> list[str]:
    if isinstance(sent, dict):
        if not isinstance(kept, dict):
            return [f"{path or '/'}: not an object"]
        errors = [f"{path}/{key}: unknown field" for key in sent if key not in kept]
        return errors + [err for key, value in sent.items() if key in kept
                         for err in _lost(value, kept[key], f"{path}/{key}")]
    if isinstance(sent, list):
        return [err for i, (a, b) in enumerate(zip(sent, kept, strict=True)) for err in _lost(a, b, f"{path}/{i}")]
    return [] if sent == kept else [f"{path}: {sent!r} became {kept!r}"]


def test_the_trainjob_for_a_gpu_stage_is_valid_against_the_published_trainer_types() -> None:
    job = trainjob(load_params(None, GPU), "train_teacher", PATHS, name="teacher-4x4", nodes=4,
                   claim="gandistill-shared", namespace="ml")
    assert _trainjob_errors(job) == []
    assert (job["apiVersion"], job["kind"]) == ("trainer.kubeflow.org/v1alpha1", "TrainJob")
    spec = job["spec"]
    assert spec["runtimeRef"] == {"name": "torch-distributed", "apiGroup": "trainer.kubeflow.org",
                                  "kind": "ClusterTrainingRuntime"}
    trainer = spec["trainer"]
    assert trainer["numNodes"] == 4 and trainer["numProcPerNode"] == 4  # one torchrun worker per GPU
    assert trainer["image"] == "registry.example/gandistill:1.2.3-cuda"
    assert trainer["command"][:4] == ["torchrun", "-m", "gandistill.launch", "--spec-json"]
    worker_spec = json.loads(trainer["command"][4])
    assert worker_spec["stage"] == "train_teacher" and worker_spec["paths"] == PATHS
    assert stage_params.select(load_params(None, GPU), "train_teacher") == json.loads(worker_spec["params"])
    assert trainer["resourcesPerNode"] == {"requests": {"cpu": "4"}, "limits": {"memory": "16Gi", "nvidia.com/gpu": 4}}
    env = {e["name"]: e for e in trainer["env"]}
    assert env["MLFLOW_TRACKING_URI"]["valueFrom"] == {"secretKeyRef": {"name": "mlflow", "key": "uri"}}
    assert env["GANDISTILL_CHECKPOINT_ROOT"]["value"] == "/shared/checkpoints"
    # Trainer's Torch plugin refuses a job that sets torchrun's own variables: it sets them.
    assert not [name for name in env if name.startswith("PET_")]
    (patch,) = spec["runtimePatches"]
    (replicated,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert replicated["name"] == "node"
    pod = replicated["template"]["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "shared", "persistentVolumeClaim": {"claimName": "gandistill-shared"}}]
    assert pod["containers"] == [{"name": "node", "volumeMounts": [{"name": "shared", "mountPath": "/shared"}]}]
    assert pod["nodeSelector"] == {"pool": "gpu"} and pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert job["metadata"]["namespace"] == "ml"


def test_the_trainjob_check_rejects_what_the_api_server_would() -> None:
    job = trainjob(load_params(None, GPU), "train_teacher", PATHS, name="t", nodes=2, claim="c")
    misspelt = copy.deepcopy(job)
    misspelt["spec"]["trainer"]["numNode"] = 2
    wrong_type = copy.deepcopy(job)
    wrong_type["spec"]["trainer"]["numNodes"] = "two"
    no_runtime = copy.deepcopy(job)
    del no_runtime["spec"]["runtimeRef"]
    assert any("numNode: unknown field" in e for e in _trainjob_errors(misspelt))
    assert any("numNodes" in e for e in _trainjob_errors(wrong_type))
    assert any("runtimeRef" in e for e in _trainjob_errors(no_runtime))


def test_a_cpu_trainjob_runs_one_worker_per_node_without_resources() -> None:
    job = trainjob(load_params(None, []), "distill", PATHS | {"teacher_dir": "/shared/t", "generator_dir": "/shared/g"},
                   name="distill-1", nodes=1, claim="c", runtime="my-torch")
    assert _trainjob_errors(job) == []
    assert job["spec"]["trainer"]["numProcPerNode"] == 1 and "resourcesPerNode" not in job["spec"]["trainer"]
    assert job["spec"]["runtimeRef"]["name"] == "my-torch"


def test_the_cli_prints_a_trainjob_by_default_and_a_pytorchjob_on_request(
        validator: jsonschema.Validator, capsys: pytest.CaptureFixture[str], repo_root: Path) -> None:
    args = (f"trainer-manifest --params {repo_root / 'params.yaml'} --stage train_gan --nodes 2 "
            "--name gan-2 --claim shared --data /shared/d --teacher /shared/t --out /shared/g")
    assert cli(shlex.split(args)) == 0
    job = yaml.safe_load(capsys.readouterr().out)
    assert job["kind"] == "TrainJob" and _trainjob_errors(job) == []
    assert json.loads(job["spec"]["trainer"]["command"][4])["paths"] == {
        "data_dir": "/shared/d", "out_dir": "/shared/g", "teacher_dir": "/shared/t"}
    assert cli(shlex.split(args + " --api pytorchjob")) == 0
    job = yaml.safe_load(capsys.readouterr().out)
    assert job["kind"] == "PyTorchJob" and _errors(validator, job) == []
