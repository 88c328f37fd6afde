"""tracking.pipeline_parent: how the stages of a submitted run (no parent run id) share one
MLflow parent run, found by the KFP run id every pod reads from its `pipeline/runid` label.
Real MLflow (the sqlite store of the test's tmp folder); the whole pipeline against the real
MLflow server is in tests/integration/test_mlflow_server.py."""

from __future__ import annotations

import pytest

from gandistill import stage_records, tracking


def _tagged(kfp_run_id: str) -> list:
    c = tracking.client()
    return c.search_runs([tracking.ensure_experiment(c)], filter_string=f"tags.`{tracking.TAG_KFP_RUN}` = "
                                                                       f"'{kfp_run_id}'")


def test_a_given_parent_or_no_kfp_run_id_creates_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(tracking.KFP_RUN_ID_ENV, raising=False)
    assert tracking.pipeline_parent("") == ""  # a stage run on its own stays untracked
    monkeypatch.setenv(tracking.KFP_RUN_ID_ENV, "0c9f-run")
    assert tracking.pipeline_parent("given-id") == "given-id"  # gandistill run --local names its parent
    assert _tagged("0c9f-run") == []


def test_stages_of_one_kfp_run_share_one_parent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(tracking.KFP_RUN_ID_ENV, "5d1e2f3a-run-a")
    first = tracking.pipeline_parent("", {"gandistill.method": "gan"})
    assert first and tracking.pipeline_parent("") == first  # the next stage finds it
    (run,) = _tagged("5d1e2f3a-run-a")
    assert run.info.run_id == first and run.data.tags["gandistill.method"] == "gan"
    assert run.info.run_name == "kfp-5d1e2f3a-run-a"
    monkeypatch.setenv(tracking.KFP_RUN_ID_ENV, "5d1e2f3a-run-b")  # another KFP run: its own parent
    assert tracking.pipeline_parent("") not in ("", first)


def test_without_a_tracking_server_configured_stages_stay_untracked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(tracking.KFP_RUN_ID_ENV, "run-c")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking.pipeline_parent("") == ""


def test_a_malformed_kfp_run_id_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(tracking.KFP_RUN_ID_ENV, "x' OR 1=1")
    with pytest.raises(tracking.TrackingError, match="KFP_RUN_ID=.* is not a KFP run id"):
        tracking.pipeline_parent("")


def test_two_stages_creating_the_parent_at_once_both_keep_the_earliest(monkeypatch: pytest.MonkeyPatch) -> None:
    """Another pod creates its parent between this stage's search and its create (the race is
    forced by running the other pod's create inside the first search; MLflow is real)."""
    monkeypatch.setenv(tracking.KFP_RUN_ID_ENV, "run-race")
    search = tracking._runs_tagged
    other: list[str] = []

    def search_then_other_pod_creates(c, experiment_id, kfp_run_id):
        found = search(c, experiment_id, kfp_run_id)
        if not other:
            earlier = found[0].info.start_time - 1000 if found else 1
            other.append(c.create_run(experiment_id, start_time=earlier,
                                      tags={tracking.TAG_KFP_RUN: kfp_run_id}).info.run_id)
        return found

    monkeypatch.setattr(tracking, "_runs_tagged", search_then_other_pod_creates)
    assert tracking.pipeline_parent("") == other[0]
    monkeypatch.setattr(tracking, "_runs_tagged", search)
    assert [r.info.run_id for r in _tagged("run-race")] == other  # this stage's own run was deleted


def test_a_failed_stage_fails_the_submitted_run_s_parent_and_its_retry_reopens_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A submitted run's parent is closed by promote; when a stage fails first, promote never
    runs — the failing stage marks the parent FAILED instead of leaving it RUNNING forever, and
    KFP's retry of that stage (same KFP run id) sets it RUNNING again."""
    from gandistill.config import Params
    from gandistill.errors import DataError
    from gandistill.stages import entry

    monkeypatch.setenv(tracking.KFP_RUN_ID_ENV, "run-fails-then-retries")
    params_json = Params().to_json()

    def broken(params, tracker):
        raise DataError("train split unreadable")

    with pytest.raises(SystemExit):
        entry.run_stage("train_teacher", params_json, "", broken)
    (parent,) = _tagged("run-fails-then-retries")
    assert parent.info.status == "FAILED"

    entry.run_stage("train_teacher", params_json, "", lambda params, tracker: {"test_acc": 0.9})  # the retry
    (parent,) = _tagged("run-fails-then-retries")
    assert parent.info.status == "RUNNING"
    last = next(name for name, stage in stage_records.STAGES.items() if stage.closes_run)
    entry.run_stage(last, params_json, "", lambda params, tracker: {})
    (parent,) = _tagged("run-fails-then-retries")
    assert parent.info.status == "FINISHED"


def test_a_local_run_s_own_parent_is_left_to_the_local_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    """`gandistill run --local` names its parent and closes it itself (FAILED or FINISHED):
    a failing stage does not touch it."""
    from gandistill.config import Params
    from gandistill.errors import DataError
    from gandistill.stages import entry

    parent = tracking.start_parent_run("local-run")

    def broken(params, tracker):
        raise DataError("bad")

    with pytest.raises(SystemExit):
        entry.run_stage("train_teacher", Params().to_json(), parent, broken)
    assert tracking.client().get_run(parent).info.status == "RUNNING"


def test_a_submitted_run_s_parent_records_the_params_its_stages_received(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a cluster no task holds the whole params (each gets the keys its stage reads): each
    stage adds its keys, knobs applied, to the shared parent — the union is what the run used,
    with the same values a local run's parent records. A baseline's own method is not the run's."""
    from gandistill import stage_params
    from gandistill.config import Params
    from gandistill.stages import entry

    monkeypatch.setenv(tracking.KFP_RUN_ID_ENV, "run-with-params")
    params = Params()
    for stage in ("prepare_data", "promote_gate"):
        entry.run_stage(stage, stage_params.stage_json(params, stage), "", lambda p, t: {},
                        overrides={"seed": 7} if stage == "prepare_data" else None)
    entry.run_stage("distill", stage_params.stage_json(params, "distill"), "", lambda p, t: {},
                    overrides={"distill.method": "kd", "seed": 7, "distill.steps": params.distill.steps},
                    run_name="distill_kd")  # a fan-out baseline with the run's typed knobs
    (parent,) = _tagged("run-with-params")
    recorded = parent.data.params
    local = {k: str(v) for k, v in params.flat().items()}
    assert recorded["seed"] == "7"  # the knob, as the stage ran it
    assert recorded["promote.min_accuracy"] == local["promote.min_accuracy"]
    assert recorded["data.source"] == local["data.source"] and recorded["distill.steps"] == local["distill.steps"]
    assert recorded["distill.method"] == params.distill.method  # the run's method, not the baseline's
    assert {k: v for k, v in recorded.items() if k != "seed"}.items() <= local.items()
