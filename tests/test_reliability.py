"""Reliability (issue 4): faulty MLflow endpoints end in ONE clear error (exit 5) after
bounded retries, a failed model upload registers nothing, secrets never reach logs / params /
tags / summaries, and user-supplied names cannot escape their folder.

Servers here are tiny stand-ins on 127.0.0.1 (a closed port, a socket that never answers,
an HTTP server answering 401); tests/integration/test_faults.py uses a real MLflow server.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import dead_port, smoke_params
from kfp import dsl

from gandistill import processes, tracking
from gandistill.config import Params, load_params
from gandistill.errors import ConfigError, ServiceError
from gandistill.stages import entry

ROOT = Path(__file__).resolve().parents[1]
SENTINELS = {"AWS_SECRET_ACCESS_KEY": "sentinel-aws-secret-7f3a", "MLFLOW_TRACKING_PASSWORD": "sentinel-mlflow-pw-91c2",
             "MLFLOW_TRACKING_TOKEN": "sentinel-mlflow-token-5be8"}


@pytest.fixture
def default_http_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Exercise gandistill's own bounded defaults (restored after the test)."""
    for key in tracking.HTTP_DEFAULTS:
        monkeypatch.setenv(key, "placeholder")
        monkeypatch.delenv(key)


@contextlib.contextmanager
def silent_server(connections: list[socket.socket] | None = None) -> Iterator[str]:
    """Accepts connections (kept in `connections`) and never answers: a hung / very slow server."""
    accepted = connections if connections is not None else []
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                accepted.append(sock.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        for conn in accepted:
            conn.close()
        sock.close()


@contextlib.contextmanager
def rejecting_server(seen: list[str]) -> Iterator[str]:
    """Answers every request 401, as an MLflow server behind auth does for bad credentials."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def _deny(self) -> None:
            seen.append(self.headers.get("Authorization", ""))
            body = b'{"error_code": "UNAUTHENTICATED", "message": "bad credentials"}'
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PATCH = do_DELETE = _deny

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# -- MLflow faults --------------------------------------------------------------------------

def test_unreachable_mlflow_fails_run_start_fast_with_one_clear_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, default_http_retries: None) -> None:
    from gandistill_pipeline.local import run_local

    with dead_port() as port, pytest.raises(ServiceError) as info:
        uri = f"http://127.0.0.1:{port}"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        run_local(Params(), runs_root=tmp_path / "runs", run_name="unreachable")
    message = str(info.value)
    assert uri in message and "MLFLOW_TRACKING_URI" in message and "unreachable" in message
    assert info.value.exit_code == 5
    # Fast = gandistill's bounded retries were in force, not MLflow's 7 retries × 120 s timeouts
    # (behaviour, not a stopwatch: wall time on a shared machine proves nothing).
    assert {key: os.environ.get(key) for key in tracking.HTTP_DEFAULTS} == tracking.HTTP_DEFAULTS
    assert not (tmp_path / "runs" / "unreachable").exists()


def test_unreachable_checkpoint_store_fails_the_run_before_anything_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pipeline.checkpoint_root on an object store we cannot reach: one error naming the
    endpoint and the fix, exit 5, before prepare_data runs or anything is written."""
    from gandistill_pipeline.local import run_local

    from gandistill import storage

    params = load_params(None, ["pipeline.checkpoint_root=s3://gandistill/checkpoints"])
    monkeypatch.delenv("GANDISTILL_CHECKPOINT_ROOT")  # the params' root, as a user's run has it
    with dead_port() as port, pytest.raises(ServiceError) as info:
        url = f"http://127.0.0.1:{port}"
        for key, value in {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y",
                           "GANDISTILL_S3_MAX_ATTEMPTS": "1", "AWS_EC2_METADATA_DISABLED": "true"}.items():
            monkeypatch.setenv(key, value)
        storage._client.cache_clear()
        run_local(params, runs_root=tmp_path / "runs", run_name="no-store")
    storage._client.cache_clear()
    assert url in str(info.value) and "unreachable" in str(info.value) and info.value.exit_code == 5
    assert not (tmp_path / "runs").exists()


def test_hung_mlflow_times_out_in_a_stage_with_one_line_and_exit_5(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    ran: list[int] = []
    connections: list[socket.socket] = []
    with silent_server(connections) as uri:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        with caplog.at_level(logging.ERROR, logger="gandistill"), pytest.raises(SystemExit) as exit_info:
            entry.run_stage("train_teacher", Params().to_json(), "0123456789abcdef",
                            lambda params, tracker: ran.append(1) or {})
    assert exit_info.value.code == 5 and not ran
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and uri in errors[0] and "too slow" in errors[0], errors
    assert "Traceback" not in errors[0]
    assert 1 <= len(connections) <= 2  # one try + the one retry configured: it gave up, it did not hang


def test_mlflow_rejecting_credentials_names_the_variables_and_hides_the_secret(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", SENTINELS["MLFLOW_TRACKING_PASSWORD"])
    with rejecting_server(seen) as uri:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        with pytest.raises(ServiceError) as info:
            tracking.start_parent_run("denied")
    message = str(info.value)
    assert seen and seen[0].startswith("Basic ")  # the credentials were sent, and refused
    assert uri in message and "MLFLOW_TRACKING_PASSWORD" in message and "MLFLOW_TRACKING_TOKEN" in message
    assert SENTINELS["MLFLOW_TRACKING_PASSWORD"] not in message
    assert len(seen) == 1  # 401 is not retried


def test_mlflow_failing_mid_stage_fails_the_task_with_the_message(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The stage's run opens, then every later MLflow call fails: one error line, exit 5."""
    parent = tracking.start_parent_run("mid")

    def body(params: Params, tracker: tracking.Tracker) -> dict:
        tracker.client.log_batch = _refused  # the server goes away mid-stage
        tracker.log_metrics({"loss": 1.0})
        return {}

    with caplog.at_level(logging.ERROR, logger="gandistill"), pytest.raises(SystemExit) as exit_info:
        entry.run_stage("distill", Params().to_json(), parent, body)
    assert exit_info.value.code == 5
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "while logging metrics" in errors[0] and "unreachable" in errors[0], errors


def _refused(*args: object, **kwargs: object) -> None:
    raise ConnectionError("HTTPConnectionPool(host='127.0.0.1', port=1): Max retries exceeded "
                          "(Caused by NewConnectionError: [Errno 111] Connection refused)")


# -- path traversal ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../../etc/x", "/etc/x", "a/b", "..", ".hidden", "latest", "x" * 200, ""])
def test_run_names_that_would_escape_the_runs_dir_are_refused(name: str, tmp_path: Path) -> None:
    from gandistill_pipeline.local import check_run_name, run_local, write_summary

    with pytest.raises(ConfigError, match="--run-name"):
        check_run_name(name)
    if name:
        with pytest.raises(ConfigError):
            run_local(Params(), runs_root=tmp_path / "runs", run_name=name)
        with pytest.raises(ConfigError):
            write_summary({}, tmp_path / "runs", name)
    assert not (tmp_path / "etc").exists() and not (tmp_path / "runs").exists()


def test_cli_refuses_a_traversing_run_name_with_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from gandistill_pipeline import cli

    monkeypatch.chdir(tmp_path)
    code = cli.main(["run", "--local", "--params", str(ROOT / "params.yaml"), "--runs-dir", "runs",
                     "--run-name", "../../etc/x"])
    assert code == 2 and "--run-name" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "etc").exists()


def test_good_run_names_pass() -> None:
    from gandistill_pipeline.local import check_run_name

    for name in ("e2e", "it-1a2b3c4d", "run-20260101-120000", "v1.2_final"):
        assert check_run_name(name) == name


@pytest.mark.parametrize("name", ["../../etc/x", "a/b", "..\\x", "x y"])
def test_model_names_cannot_become_paths(name: str) -> None:
    with pytest.raises(ConfigError, match="promote.model_name"):
        load_params(None, [f"promote.model_name={name}"])


# -- secrets -----------------------------------------------------------------------------------

def test_secrets_never_reach_logs_params_tags_or_summary(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mnist_dir: Path, capfd: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    from gandistill_components.prepare_data import prepare_data
    from gandistill_pipeline.local import build_summary, write_summary

    for key, value in SENTINELS.items():
        monkeypatch.setenv(key, value)
    params = smoke_params(f"data.path={mnist_dir}", "data.limit_train=300", "data.limit_test=100")
    with caplog.at_level(logging.DEBUG):
        parent = tracking.start_parent_run("secrets", tags={"gandistill.run_name": "secrets"})
        tracking.Tracker(parent, tracking.client()).log_params(params.flat())
        data = dsl.Dataset(name="data", uri=str(tmp_path / "kfp" / "prepare-data" / "data"))
        data.path = data.uri
        prepare_data(params.to_json(), parent, data, seed=params.seed)
        # a failing stage logs its error too: it must not echo credentials either
        with pytest.raises(SystemExit):
            entry.run_stage("train_teacher", params.to_json(), parent,
                            lambda p, t: _raise(ServiceError(f"denied with {SENTINELS['AWS_SECRET_ACCESS_KEY']}")))
        tracking.finish_run(parent)
        summary = build_summary(params, tmp_path / "kfp", parent, 1.0, "FINISHED")
        path = write_summary(summary, tmp_path / "runs", "secrets")

    out, err = capfd.readouterr()
    texts = {"stdout": out, "stderr": err, "log records": "\n".join(r.getMessage() for r in caplog.records),
             "summary.json": path.read_text(), "result.json": (Path(data.path) / "result.json").read_text()}
    client = tracking.client()
    runs = client.search_runs([client.get_run(parent).info.experiment_id])
    assert len(runs) >= 3  # parent + prepare_data + train_teacher
    texts["mlflow params/tags"] = json.dumps([[r.data.params, r.data.tags] for r in runs])
    assert "data.limit_train" in texts["mlflow params/tags"]  # the params really were logged
    for where, text in texts.items():
        for key, secret in SENTINELS.items():
            assert secret not in text, f"{key} leaked into {where}"


def _raise(exc: Exception) -> dict:
    raise exc


def test_redact_hides_every_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in SENTINELS.items():
        monkeypatch.setenv(key, value)
    text = " ".join(SENTINELS.values())
    assert all(secret not in tracking.redact(text) for secret in SENTINELS.values())


# -- a failed model upload registers nothing -------------------------------------------------------

def test_failed_model_upload_registers_no_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The artifact store refuses the upload (its root lies under a regular file, so even root
    cannot write there): promote fails with one ServiceError and the registry has no version."""
    import mlflow
    from helpers import fast_params, make_world

    from gandistill.results import write_result
    from gandistill.stages import export, promote

    world = make_world(tmp_path / "world")
    write_result(tmp_path / "eval", {"metrics": {"student_test_acc": 0.97, "teacher_test_acc": 0.99}})
    export.run(fast_params(), world["data"], world["student"], tmp_path / "eval", tmp_path / "exported", None,
               world["generator"])
    (tmp_path / "not-a-dir").write_text("a file where the artifact store should be")
    client = tracking.client()
    client.create_experiment("broken-store", artifact_location=str(tmp_path / "not-a-dir" / "artifacts"))
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "broken-store")
    params = fast_params()
    params.promote = params.promote.model_copy(update={"model_name": "upload-fails"})

    with pytest.raises(ServiceError) as info:
        promote.run(params, tmp_path / "exported", tmp_path / "eval", "run-upload-fails", None)
    assert tracking.tracking_uri() in str(info.value) and "re-run promote" in str(info.value)
    assert "not-a-dir" in str(info.value) or "Not a directory" in str(info.value), str(info.value)
    assert mlflow.MlflowClient().search_model_versions("name = 'upload-fails'") == []


# -- exit codes across the task boundary ---------------------------------------------------------

def test_an_error_crosses_the_task_boundary_as_its_documented_class() -> None:
    """A stage's error reaches `gandistill run` as a class name in its failure event; the name
    maps back to the documented class, so the run exits with that class's code."""
    from gandistill import errors

    for cls in errors.DOCUMENTED:
        assert errors.by_name(errors.category(cls("x"))) is cls
    assert errors.category(tracking.TrackingError("x")) == "ServiceError"  # a subclass reports as its row
    assert errors.by_name(errors.category(tracking.TrackingError("x"))).exit_code == 5
    assert errors.category(ValueError("a bug")) == "" and errors.by_name("").exit_code == 1


# -- attempts that die: their MLflow runs and kfp workspaces ------------------------------------

def _interruptible() -> None:
    """SIGINT at its default, as in a terminal's foreground job: a suite started in the background
    by a non-interactive shell (`make test-slow &`) hands its children SIGINT ignored, and Python
    then never raises KeyboardInterrupt — the run would rightly ignore the Ctrl-C this test sends."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_smoke_run(tmp_path: Path, name: str) -> tuple[subprocess.Popen, Path]:
    """`gandistill run --local --profile smoke` in its own process group; returns it once its
    prepare_data task has started (the MLflow parent exists, kfp's workspace too)."""
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp"), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    proc = subprocess.Popen([sys.executable, "-m", "gandistill", "run", "--local", "--profile", "smoke",
                             "--params", str(ROOT / "params.yaml"), "--runs-dir", str(tmp_path / "runs"),
                             "--run-name", name], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=_interruptible)
    events = tmp_path / "runs" / name / "events.jsonl"
    deadline = time.monotonic() + 300
    while not (events.is_file() and '"stage_start"' in events.read_text() and "RUNNING" in _stages_of(name)):
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "no stage started"
        time.sleep(0.1)
    return proc, events


def _stages_of(name: str) -> set[str]:
    """The statuses of the stage runs under run `name`'s MLflow parent (empty before they exist)."""
    client = tracking.client()
    experiment = client.get_experiment_by_name(tracking.experiment_name())
    parents = [] if experiment is None else client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`gandistill.run_name` = '{name}'")
    return _stage_statuses(parents[0].info.run_id) if parents else set()


def _parent(name: str) -> object:
    client = tracking.client()
    return client.search_runs([client.get_experiment_by_name(tracking.experiment_name()).experiment_id],
                              filter_string=f"tags.`gandistill.run_name` = '{name}'")[0]


def _stage_statuses(parent_id: str) -> set[str]:
    client = tracking.client()
    runs = client.search_runs([client.get_run(parent_id).info.experiment_id],
                              filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")
    return {r.info.status for r in runs}


@pytest.mark.slow
def test_a_terminated_run_closes_its_mlflow_runs_as_killed_and_removes_its_workspace(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM (as `kill`, a scheduler or `timeout` sends it) ends a run as Ctrl-C does: its task
    processes stop, exit 130, its MLflow parent and stage runs end KILLED (not RUNNING forever),
    kfp's temp workspace is gone. A kill -9 leaves both behind: the next run closes the dead
    attempt's MLflow runs as KILLED and removes its workspace; that run is then stopped by Ctrl-C
    (SIGINT to its process group) and ends the same way."""
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    proc, events = _start_smoke_run(tmp_path, "terminated")
    tasks = [(pid, processes.process_start(pid)) for pid in processes.children(proc.pid)]
    assert tasks  # kfp.local's task processes (the running stage)
    proc.send_signal(signal.SIGTERM)  # to the CLI alone: it must stop its task processes itself
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in err.rstrip().splitlines()[-1], err[-2000:]
    deadline = time.monotonic() + 60
    while any(processes.process_alive(*task) for task in tasks) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid, started in tasks if processes.process_alive(pid, started)]
    assert '"stage_end"' not in events.read_text()  # stopped, not left to finish its stage
    parent = _parent("terminated")
    assert parent.info.status == "KILLED" and "KILLED" in _stage_statuses(parent.info.run_id)
    assert "RUNNING" not in _stage_statuses(parent.info.run_id)
    assert not list((tmp_path / "tmp").glob("kfp-workspace-*"))
    assert json.loads((tmp_path / "runs" / "terminated" / "summary.json").read_text())["status"] == "KILLED"

    proc, _ = _start_smoke_run(tmp_path, "killed")
    os.killpg(proc.pid, signal.SIGKILL)  # the run and its task processes, nothing can clean up
    proc.wait()
    parent = _parent("killed")
    assert parent.info.status == "RUNNING" and "RUNNING" in _stage_statuses(parent.info.run_id)
    assert [p.name for p in (tmp_path / "tmp").glob("kfp-workspace-gandistill-*")]

    later, _ = _start_smoke_run(tmp_path, "later")
    os.killpg(later.pid, signal.SIGINT)  # Ctrl-C: a terminal signals the whole foreground group
    _, err = later.communicate(timeout=120)
    assert later.returncode == 130 and "interrupted" in err.rstrip().splitlines()[-1], err[-2000:]
    assert _parent("later").info.status == "KILLED"
    parent = tracking.client().get_run(parent.info.run_id)
    assert parent.info.status == "KILLED" and "KILLED" in _stage_statuses(parent.info.run_id)
    assert "RUNNING" not in _stage_statuses(parent.info.run_id)
    assert not list((tmp_path / "tmp").glob("kfp-workspace-*"))
