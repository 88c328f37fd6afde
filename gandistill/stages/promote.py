"""promote: register the exported student in the MLflow model registry; a gate picks its alias.

Gate (pure function `gate_decision`): the candidate becomes `@champion` only if

    acc_student ≥ promote.min_accuracy,
    acc_teacher − acc_student ≤ promote.max_drop_vs_teacher, and
    acc_student ≥ acc_champion − promote.champion_epsilon   (when a champion exists);

otherwise it becomes `@challenger` with a tag saying why. Previous champions stay as
versions (an alias moves, nothing is deleted), so rolling back is one alias change:
`gandistill promote --version N` (gandistill.registry).

What a version carries: the PyTorch student (the registered model, loadable with
`mlflow.pytorch.load_model`) and, inside the same logged model under `extra_files/`, the INT8
ONNX model and the model card — so `models:/NAME/N` downloads both deployable formats — plus
tags with the INT8 model's numbers (test accuracy, agreement with FP32, accuracy drop, speed-ups
vs the teacher) next to the FP32 ones.

Idempotence: every version carries the tag `gandistill.pipeline_run_id`; re-running promote
for the same pipeline run finds that version and re-applies the gate instead of logging a
duplicate.

Concurrency (two pipelines promoting at once must end with exactly one, the right, champion):
an alias names one version, so "two champions" cannot happen — the danger is a lost update,
where B's gate compared against the old champion while A was being promoted, and B's
alias write silently replaces a better A. Two layers:
1. with the embedded sqlite registry, the read-gate-write section runs under an exclusive
   `flock` on a lock file next to the database, so promotions are serialised;
2. with any registry (e.g. a remote server, where no shared lock exists), after setting the
   alias the promoter re-reads it; if another version holds it, the two are ranked by
   (test accuracy, version number) — a strict total order every promoter agrees on — and the
   better one re-claims the alias (bounded retries), the worse one records itself as
   challenger. Both promoters converge on the same winner whatever the interleaving.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gandistill import stage_params
from gandistill.config import Params
from gandistill.errors import DataError, ExportError, ServiceError
from gandistill.fingerprints import file_digest
from gandistill.model_files import MODEL_FILE, load_classifier
from gandistill.quantization import INT8_FILE
from gandistill.registry import TAG_DECISION, TAG_REASON, registry_lock
from gandistill.results import read_result
from gandistill.tracking import NullTracker, Tracker, ensure_experiment, redact, tracking_uri
from gandistill.tracking import client as mlflow_client

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"
TAG_RUN = "gandistill.pipeline_run_id"
TAG_ACC = "student_test_acc"
CLAIM_ROUNDS = 5
# torch.export (MLflow's pt2 format) keeps global state: two threads exporting at once break
# it. Serialise within a process; separate processes (real pipelines) are unaffected.
_EXPORT_LOCK = threading.Lock()


def gate_decision(student_acc: float, teacher_acc: float | None, champion_acc: float | None,
                  min_accuracy: float, max_drop_vs_teacher: float,
                  champion_epsilon: float) -> tuple[bool, str]:
    """(passed, reason) of the promotion gate; every failed condition is named in the reason."""
    failures = []
    if not student_acc >= min_accuracy:  # `not ≥` also rejects NaN
        failures.append(f"test accuracy {student_acc:.4f} < promote.min_accuracy {min_accuracy:.4f}")
    if teacher_acc is not None and teacher_acc - student_acc > max_drop_vs_teacher:
        failures.append(f"drop vs teacher {teacher_acc - student_acc:.4f} (teacher {teacher_acc:.4f}) > "
                        f"promote.max_drop_vs_teacher {max_drop_vs_teacher:.4f}")
    if champion_acc is not None and student_acc < champion_acc - champion_epsilon:
        failures.append(f"worse than the current champion: {student_acc:.4f} < {champion_acc:.4f} − "
                        f"promote.champion_epsilon {champion_epsilon:.4f}")
    if failures:
        return False, "; ".join(failures)
    against = (f" and within {champion_epsilon:.4f} of the champion ({champion_acc:.4f})"
               if champion_acc is not None else " (no champion yet)")
    return True, f"test accuracy {student_acc:.4f} ≥ {min_accuracy:.4f}, drop vs teacher in limit{against}"


def _accuracies(evaluation_dir: str | Path) -> tuple[float, float | None, dict[str, Any]]:
    evaluation = read_result(evaluation_dir)
    metrics = evaluation.get("metrics") or {}
    if "student_test_acc" not in metrics:
        raise DataError(f"{evaluation_dir}/result.json has no metrics.student_test_acc: promote needs "
                        "the output of the evaluate stage")
    return float(metrics["student_test_acc"]), metrics.get("teacher_test_acc"), evaluation


def _not_found(exc: Exception) -> bool:
    """MLflow's answer for a registered model or version that does not exist (and only that)."""
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException) and exc.error_code == "RESOURCE_DOES_NOT_EXIST"


def _registry_failed(exc: Exception, doing: str) -> ServiceError:
    return ServiceError(f"MLflow registry at {tracking_uri()} failed while {doing}: {redact(str(exc))[:800]}. "
                        "Check MLFLOW_TRACKING_URI / the server, then re-run (promote is idempotent)")


def _client() -> Any:
    """The registry client; a registry that cannot even be opened is a ServiceError."""
    try:
        return mlflow_client()
    except Exception as exc:
        raise _registry_failed(exc, "opening the registry") from exc


def _champion(client: Any, name: str) -> Any | None:
    """The version holding @champion, or None when the model or the alias does not exist yet.

    Any other failure (server down, permissions, a broken database) raises ServiceError: an
    outage must never read as "no champion", which would let a worse model take the alias."""
    try:
        aliases = client.get_registered_model(name).aliases
        return client.get_model_version(name, aliases[CHAMPION]) if CHAMPION in aliases else None
    except Exception as exc:
        if _not_found(exc):
            return None
        raise _registry_failed(exc, f"reading @{CHAMPION} of {name}") from exc


def _acc_of(version: Any) -> float:
    return float(version.tags.get(TAG_ACC, "nan"))


def gate(params: Params, evaluation_dir: str | Path, tracker: Tracker | None = None) -> tuple[bool, str]:
    """The gate as its own read-only step (for a pipeline that branches with dsl.If): reads the
    current champion's accuracy from the registry but registers nothing."""
    params = stage_params.view(params, "promote_gate")  # only what it reads (its stage record): its cache key
    student_acc, teacher_acc, _ = _accuracies(evaluation_dir)
    pp = params.promote
    champion = _champion(_client(), pp.model_name)
    passed, reason = gate_decision(student_acc, teacher_acc, _acc_of(champion) if champion else None,
                                   pp.min_accuracy, pp.max_drop_vs_teacher, pp.champion_epsilon)
    (tracker or NullTracker()).set_tags({"gate.passed": passed, "gate.reason": reason})
    return passed, reason


def run_gate(params: Params, evaluation_dir: str | Path, tracker: Tracker | None = None) -> dict[str, Any]:
    """The promote_gate stage: `gate` as a stage result ({"passed", "reason"})."""
    passed, reason = gate(params, evaluation_dir, tracker)
    return {"passed": passed, "reason": reason}


def _existing_version(client: Any, name: str, pipeline_run_id: str) -> Any | None:
    """The version this pipeline run registered before (a re-run), or None. A model that is not
    registered yet simply has no versions; a failing search raises ServiceError, since "none
    found" would register a duplicate."""
    try:
        found = client.search_model_versions(f"name = '{name}' and tags.`{TAG_RUN}` = '{pipeline_run_id}'")
    except Exception as exc:
        raise _registry_failed(exc, f"looking for the version of pipeline run {pipeline_run_id}") from exc
    return min(found, key=lambda v: int(v.version)) if found else None


def _log_and_register(client: Any, params: Params, export_dir: Path, tags: dict[str, str],
                      tracker: Tracker, scores: dict[str, float]) -> Any:
    """Log the student with signature + input example to a run, link the evaluation's `scores`
    to the logged model (MLflow 3 `model_id`: the model's page lists them) and register it as a
    new version."""
    import mlflow

    student = load_classifier(export_dir).eval()
    example = np.load(export_dir / "example_input.npy")
    run_id = tracker.run_id or client.create_run(ensure_experiment(client), run_name="promote").info.run_id
    mlflow.set_tracking_uri(tracking_uri())
    with _EXPORT_LOCK, mlflow.start_run(run_id=run_id):
        carried = [str(export_dir / name) for name in (INT8_FILE, "model_card.md") if (export_dir / name).is_file()]
        info = mlflow.pytorch.log_model(
            student, name="student", input_example=example[: max(2, min(4, len(example)))],
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}"],
            metadata={k: v for k, v in tags.items() if not k.startswith("gandistill.")},
            extra_files=carried or None)
        if scores:
            mlflow.log_metrics(scores, model_id=info.model_id)
        for extra in ("model.onnx", "model.pt2", "model_card.md"):
            if (export_dir / extra).is_file():
                mlflow.log_artifact(str(export_dir / extra), "export")
    version = mlflow.register_model(info.model_uri, params.promote.model_name, tags=tags)
    card = export_dir / "model_card.md"
    if card.is_file():
        client.update_model_version(params.promote.model_name, version.version,
                                    description=card.read_text(encoding="utf-8")[:5000])
    return client.get_model_version(params.promote.model_name, version.version)


def _scores(evaluation: dict[str, Any]) -> dict[str, float]:
    """The evaluate stage's scalar metrics (accuracies, agreement, calibration, speed, size)."""
    return {key: float(value) for key, value in (evaluation.get("metrics") or {}).items()
            if isinstance(value, int | float) and not isinstance(value, bool)}


def int8_tags(exported: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, str]:
    """The INT8 model's numbers as version tags (empty when export shipped no INT8 model)."""
    int8 = exported.get("int8") or {}
    if not int8:
        return {}
    metrics = evaluation.get("metrics") or {}
    tags = {"int8_artifact": f"extra_files/{INT8_FILE}", "int8_calibration": str(int8.get("calibration", "")),
            "int8_test_acc": f"{int8['int8_test_acc']:.6f}", "int8_agreement": f"{int8['int8_agreement']:.6f}",
            "int8_acc_drop": f"{int8['int8_acc_drop']:.6f}"}
    for key in ("latency_p50_ms_student_int8_onnxruntime", "speedup_latency_int8_vs_teacher",
                "speedup_throughput_b256_int8_vs_teacher", "speedup_throughput_b256_int8_vs_student"):
        if key in metrics:
            tags[key] = f"{metrics[key]:.4g}"
    return tags


def verify_registered(name: str, version: str, export_dir: Path, atol: float) -> float:
    """Load models:/name/version back and check it reproduces the exported logits."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    with _EXPORT_LOCK:
        loaded = mlflow.pytorch.load_model(f"models:/{name}/{version}")
    example = torch.from_numpy(np.load(export_dir / "example_input.npy"))
    expected = np.load(export_dir / "example_logits.npy")
    with torch.inference_mode():
        got = loaded(example).numpy()
    diff = float(np.abs(got - expected).max())
    if diff > atol or not (got.argmax(1) == expected.argmax(1)).all():
        raise ExportError(f"registered model {name} v{version} does not reproduce the exported student "
                          f"(max |Δlogit| {diff:.3g} > export.parity_atol {atol:g}); the version is left "
                          "without an alias — inspect it in the MLflow UI")
    return diff


def _claim_champion(client: Any, name: str, version: Any, settle_s: float) -> tuple[bool, str]:
    """Set @champion on `version` and make sure it stuck; resolve a concurrent claim by rank."""
    mine = (_acc_of(version), int(version.version))
    for _ in range(CLAIM_ROUNDS):
        client.set_registered_model_alias(name, CHAMPION, version.version)
        time.sleep(settle_s)  # let a racing promoter's write land before we look
        holder = _champion(client, name)
        if holder is None or holder.version == version.version:
            return True, ""
        theirs = (_acc_of(holder), int(holder.version))
        if not mine > theirs:  # NaN compares False: a version without accuracy never wins
            return False, (f"lost a concurrent promotion to version {holder.version} "
                           f"(test accuracy {theirs[0]:.4f} vs {mine[0]:.4f})")
    raise ServiceError(f"could not settle @{CHAMPION} of {name} after {CLAIM_ROUNDS} rounds: another "
                       "promoter keeps overwriting it; check for a stuck pipeline and re-run promote")


def run(params: Params, exported_dir: str | Path, evaluation_dir: str | Path, parent_run_id: str,
        tracker: Tracker | None = None, settle_s: float = 0.5) -> dict[str, Any]:
    """Register the student exported in `exported_dir` (once per pipeline run: `parent_run_id`, the
    run's MLflow parent, tags the version and finds it again on a re-run) and set its alias by the gate.

    Returns {"version", "alias", "decision", "reason", "model_name", "model_uri", ...}.
    """
    tracker = tracker or NullTracker()
    params = stage_params.view(params, "promote")  # only what it reads (its stage record): its cache key
    pp = params.promote
    export_dir = Path(exported_dir)
    if not (export_dir / MODEL_FILE).is_file() or not (export_dir / "example_input.npy").is_file():
        raise DataError(f"{export_dir} lacks {MODEL_FILE} / example_input.npy: promote needs the output of "
                        "the export stage")
    if not parent_run_id:
        # no run id (tracking off): identical exported weights count as the same run, so a
        # re-run still registers nothing twice
        parent_run_id = f"content-{file_digest(export_dir / MODEL_FILE)}"
        log.warning("[promote] no pipeline run id given; tagging the version with %s", parent_run_id)
    student_acc, teacher_acc, evaluation = _accuracies(evaluation_dir)
    exported = read_result(export_dir)
    data_version = evaluation.get("data_version") or exported.get("data_version") or {}
    student_info = (evaluation.get("student") or {}) | (exported.get("student") or {})
    tags = {
        TAG_RUN: parent_run_id, TAG_ACC: f"{student_acc:.6f}",
        "teacher_test_acc": "" if teacher_acc is None else f"{teacher_acc:.6f}",
        "method": student_info.get("method", ""), "arch": student_info.get("arch", ""),
        "data_version": json.dumps(data_version, sort_keys=True)[:4900],
        "data_dvc_hash": next((str(v) for k, v in data_version.items() if "dvc" in k.lower()), ""),
        "git_commit": exported.get("git_commit") or "",
    } | int8_tags(exported, evaluation)
    client = _client()
    try:
        with registry_lock() as locked:
            version = _existing_version(client, pp.model_name, parent_run_id)
            reused = version is not None
            if version is None:
                version = _log_and_register(client, params, export_dir, tags, tracker, _scores(evaluation))
            verify_registered(pp.model_name, version.version, export_dir, params.export.parity_atol)
            champion = _champion(client, pp.model_name)
            if champion is not None and champion.version == version.version:
                passed, reason = True, "already the champion (re-run of the same pipeline run)"
            else:
                passed, reason = gate_decision(student_acc, teacher_acc,
                                               _acc_of(champion) if champion is not None else None,
                                               pp.min_accuracy, pp.max_drop_vs_teacher, pp.champion_epsilon)
                if passed:
                    won, why = _claim_champion(client, pp.model_name, version, 0.0 if locked else settle_s)
                    if not won:
                        passed, reason = False, why
            alias = CHAMPION if passed else CHALLENGER
            if not passed:
                client.set_registered_model_alias(pp.model_name, CHALLENGER, version.version)
            previous = "" if champion is None else str(champion.version)
            decision_tags = {TAG_DECISION: alias, TAG_REASON: reason[:4900], "previous_champion": previous}
            for key, value in decision_tags.items():
                client.set_model_version_tag(pp.model_name, version.version, key, value)
    except (DataError, ExportError, ServiceError):
        raise
    except Exception as exc:  # registry unreachable, permission, schema...
        raise ServiceError(f"MLflow registry at {tracking_uri()} failed during promote: {redact(str(exc))[:800]}. "
                           "No version was registered if the upload failed (models are logged before they are "
                           "registered). Check "
                           "MLFLOW_TRACKING_URI / the server, then re-run promote (it is idempotent)"
                           ) from exc

    result = {"version": str(version.version), "alias": alias, "decision": alias, "reason": reason,
              "model_name": pp.model_name, "model_uri": f"models:/{pp.model_name}/{version.version}",
              "alias_uri": f"models:/{pp.model_name}@{alias}", "reused_version": reused,
              "student_test_acc": student_acc, "teacher_test_acc": teacher_acc,
              "previous_champion": None if champion is None else str(champion.version)}
    tracker.set_tags({"promote.decision": alias, "promote.reason": reason,
                      "promote.version": version.version})
    tracker.log_metrics({"promoted": 1.0 if passed else 0.0})
    log.info("[promote] %s v%s → @%s: %s", pp.model_name, version.version, alias, reason)
    return result
