"""Promote: the gate, on a real sqlite MLflow registry in a temporary folder."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import dead_port as held_dead_port
from helpers import fast_params, make_world

from gandistill.config import Params
from gandistill.data.dataset import as_float, load_split
from gandistill.results import write_result
from gandistill.stages import export, promote

# -- the pure gate ----------------------------------------------------------------------------

@pytest.mark.parametrize(("student", "teacher", "champion", "passed", "why"), [
    (0.95, 0.96, None, True, "no champion yet"),
    (0.85, 0.96, None, False, "min_accuracy"),
    (0.91, 0.99, None, False, "max_drop_vs_teacher"),
    (0.95, 0.96, 0.96, False, "worse than the current champion"),
    (0.959, 0.96, 0.96, True, "within"),  # inside champion_epsilon = 0.002
    (float("nan"), 0.96, None, False, "min_accuracy"),
])
def test_gate_decision(student, teacher, champion, passed, why):
    ok, reason = promote.gate_decision(student, teacher, champion, min_accuracy=0.9, max_drop_vs_teacher=0.05,
                                       champion_epsilon=0.002)
    assert ok is passed and why in reason


def test_gate_names_every_failure():
    ok, reason = promote.gate_decision(0.5, 0.99, 0.98, 0.9, 0.05, 0.002)
    assert not ok and reason.count(";") == 2


# -- against a real registry -------------------------------------------------------------------

@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A tiny world, one export, and one sqlite registry shared by this module's tests (each
    test uses its own model name): creating an MLflow database costs ~4 s, a cold first
    torch.export another ~10 s — paid once here, by a warm-up promotion."""
    root = tmp_path_factory.mktemp("promote")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", uri)
    mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
    world = make_world(root)
    write_result(root / "eval0", {"metrics": {"student_test_acc": 0.97, "teacher_test_acc": 0.99}})
    export.run(fast_params(), world["data"], world["student"], root / "eval0", root / "exported", None,
               world["generator"])
    world |= {"exported": root / "exported", "root": root, "uri": uri}
    promote.run(params_for("m-warmup"), world["exported"], root / "eval0", "warm-up", None)
    mp.undo()
    return world


@pytest.fixture(autouse=True)
def _shared_registry(request, monkeypatch):
    """Point MLflow at the module's registry (after conftest's per-test isolation)."""
    if "registry" in request.fixturenames:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", request.getfixturevalue("registry")["uri"])


def evaluation(root, name: str, student: float, teacher: float = 1.0):
    folder = root / name
    write_result(folder, {"metrics": {"student_test_acc": student, "teacher_test_acc": teacher},
                          "data_version": {"dvc_md5": "0123abcd.dir"}, "student": {"method": "gan"}})
    return folder


def params_for(model_name: str, **promote_overrides) -> Params:
    """The gate thresholds these tests reason about, stated here rather than taken from the
    (changeable) defaults."""
    params = fast_params()
    gate = {"min_accuracy": 0.9, "max_drop_vs_teacher": 0.05, "champion_epsilon": 0.002}
    params.promote = params.promote.model_copy(update={"model_name": model_name, **gate, **promote_overrides})
    return params


def test_pass_becomes_champion_and_reproduces_evaluated_accuracy(registry):
    import mlflow

    from gandistill.evaluation.predict import predict_logits
    from gandistill.model_files import load_classifier

    test = load_split(registry["data"], "test")
    x, y = torch.from_numpy(test.x), torch.from_numpy(test.y)
    logits = predict_logits(load_classifier(registry["student"]), x)
    evaluated_acc = float((logits.argmax(1) == y).float().mean())
    ev = evaluation(registry["root"], "eval_pass", evaluated_acc)
    result = promote.run(params_for("m-pass"), registry["exported"], ev, "run-pass", None)
    assert result["alias"] == "champion" and result["decision"] == "champion"
    assert result["version"] == "1" and result["model_uri"] == "models:/m-pass/1"

    client = mlflow.MlflowClient()
    version = client.get_model_version_by_alias("m-pass", "champion")
    assert version.tags["gandistill.pipeline_run_id"] == "run-pass"
    assert version.tags["data_dvc_hash"] == "0123abcd.dir" and version.tags["method"] == "gan"
    assert float(version.tags["teacher_test_acc"]) == 1.0
    loaded = mlflow.pytorch.load_model("models:/m-pass@champion")
    with torch.inference_mode():
        acc = float((loaded(as_float(x)).argmax(1) == y).float().mean())
    assert acc == pytest.approx(evaluated_acc)
    signature = mlflow.models.get_model_info("models:/m-pass@champion").signature
    assert signature is not None
    assert list(signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 1, 16, 16]
    # the evaluation's numbers are linked to the logged model (MLflow 3 model_id): its page lists them
    logged = client.get_logged_model(mlflow.models.get_model_info("models:/m-pass@champion").model_id)
    linked = {m.key: m.value for m in logged.metrics or []}
    assert linked == {"student_test_acc": pytest.approx(evaluated_acc), "teacher_test_acc": 1.0}


def test_registry_version_carries_the_int8_model_with_its_numbers(registry, tmp_path):
    """The INT8 ONNX model travels inside the registered model (extra_files), its numbers as
    version tags, and the copy downloaded from the registry reproduces the tagged accuracy."""
    import mlflow
    import onnxruntime as ort

    ev = evaluation(registry["root"], "eval_int8", 0.97)
    result = promote.run(params_for("m-int8"), registry["exported"], ev, "run-int8", None)
    version = mlflow.MlflowClient().get_model_version("m-int8", result["version"])
    assert version.tags["int8_artifact"] == "extra_files/model.int8.onnx"
    assert version.tags["int8_calibration"] == "generated"
    local = mlflow.artifacts.download_artifacts(f"models:/m-int8/{result['version']}", dst_path=str(tmp_path))
    int8 = next(Path(local).rglob("model.int8.onnx"))
    assert int8.parent.name == "extra_files"
    assert int8.read_bytes() == (registry["exported"] / "model.int8.onnx").read_bytes()
    assert next(Path(local).rglob("model_card.md")).read_text().count("student INT8") >= 1
    session = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
    test = load_split(registry["data"], "test")
    logits = session.run(None, {session.get_inputs()[0].name: test.x.astype(np.float32) / 255.0})[0]
    assert float((logits.argmax(1) == test.y).mean()) == pytest.approx(float(version.tags["int8_test_acc"]), abs=1e-6)
    assert float(version.tags["int8_agreement"]) > 0.9


def test_fail_becomes_challenger_with_reason(registry):
    import mlflow

    ev = evaluation(registry["root"], "eval_low", 0.80)
    result = promote.run(params_for("m-fail"), registry["exported"], ev, "run-low", None)
    assert result["alias"] == "challenger" and "min_accuracy" in result["reason"]
    client = mlflow.MlflowClient()
    version = client.get_model_version_by_alias("m-fail", "challenger")
    assert "min_accuracy" in version.tags["gandistill.reason"]
    assert version.tags["gandistill.decision"] == "challenger"
    # the only alias is challenger: a failed gate never leaves (or creates) a champion
    assert client.get_registered_model("m-fail").aliases == {"challenger": version.version}


def test_worse_than_champion_is_challenger_and_champion_history_is_kept(registry):
    import mlflow

    root, exported = registry["root"], registry["exported"]
    first = promote.run(params_for("m-champ"), exported, evaluation(root, "e1", 0.97), "run-1", None)
    worse = promote.run(params_for("m-champ"), exported, evaluation(root, "e2", 0.95), "run-2", None)
    better = promote.run(params_for("m-champ"), exported, evaluation(root, "e3", 0.98), "run-3", None)
    assert first["alias"] == "champion"
    assert worse["alias"] == "challenger" and "worse than the current champion" in worse["reason"]
    assert better["alias"] == "champion" and better["previous_champion"] == first["version"]
    client = mlflow.MlflowClient()
    assert str(client.get_model_version_by_alias("m-champ", "champion").version) == better["version"]
    assert {str(v.version) for v in client.search_model_versions("name = 'm-champ'")} == {"1", "2", "3"}


def test_rerun_for_the_same_pipeline_run_creates_no_duplicate(registry):
    import mlflow

    ev = evaluation(registry["root"], "eval_rerun", 0.97)
    first = promote.run(params_for("m-rerun"), registry["exported"], ev, "run-same", None)
    again = promote.run(params_for("m-rerun"), registry["exported"], ev, "run-same", None)
    assert again["version"] == first["version"] and again["reused_version"] and again["alias"] == "champion"
    versions = mlflow.MlflowClient().search_model_versions("name = 'm-rerun'")
    assert len(versions) == 1


def test_gate_step_reads_the_champion_without_registering(registry):
    import mlflow

    first = evaluation(registry["root"], "g1", 0.97)
    promote.run(params_for("m-gate"), registry["exported"], first, "g-1", None)
    passed, reason = promote.gate(params_for("m-gate"), evaluation(registry["root"], "g2", 0.90))
    assert not passed and "champion" in reason
    assert len(mlflow.MlflowClient().search_model_versions("name = 'm-gate'")) == 1


@pytest.mark.parametrize("locked", [True, False], ids=["sqlite-lock", "lock-free-recheck"])
def test_concurrent_promotions_end_with_exactly_one_champion(registry, monkeypatch, locked):
    import contextlib

    import mlflow

    if not locked:  # what a remote registry gets: no shared lock, only the re-check after the alias write
        monkeypatch.setattr(promote, "registry_lock", lambda: contextlib.nullcontext(False))
    name = f"m-race-{locked}"
    root, exported = registry["root"], registry["exported"]
    accs = {"race-a": 0.96, "race-b": 0.97}
    results, errors = {}, []
    start = threading.Barrier(2)

    def promote_one(run_id: str) -> None:
        try:
            start.wait()
            results[run_id] = promote.run(params_for(name), exported, evaluation(root, f"{name}-{run_id}",
                                                                                 accs[run_id]),
                                          run_id, None, settle_s=0.3)
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=promote_one, args=(run_id,)) for run_id in accs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    champion = mlflow.MlflowClient().get_model_version_by_alias(name, "champion")
    # Exactly one alias holder, and it is the better candidate, whatever the interleaving.
    assert champion.tags["gandistill.pipeline_run_id"] == "race-b"
    assert results["race-b"]["alias"] == "champion"
    assert np.isclose(float(champion.tags["student_test_acc"]), 0.97)
    if locked and results["race-a"]["alias"] == "champion":
        # serialised: a was champion first, then b replaced it knowingly (no lost update)
        assert results["race-b"]["previous_champion"] == results["race-a"]["version"]


# -- "not found" vs an outage -------------------------------------------------------------------

def test_no_model_and_no_alias_read_as_no_champion(registry):
    """A real registry that simply lacks the model, or the alias, answers "no champion"."""
    from gandistill.tracking import client as mlflow_client

    client = mlflow_client()
    assert promote._champion(client, "m-never-registered") is None
    assert promote._existing_version(client, "m-never-registered", "run-x") is None
    promote.run(params_for("m-low-only"), registry["exported"], evaluation(registry["root"], "lo", 0.5), "r", None)
    assert set(client.get_registered_model("m-low-only").aliases) == {"challenger"}
    assert promote._champion(client, "m-low-only") is None


@pytest.fixture
def dead_port():
    """A port this test holds bound but never listens on (helpers.dead_port)."""
    with held_dead_port() as port:
        yield port


def test_registry_outage_is_a_service_error_not_no_champion(registry, monkeypatch, dead_port):
    """The registry's server is down (a real MLflow client against a port nobody listens on):
    the gate and promote must fail with ServiceError, never read it as "no champion"."""
    from gandistill.errors import ServiceError

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{dead_port}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    ev = evaluation(registry["root"], "outage", 0.97)
    with pytest.raises(ServiceError, match="failed while reading @champion") as err:
        promote.gate(params_for("m-outage"), ev)
    assert "127.0.0.1" in str(err.value)
    with pytest.raises(ServiceError, match="MLflow registry"):
        promote.run(params_for("m-outage"), registry["exported"], ev, "run-outage", None)


def test_broken_registry_database_is_a_service_error(registry, monkeypatch, tmp_path):
    """A sqlite registry file that is not a database: a real failure, not "no champion"."""
    from gandistill.errors import ServiceError

    broken = tmp_path / "broken.db"
    broken.write_bytes(b"this is not a sqlite database" * 100)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{broken}")
    ev = evaluation(registry["root"], "broken", 0.97)
    for attempt in (lambda: promote.gate(params_for("m-broken"), ev),
                    lambda: promote.run(params_for("m-broken"), registry["exported"], ev, "run-broken", None)):
        with pytest.raises(ServiceError, match="file is not a database"):
            attempt()
