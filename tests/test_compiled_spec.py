"""The compiled KFP spec, loaded as YAML: images, per-stage resources and accelerators, node
selector, tolerations, secrets as env (never parameters), DAG edges, and the cache key's
data revision. No cluster here — this is what a cluster would receive."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from gandistill_pipeline.dag import compile_pipeline

from gandistill.config import load_params

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "registry.example/gandistill:1.2.3-cuda"
CLUSTER = [
    f"pipeline.image={IMAGE}",
    "pipeline.resources={train_gan: {cpu_request: '2', cpu_limit: '4', memory_request: 4Gi, memory_limit: 8Gi, "
    "accelerator_type: nvidia.com/gpu, accelerator_count: 2}, distill: {accelerator_type: nvidia.com/gpu}, "
    "prepare_data: {cpu_request: 500m, memory_limit: 2Gi}}",
    "pipeline.node_selector={cloud.google.com/gke-nodepool: train}",
    "pipeline.tolerations=[{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]",
    "pipeline.secrets={s3-creds: {access-key: AWS_ACCESS_KEY_ID, secret-key: AWS_SECRET_ACCESS_KEY}, "
    "mlflow: {uri: MLFLOW_TRACKING_URI, token: MLFLOW_TRACKING_TOKEN}}",
]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    params = load_params(ROOT / "params.yaml", CLUSTER)
    out = tmp_path_factory.mktemp("spec") / "pipeline.yaml"
    compile_pipeline(params, str(out))
    spec, platform = yaml.safe_load_all(out.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _all_tasks(spec: dict[str, Any]) -> dict[str, Any]:
    """Root tasks plus those inside sub-DAGs (the gate's dsl.If / dsl.Else branches)."""
    tasks = dict(spec["root"]["dag"]["tasks"])
    for component in spec["components"].values():
        tasks |= component.get("dag", {}).get("tasks", {})
    return tasks


def _executor(spec: dict[str, Any], task: str) -> str:
    return _all_tasks(spec)[task]["componentRef"]["name"].replace("comp-", "exec-")


def test_every_component_runs_the_one_configured_image(compiled: Any) -> None:
    spec, _ = compiled
    executors = spec["deploymentSpec"]["executors"]
    # check_params + 6 stages + the gate + promote in each gate branch
    assert len(executors) == 10
    assert {e["container"]["image"] for e in executors.values()} == {IMAGE}


def test_per_stage_resources_and_accelerators(compiled: Any) -> None:
    spec, _ = compiled
    res = {t: spec["deploymentSpec"]["executors"][_executor(spec, t)]["container"].get("resources", {})
           for t in _all_tasks(spec) if _executor(spec, t) in spec["deploymentSpec"]["executors"]}
    gan = res["train-gan"]
    assert (gan["resourceCpuRequest"], gan["resourceCpuLimit"]) == ("2", "4")
    assert (gan["resourceMemoryRequest"], gan["resourceMemoryLimit"]) == ("4Gi", "8Gi")
    assert gan["accelerator"]["resourceType"] == "nvidia.com/gpu" and gan["accelerator"]["resourceCount"] == "2"
    assert res["distill"]["accelerator"]["resourceCount"] == "1"  # type without count = one device
    assert res["prepare-data"] == {"cpuRequest": 0.5, "resourceCpuRequest": "500m",
                                   "memoryLimit": pytest.approx(2.147483648), "resourceMemoryLimit": "2Gi"}
    assert res["evaluate"] == {} and "accelerator" not in res["train-teacher"]


def test_node_selector_tolerations_and_secrets_on_every_task(compiled: Any) -> None:
    spec, k8s = compiled
    assert set(k8s) == set(spec["deploymentSpec"]["executors"])
    for name, settings in k8s.items():
        assert settings["nodeSelector"]["labels"] == {"cloud.google.com/gke-nodepool": "train"}, name
        assert settings["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        envs = {(s["secretName"], k["secretKey"], k["envVar"]) for s in settings["secretAsEnv"] for k in s["keyToEnv"]}
        assert envs == {("s3-creds", "access-key", "AWS_ACCESS_KEY_ID"),
                        ("s3-creds", "secret-key", "AWS_SECRET_ACCESS_KEY"),
                        ("mlflow", "uri", "MLFLOW_TRACKING_URI"), ("mlflow", "token", "MLFLOW_TRACKING_TOKEN")}


@pytest.mark.parametrize(("overrides", "training"), [
    ([], {"train-teacher", "train-gan", "distill"}),
    (["distill.method=cyclegan", "data.target_source=mnistm", "data.target_path=data/mnist"],
     {"train-teacher", "train-translator", "distill", "distill-2"}),  # + the baselines' ParallelFor task
], ids=["gan", "cyclegan"])
def test_only_the_training_stages_ask_for_gpu_nodes_in_the_cluster_example(
        overrides: list[str], training: set[str], tmp_path: Path) -> None:
    """docs/cluster.md's resources example, compiled as written: a stage's own node selector and
    tolerations replace the pipeline-wide ones, so CPU stages never wait for a GPU node."""
    text = (ROOT / "docs" / "cluster.md").read_text()
    example = text.split("## 4. Resources")[1].split("```yaml\n")[1].split("```")[0]
    (tmp_path / "params.cluster.yaml").write_text(example)
    compile_pipeline(load_params(tmp_path / "params.cluster.yaml", overrides), str(tmp_path / "p.yaml"))
    spec, platform = yaml.safe_load_all((tmp_path / "p.yaml").read_text())
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    executors = spec["deploymentSpec"]["executors"]
    placed = {}
    for task in _all_tasks(spec):
        executor = _executor(spec, task)
        if executor not in executors:
            continue  # a condition sub-DAG, not a container
        settings = k8s.get(executor, {})
        accelerator = executors[executor]["container"].get("resources", {}).get("accelerator", {})
        placed[task] = (settings.get("nodeSelector", {}).get("labels"), settings.get("tolerations"),
                        accelerator.get("resourceType"))
    assert training < set(placed) and {"prepare-data", "evaluate", "export", "promote-gate"} < set(placed)
    for task, (selector, tolerations, accelerator) in placed.items():
        if task in training:
            assert selector == {"node.kubernetes.io/instance-type": "g5.2xlarge"}, task
            assert tolerations == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}], task
            assert accelerator == "nvidia.com/gpu", task
        else:  # prepare_data, evaluate, export, the gate, promote: any node
            assert (selector, tolerations, accelerator) == (None, None, None), task


def test_a_stage_s_own_empty_placement_replaces_the_pipeline_wide_one(tmp_path: Path) -> None:
    params = load_params(ROOT / "params.yaml", CLUSTER + [
        "pipeline.resources.prepare_data={node_selector: {}, tolerations: []}",
        "pipeline.resources.evaluate={node_selector: {pool: cpu}}"])
    compile_pipeline(params, str(tmp_path / "p.yaml"))
    _, platform = yaml.safe_load_all((tmp_path / "p.yaml").read_text())
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert "nodeSelector" not in k8s["exec-prepare-data"] and "tolerations" not in k8s["exec-prepare-data"]
    assert k8s["exec-prepare-data"]["secretAsEnv"]  # secrets still reach every task
    assert k8s["exec-evaluate"]["nodeSelector"]["labels"] == {"pool": "cpu"}
    assert k8s["exec-evaluate"]["tolerations"] == k8s["exec-train-gan"]["tolerations"]  # not set: pipeline-wide
    assert k8s["exec-train-gan"]["nodeSelector"]["labels"] == {"cloud.google.com/gke-nodepool": "train"}


def test_every_task_reads_its_kfp_run_id_from_its_pod_label_not_an_input(compiled: Any) -> None:
    """tracking.pipeline_parent finds the run's MLflow parent by $KFP_RUN_ID; it comes from the
    pod's own `pipeline/runid` label (downward API), so no task input (cache key) changes per run."""
    spec, k8s = compiled
    for name in spec["deploymentSpec"]["executors"]:
        assert {"name": "KFP_RUN_ID", "fieldPath": "metadata.labels['pipeline/runid']"} in k8s[name]["fieldPathAsEnv"]
    for task in _all_tasks(spec).values():
        assert "KFP_RUN_ID" not in json.dumps(task.get("inputs", {}))


def test_credentials_are_never_parameters(compiled: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec, _ = compiled
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    assert set(inputs) == {"parent_run_id", "data_rev", "seed", "gan_steps", "distill_steps"}
    # No task's params carry the pipeline section (secret *names* live in the platform spec only).
    for task in _all_tasks(spec).values():
        constant = task.get("inputs", {}).get("parameters", {}).get("params_json", {}).get("runtimeValue", {})
        assert "pipeline" not in json.loads(constant.get("constant", "{}"))
    # Credentials in the submitting shell never leak into the package.
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sentinel-s3-secret")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "sentinel-mlflow-token")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "sentinel-mlflow-password")
    compile_pipeline(load_params(ROOT / "params.yaml", CLUSTER), str(tmp_path / "p.yaml"))
    text = (tmp_path / "p.yaml").read_text()
    assert all(s not in text for s in ("sentinel-s3-secret", "sentinel-mlflow-token", "sentinel-mlflow-password"))


def test_dag_edges(compiled: Any) -> None:
    spec, _ = compiled
    tasks = spec["root"]["dag"]["tasks"]
    deps = {name: set(t.get("dependentTasks", [])) for name, t in tasks.items()}
    assert deps == {
        "check-params": set(),  # the run's typed knobs, checked before anything trains
        "prepare-data": {"check-params"},
        "train-teacher": {"prepare-data"},
        "train-gan": {"prepare-data", "train-teacher"},
        "distill": {"prepare-data", "train-teacher", "train-gan"},
        "evaluate": {"prepare-data", "train-teacher", "train-gan", "distill"},
        "export": {"prepare-data", "distill", "evaluate", "train-gan"},  # the cGAN calibrates the INT8 model
        "promote-gate": {"evaluate"},
        "condition-branches-1": {"evaluate", "export", "promote-gate"},  # dsl.If / dsl.Else on the gate
    }
    branches = {name: task for name, task in _all_tasks(spec).items() if name.startswith("promote") and
                name != "promote-gate"}
    assert len(branches) == 2  # promote as champion (gate passed) or as challenger (gate failed)
    student = tasks["evaluate"]["inputs"]["artifacts"]["student"]["taskOutputArtifact"]
    assert student == {"outputArtifactKey": "student", "producerTask": "distill"}


def test_data_revision_keys_the_cache(compiled: Any) -> None:
    spec, _ = compiled
    tasks = spec["root"]["dag"]["tasks"]
    prep = tasks["prepare-data"]
    assert prep["inputs"]["parameters"]["data_rev"] == {"componentInputParameter": "data_rev"}
    assert prep["cachingOptions"].get("enableCache") is True  # cached per (params, data_rev)
    # the gate and promote read the registry's current champion: never served from cache.
    for name, task in _all_tasks(spec).items():
        if name.startswith("promote"):
            assert task.get("cachingOptions", {}).get("enableCache") is not True, name


def test_a_stage_with_several_accelerators_runs_torchrun_in_its_one_pod(compiled: Any) -> None:
    """pipeline.resources.train_gan asks for 2 GPUs: its one task (one pod, both GPUs) runs the
    stage under torchrun with 2 processes; one accelerator or none: one process."""
    spec, _ = compiled
    tasks = spec["root"]["dag"]["tasks"]
    launch = {name: tasks[name]["inputs"]["parameters"]["launch"]["runtimeValue"]["constant"]
              for name in ("train-teacher", "train-gan", "distill")}
    assert launch == {"train-gan": "torchrun --standalone --nnodes=1 --nproc_per_node=2 --max-restarts=0",
                      "train-teacher": "", "distill": ""}
    gan = spec["deploymentSpec"]["executors"][_executor(spec, "train-gan")]["container"]
    assert gan["resources"]["accelerator"]["resourceCount"] == "2"


def test_a_global_batch_that_cannot_split_over_the_accelerators_fails_at_compile(tmp_path: Path) -> None:
    from gandistill.errors import ConfigError

    params = load_params(ROOT / "params.yaml", [*CLUSTER, "gan.batch_size=127"])
    with pytest.raises(ConfigError, match=r"gan.batch_size=127 cannot be split evenly over the 2 processes"):
        compile_pipeline(params, str(tmp_path / "p.yaml"))


TRAINING_TASKS = {"train-teacher", "train-gan", "distill", "distill-2"}


def test_training_tasks_retry_and_resume_from_the_checkpoint_root(tmp_path: Path) -> None:
    """A pre-empted training pod is retried with backoff and its replacement finds the
    checkpoints (pipeline.checkpoint_root, as env, never a task input);
    the other stages are cheap to redo, and promote must not run twice."""
    params = load_params(ROOT / "params.yaml", ["pipeline.checkpoint_root=s3://ml/gandistill/checkpoints",
                                                "pipeline.retries=3", "evaluate.baselines=[kd]"])
    compile_pipeline(params, str(tmp_path / "p.yaml"))
    spec, _ = yaml.safe_load_all((tmp_path / "p.yaml").read_text())
    tasks = {name: task for name, task in _all_tasks(spec).items() if "componentRef" in task
             and _executor(spec, name) in spec["deploymentSpec"]["executors"]}
    assert set(tasks) >= TRAINING_TASKS
    for name, task in tasks.items():
        env = spec["deploymentSpec"]["executors"][_executor(spec, name)]["container"].get("env", [])
        if name in TRAINING_TASKS:
            assert task["retryPolicy"] == {"maxRetryCount": 3, "backoffDuration": "30s", "backoffFactor": 2.0,
                                           "backoffMaxDuration": "3600s"}, name
            assert {"name": "GANDISTILL_CHECKPOINT_ROOT", "value": "s3://ml/gandistill/checkpoints"} in env, name
        else:
            assert "retryPolicy" not in task, name
            assert not [e for e in env if e["name"] == "GANDISTILL_CHECKPOINT_ROOT"], name
        assert "s3://ml" not in json.dumps(task.get("inputs", {})), name  # never a task input


def test_training_tasks_mount_the_checkpoint_volume(tmp_path: Path) -> None:
    """pipeline.checkpoint_volume: the PVC is mounted into exactly the training tasks (kfp-kubernetes
    mount_pvc, in the spec's platform section) and their checkpoint root is on it; no other task
    mounts it, and it is never a task input."""
    params = load_params(ROOT / "params.yaml", ["pipeline.checkpoint_volume={claim: gd-ckpt, mount_path: /ckpt}",
                                                "evaluate.baselines=[kd]"])
    compile_pipeline(params, str(tmp_path / "p.yaml"))
    spec, platform = yaml.safe_load_all((tmp_path / "p.yaml").read_text())
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    tasks = {name: task for name, task in _all_tasks(spec).items() if "componentRef" in task
             and _executor(spec, name) in spec["deploymentSpec"]["executors"]}
    assert set(tasks) >= TRAINING_TASKS
    for name in tasks:
        mounts = executors.get(_executor(spec, name), {}).get("pvcMount", [])
        env = spec["deploymentSpec"]["executors"][_executor(spec, name)]["container"].get("env", [])
        if name in TRAINING_TASKS:
            assert [(m["constant"], m["mountPath"]) for m in mounts] == [("gd-ckpt", "/ckpt")], name
            assert {"name": "GANDISTILL_CHECKPOINT_ROOT", "value": "/ckpt"} in env, name
        else:
            assert mounts == [], name
        assert "gd-ckpt" not in json.dumps(tasks[name].get("inputs", {})), name


def test_a_checkpoint_root_off_the_volume_is_refused() -> None:
    from gandistill.errors import ConfigError

    volume = "pipeline.checkpoint_volume={claim: c, mount_path: /ckpt}"
    with pytest.raises(ConfigError, match="not on pipeline.checkpoint_volume"):
        load_params(ROOT / "params.yaml", [volume, "pipeline.checkpoint_root=s3://b/ckpt"])
    with pytest.raises(ConfigError, match="not on pipeline.checkpoint_volume"):
        load_params(ROOT / "params.yaml", [volume, "pipeline.checkpoint_root=/ckptx"])
    assert load_params(ROOT / "params.yaml", [volume, "pipeline.checkpoint_root=/ckpt/runs"]).pipeline \
        .cluster_checkpoint_root() == "/ckpt/runs"


def test_local_runs_do_not_retry_and_an_unset_root_adds_no_env(tmp_path: Path) -> None:
    """`run --local` builds the DAG with retries=0 (a local failure is a bug or bad input;
    re-running the command resumes), and without pipeline.checkpoint_root the pods keep the
    image's default (their own disk)."""
    from gandistill_pipeline.dag import build_pipeline
    from kfp import compiler

    compiler.Compiler().compile(build_pipeline(load_params(ROOT / "params.yaml"), retries=0), str(tmp_path / "p.yaml"))
    spec, *_ = yaml.safe_load_all((tmp_path / "p.yaml").read_text())
    assert not [name for name, task in _all_tasks(spec).items() if "retryPolicy" in task]
    assert not [e for e in spec["deploymentSpec"]["executors"].values() if e["container"].get("env")]


def test_checkpoint_root_must_be_storage_gandistill_writes() -> None:
    from gandistill.errors import ConfigError

    with pytest.raises(ConfigError, match="pipeline.checkpoint_root.*s3://"):
        load_params(ROOT / "params.yaml", ["pipeline.checkpoint_root=gs://bucket/ckpt"])


@pytest.mark.parametrize("overrides,profile", [(["evaluate.baselines=[kd]"], None), ([], "transfer")])
def test_training_tasks_show_their_final_metrics_and_curves_in_the_kfp_ui(
        overrides: list[str], profile: str | None, tmp_path: Path) -> None:
    """Every training task — the translator's and each fanned-out baseline student's too — outputs
    `metrics` (system.Metrics: the KFP run comparison's Scalar Metrics tab) and `curves` (system.HTML:
    its HTML tab); no other task outputs `curves`, and only evaluate other metrics."""
    from gandistill import stage_records

    compile_pipeline(load_params(ROOT / "params.yaml", overrides, profile), str(tmp_path / "p.yaml"))
    spec, *_ = yaml.safe_load_all((tmp_path / "p.yaml").read_text())
    seen = set()
    for name, task in _all_tasks(spec).items():
        component = spec["components"][task["componentRef"]["name"]]
        if "executorLabel" not in component:  # a sub-DAG (gate branches, the baselines loop)
            continue
        outputs = {key: value["artifactType"]["schemaTitle"]
                   for key, value in component.get("outputDefinitions", {}).get("artifacts", {}).items()}
        stage = name.replace("-", "_").rstrip("0123456789").rstrip("_")
        if stage in stage_records.trained():
            assert {k: outputs.get(k) for k in stage_records.TRAINING_OUTPUTS} == stage_records.TRAINING_OUTPUTS, name
            seen.add(name)
        else:
            assert "curves" not in outputs and ("metrics" not in outputs or stage == "evaluate"), name
    expected = {"train-teacher", "distill", "distill-2"} | (
        {"train-translator"} if profile == "transfer" else {"train-gan"})
    assert seen == expected
