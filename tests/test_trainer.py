"""The multi-node PyTorchJob (Kubeflow Training Operator) generated from params, validated
against the operator's published CRD schema (v1.9.0, vendored in tests/schemas/). No
cluster here: this is what `kubectl apply` would send; the API server validates the same
schema (unknown fields rejected, as kubectl's strict field validation does)."""

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
from gandistill_pipeline.trainer import pytorchjob

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


def test_the_cli_prints_the_manifest(validator: jsonschema.Validator, capsys: pytest.CaptureFixture[str],
                                     repo_root: Path) -> None:
    code = cli(shlex.split(f"trainer-manifest --params {repo_root / 'params.yaml'} --stage train_gan --nodes 2 "
                           "--name gan-2 --claim shared --data /shared/d --teacher /shared/t --out /shared/g"))
    assert code == 0
    job = yaml.safe_load(capsys.readouterr().out)
    assert _errors(validator, job) == []
    paths = json.loads(job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
                       ["command"][4])["paths"]
    assert paths == {"data_dir": "/shared/d", "out_dir": "/shared/g", "teacher_dir": "/shared/t"}
