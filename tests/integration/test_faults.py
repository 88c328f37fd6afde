"""A real MLflow server (MLflow's own server app, served on 127.0.0.1 from a thread of this
process: it starts in seconds, unlike `mlflow server`) that goes away in the middle of a
stage: the stage fails with one clear error naming the endpoint (exit 5) within seconds,
using gandistill's bounded retry defaults."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gandistill import tracking
from gandistill.config import Params
from gandistill.stages import entry


@pytest.fixture
def live_mlflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    monkeypatch.setenv("_MLFLOW_SERVER_FILE_STORE", f"sqlite:///{tmp_path / 'server.db'}")
    monkeypatch.setenv("_MLFLOW_SERVER_REGISTRY_STORE", f"sqlite:///{tmp_path / 'server.db'}")
    monkeypatch.setenv("_MLFLOW_SERVER_ARTIFACT_ROOT", "mlflow-artifacts:/")
    monkeypatch.setenv("_MLFLOW_SERVER_SERVE_ARTIFACTS", "true")
    monkeypatch.setenv("_MLFLOW_SERVER_ARTIFACT_DESTINATION", str(tmp_path / "artifacts"))
    for key in tracking.HTTP_DEFAULTS:  # gandistill's own bounded defaults
        monkeypatch.setenv(key, "placeholder")
        monkeypatch.delenv(key)
    from mlflow.server import app, handlers
    from werkzeug.serving import WSGIRequestHandler, make_server

    class OneRequestPerConnection(WSGIRequestHandler):
        protocol_version = "HTTP/1.0"  # no keep-alive: once stopped, nothing is served any more

    from mlflow.tracking._tracking_service import utils as tracking_utils

    monkeypatch.setattr(handlers, "_tracking_store", None, raising=False)  # this test's database
    monkeypatch.setattr(handlers, "_model_registry_store", None, raising=False)
    monkeypatch.setattr(tracking_utils, "_tracking_uri", tracking_utils._tracking_uri)
    # Open the server's stores now: opening them points this process's MLflow default (and
    # MLFLOW_TRACKING_URI) at the server's database, so the client URI must be set after.
    handlers._get_tracking_store()
    handlers._get_model_registry_store()
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=OneRequestPerConnection)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.uri = f"http://127.0.0.1:{server.server_port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    stopped = threading.Event()

    def stop() -> None:
        if not stopped.is_set():
            stopped.set()
            server.shutdown()
            server.server_close()
            thread.join(10)

    server.stop = stop
    try:
        yield server
    finally:
        stop()


def test_mlflow_server_stopped_mid_stage_fails_the_task_with_one_clear_error(
        live_mlflow: object, caplog: pytest.LogCaptureFixture) -> None:
    parent = tracking.start_parent_run("faults")
    timings: dict[str, float] = {}

    def body(params: Params, tracker: tracking.Tracker) -> dict:
        tracker.log_metrics({"loss": 1.0}, step=1)  # the server is up: this lands
        live_mlflow.stop()  # the server dies mid-stage
        timings["stopped"] = time.perf_counter()
        tracker.log_metrics({"loss": 0.5}, step=2)
        return {}

    with caplog.at_level(logging.ERROR, logger="gandistill"), pytest.raises(SystemExit) as exit_info:
        entry.run_stage("train_gan", Params().to_json(), parent, body)
    elapsed = time.perf_counter() - timings["stopped"]
    logged = [(r.name, r.levelname, r.getMessage()[:300]) for r in caplog.records if r.levelno >= logging.WARNING]
    assert exit_info.value.code == 5, logged
    # The console shows gandistill's records (gandistill.console.forward_warnings): one error there. MLflow's
    # and urllib3's own records (a background thread's, timing-dependent) go to the log file only.
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("gandistill")]
    assert len(errors) == 1, logged
    assert live_mlflow.uri in errors[0] and "unreachable" in errors[0] and "MLFLOW_TRACKING_URI" in errors[0]
    # Fast = it gave up after the bounded retries (a behaviour, not a stopwatch on a shared machine).
    retries = [r for r in caplog.records if r.name.startswith("urllib3") and "Retrying" in r.getMessage()
               and "log-batch" in r.getMessage()]
    assert len(retries) <= int(os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES",
                                              tracking.HTTP_DEFAULTS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]))
    print(f"clear error {elapsed:.1f} s after the MLflow server stopped")
