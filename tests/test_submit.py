"""pipeline.submit against a local HTTP stand-in for the KFP v2beta1 REST API.

MOCKED BOUNDARY: there is no Kubernetes/KFP cluster here, so `FakeKfpApi` below plays the
KFP API server on 127.0.0.1 — it records every request and answers with the minimal JSON
the real server returns. Everything on our side (compile, kfp.Client, its generated REST
client, multipart upload) is real. The compiled spec itself is checked in
tests/test_compiled_spec.py.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import yaml
from gandistill_pipeline import image
from gandistill_pipeline.submit import resolve_data_rev, submit, validate_cron

from gandistill import stage_params
from gandistill.config import load_params
from gandistill.errors import ConfigError, ServiceError

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    body: bytes
    authorization: str | None = None

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeKfpApi:
    """State of the stand-in: which pipelines exist, what was asked."""

    requests: list[Recorded] = field(default_factory=list)
    pipelines: dict[str, str] = field(default_factory=dict)  # display name -> id
    versions: dict[str, list[dict[str, str]]] = field(default_factory=dict)  # pipeline id -> versions
    fail_status: int | None = None

    def answer(self, req: Recorded) -> tuple[int, dict[str, Any]]:
        if self.fail_status and req.path != "/apis/v2beta1/healthz":
            return self.fail_status, {"error": "denied", "code": 7, "message": "denied"}
        p, m = req.path, req.method
        if p == "/apis/v2beta1/healthz":
            return 200, {"multi_user": False}
        if p == "/apis/v2beta1/experiments" and m == "GET":
            return 200, {}  # no experiment with that name yet
        if p == "/apis/v2beta1/experiments" and m == "POST":
            return 200, {"experiment_id": "exp-1", "display_name": req.json()["display_name"]}
        if p == "/apis/v2beta1/runs" and m == "POST":
            return 200, {"run_id": "run-1", "display_name": req.json()["display_name"]}
        if p == "/apis/v2beta1/pipelines" and m == "GET":
            found = [{"pipeline_id": i, "display_name": n} for n, i in self.pipelines.items()]
            return 200, {"pipelines": found} if found else {}
        if p == "/apis/v2beta1/pipelines/upload" and m == "POST":
            name = req.query["name"][0]
            self.pipelines[name] = "pl-1"
            self.versions["pl-1"] = [{"pipeline_id": "pl-1", "pipeline_version_id": "ver-1", "display_name": name}]
            return 200, {"pipeline_id": "pl-1", "display_name": name}
        if p.startswith("/apis/v2beta1/pipelines/") and p.endswith("/versions") and m == "GET":
            pid = p.split("/")[4]
            versions = self.versions.get(pid, [])
            if "filter" in req.query:
                wanted = json.loads(req.query["filter"][0])["predicates"][0]["stringValue"]
                versions = [v for v in versions if v["display_name"] == wanted]
            return 200, {"pipeline_versions": versions[:1]} if versions else {}
        if p == "/apis/v2beta1/pipelines/upload_version" and m == "POST":
            pid = req.query["pipelineid"][0]
            version = {"pipeline_id": pid, "pipeline_version_id": f"ver-{len(self.versions[pid]) + 1}",
                       "display_name": req.query["name"][0]}
            self.versions[pid].append(version)
            return 200, version
        if p == "/apis/v2beta1/recurringruns" and m == "POST":
            return 200, {"recurring_run_id": "rr-1", "display_name": req.json()["display_name"]}
        return 404, {"error": f"stand-in has no route {m} {p}"}


@pytest.fixture
def kfp_api() -> Iterator[tuple[str, FakeKfpApi]]:
    state = FakeKfpApi()

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            url = urlparse(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            req = Recorded(self.command, url.path, parse_qs(url.query), body, self.headers.get("Authorization"))
            state.requests.append(req)
            status, payload = state.answer(req)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _handle  # noqa: N815

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


@pytest.fixture
def params() -> Any:
    return load_params(ROOT / "params.yaml", ["pipeline.image=registry.example/gandistill"])


def _posted(state: FakeKfpApi, path: str) -> Recorded:
    matches = [r for r in state.requests if r.method == "POST" and r.path == path]
    assert len(matches) == 1, [(r.method, r.path) for r in state.requests]
    return matches[0]


def _pipeline_spec(run: dict[str, Any]) -> dict[str, Any]:
    """The pipeline spec of a posted run; kfp wraps it with the Kubernetes platform spec
    (every task reads its KFP run id from its pod label, so there always is one)."""
    wrapped = run["pipeline_spec"]
    executors = wrapped["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert all({"name": "KFP_RUN_ID", "fieldPath": "metadata.labels['pipeline/runid']"} in e["fieldPathAsEnv"]
               for e in executors.values())
    return wrapped["pipeline_spec"]


def test_one_off_run(kfp_api: tuple[str, FakeKfpApi], params: Any) -> None:
    host, state = kfp_api
    result = submit(params, host=host, experiment="nightly", run_name="r1", pipeline_root="s3://art/gandistill",
                    data_rev="a" * 40)
    assert result["run_id"] == "run-1" and result["url"] == f"{host}/#/runs/details/run-1"
    assert _posted(state, "/apis/v2beta1/experiments").json()["display_name"] == "nightly"
    run = _posted(state, "/apis/v2beta1/runs").json()
    assert run["experiment_id"] == "exp-1" and run["display_name"] == "r1"
    runtime = run["runtime_config"]
    assert runtime["pipeline_root"] == "s3://art/gandistill"
    assert runtime["parameters"]["data_rev"] == "a" * 40
    # The params travel compiled into the package (each task: what its stage reads); the typed
    # knobs keep their compiled defaults, so the data revision is the only argument.
    assert set(runtime["parameters"]) == {"data_rev"}
    spec = _pipeline_spec(run)
    tasks = spec["root"]["dag"]["tasks"]
    for task, stage in (("train-teacher", "train_teacher"), ("distill", "distill")):
        sent = tasks[task]["inputs"]["parameters"]["params_json"]["runtimeValue"]["constant"]
        assert sent == stage_params.stage_json(params, stage)
    assert spec["root"]["inputDefinitions"]["parameters"]["distill_steps"]["defaultValue"] == params.distill.steps
    assert spec["pipelineInfo"]["name"] == "gandistill"
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    # pinned to this tree's code: the content tag `make image` tags (pipeline/image.py)
    assert images == {f"registry.example/gandistill:{image.content_tag(ROOT)}"}


def test_recurring_run_uploads_then_schedules(kfp_api: tuple[str, FakeKfpApi], params: Any) -> None:
    host, state = kfp_api
    result = submit(params, host=host, schedule="0 30 2 * * *", data_rev="b" * 40)
    assert result["recurring_run_id"] == "rr-1" and result["pipeline_version_id"] == "ver-1"
    upload = _posted(state, "/apis/v2beta1/pipelines/upload")
    assert upload.query["name"] == ["gandistill"] and b"uploadfile" in upload.body
    assert b"deploymentSpec" in upload.body  # the compiled package travels in the multipart body
    job = _posted(state, "/apis/v2beta1/recurringruns").json()
    assert job["trigger"]["cron_schedule"]["cron"] == "0 30 2 * * *"
    assert job["pipeline_version_reference"] == {"pipeline_id": "pl-1", "pipeline_version_id": "ver-1"}
    assert job["max_concurrency"] == "1" or job["max_concurrency"] == 1
    assert job["no_catchup"] is True and job["mode"] == "ENABLE"
    assert job["runtime_config"]["parameters"]["data_rev"] == "b" * 40

    # A second schedule of a changed pipeline adds a version instead of a duplicate pipeline.
    state.requests.clear()
    changed = params.model_copy(update={"seed": 7})
    second = submit(changed, host=host, schedule="0 0 4 * * 1-5", data_rev="b" * 40)
    assert second["pipeline_version_id"] == "ver-2"
    assert not [r for r in state.requests if r.path == "/apis/v2beta1/pipelines/upload"]
    _posted(state, "/apis/v2beta1/pipelines/upload_version")


@pytest.mark.parametrize("expr", ["0 3 * * *", "* * * *", "0 0 3 * * * *", "", "0 0 3 * * x!", "75 0 3 * * *"])
def test_cron_must_have_six_fields_seconds_first(expr: str, kfp_api: tuple[str, FakeKfpApi], params: Any) -> None:
    host, state = kfp_api
    with pytest.raises(ConfigError, match="six fields, seconds first"):
        submit(params, host=host, schedule=expr)
    assert state.requests == []  # refused before talking to the server


def test_five_field_cron_error_suggests_the_fix() -> None:
    with pytest.raises(ConfigError, match=r"use '0 0 3 \* \* \*'"):
        validate_cron("0 3 * * *")
    assert validate_cron("0  0 3 * * *") == "0 0 3 * * *"


def test_local_pipeline_root_is_refused(kfp_api: tuple[str, FakeKfpApi], params: Any) -> None:
    with pytest.raises(ConfigError, match="object-store URI"):
        submit(params, host=kfp_api[0], pipeline_root="/tmp/outputs")


def test_caching_follows_the_data_revision(kfp_api: tuple[str, FakeKfpApi], params: Any,
                                           tmp_path: Path) -> None:
    md5 = yaml.safe_load((ROOT / "data.dvc").read_text())["outs"][0]["md5"]
    assert resolve_data_rev(params, "", ROOT / "data.dvc") == f"dvc-md5:{md5}"
    dvc_branch = params.model_copy(update={"data": params.data.model_copy(
        update={"source": "dvc", "dvc_repo": "https://git.example/data.git", "dvc_rev": "main"})})
    assert resolve_data_rev(dvc_branch) == ""  # a branch moves: no cache key
    host, state = kfp_api
    result = submit(dvc_branch, host=host)
    run = _posted(state, "/apis/v2beta1/runs").json()
    assert result["caching"] is False
    tasks = _pipeline_spec(run)["root"]["dag"]["tasks"]
    assert all(t.get("cachingOptions", {}).get("enableCache") is not True for t in tasks.values())


def test_server_errors_become_service_errors(kfp_api: tuple[str, FakeKfpApi], params: Any) -> None:
    host, state = kfp_api
    state.fail_status = 403
    with pytest.raises(ServiceError, match=r"KFP at .*403.*authenticate"):
        submit(params, host=host, data_rev="c" * 40)


def test_unreachable_host(params: Any) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ServiceError, match=f"127.0.0.1:{port}.*reachable"):
        submit(params, host=f"http://127.0.0.1:{port}", data_rev="c" * 40)


def test_kfp_s_own_variables_name_the_endpoint_and_the_token_file(
        kfp_api: tuple[str, FakeKfpApi], params: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host, state = kfp_api
    token = tmp_path / "token"
    token.write_text("sentinel-bearer-token\n")
    monkeypatch.setenv("KF_PIPELINES_ENDPOINT", host + "/")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token))
    result = submit(params, data_rev="d" * 40)  # no --host
    assert result["url"] == f"{host}/#/runs/details/run-1"
    run = _posted(state, "/apis/v2beta1/runs")
    assert run.authorization == "Bearer sentinel-bearer-token"
    assert "sentinel-bearer-token" not in run.body.decode()  # a header, never a run argument


def test_missing_endpoint_or_token_file_is_a_params_error(params: Any, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KF_PIPELINES_ENDPOINT", raising=False)
    with pytest.raises(ConfigError, match="--host URL or set KF_PIPELINES_ENDPOINT") as info:
        submit(params, data_rev="d" * 40)
    assert info.value.exit_code == 2
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match="KF_PIPELINES_SA_TOKEN_PATH=.*absent: no such file"):
        submit(params, host="http://127.0.0.1:9", data_rev="d" * 40)
    monkeypatch.delenv("KF_PIPELINES_SA_TOKEN_PATH")
    monkeypatch.setenv("KFP_TOKEN", "old-style")
    with pytest.raises(ConfigError, match="KFP_TOKEN is no longer read.*KF_PIPELINES_SA_TOKEN_PATH"):
        submit(params, host="http://127.0.0.1:9", data_rev="d" * 40)
