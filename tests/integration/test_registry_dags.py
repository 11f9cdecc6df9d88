"""Register -> compare -> promote -> rollback and the deferrable sensor, as real DAG runs under dag.test().

Real Airflow 3.3 (SQLite metadata DB) and real MLflow (SQLite store under the test's MLOPS_HOME).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from airflow_mlops.hooks.mlflow import MlflowHook
from tests.dagfiles import load_dag
from tests.integration.hitl import answer_when_waiting
from tests.integration.registry_support import make_versions

pytestmark = pytest.mark.slow
MODEL = "registry_flow_model"


def _runs(hook: MlflowHook, tmp: Path, metrics: list[dict[str, float]]) -> list[str]:
    """Training runs with a model artifact (registered under a scratch name, so the runs exist as MLflow does it)."""
    client = hook.get_client()
    make_versions(client, tmp, "scratch", metrics)
    return [client.get_model_version("scratch", v).run_id for v in
            sorted((m.version for m in client.search_model_versions("name = 'scratch'")), key=int)]


def _states(run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def test_register_compare_promote_then_rollback(airflow_db: Path, mlops_home: Path, tmp_path: Path) -> None:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    hook = MlflowHook()
    runs = _runs(hook, tmp_path, [{"test_accuracy": 0.90, "test_f1": 0.88}, {"test_accuracy": 0.95, "test_f1": 0.9},
                                  {"test_accuracy": 0.955, "test_f1": 0.7}])
    dag = load_dag("registry_flow")

    # 1. First version, no champion: promoted to challenger; check verdicts and lineage on the version.
    first = dag.test(run_conf={"run_id": runs[0]})
    assert _states(first) == {"model_checks": "success", "register": "success", "compare": "success",
                              "promote": "success"}
    tis = {ti.task_id: ti for ti in first.get_task_instances()}
    registered = tis["register"].xcom_pull(task_ids="register")
    assert registered["checks"] == {"model_checks": True, "data_checks": None}
    decision = tis["compare"].xcom_pull(task_ids="compare")
    assert decision["promote"] and decision["champion_version"] is None
    assert "no champion yet: policy promotes the first version that passes" in decision["reasons"]
    tags = hook.get_client().get_model_version(MODEL, "1").tags
    assert tags["mlops.check.model_checks"] == "passed" and tags["mlops.check.data_checks"] == "missing"
    assert tags["mlops.decision"] == "promote" and tags["mlops.training_run_id"] == runs[0]
    assert tags["mlops.airflow.dag_id"] == "registry_flow" and tags["team"] == "ml-platform"
    assert tags["mlops.airflow.try_number"] == "1" and tags["mlops.airflow.task_id"] == "register"
    # A second try of the same register task reuses the version (identity: dag/run/task), never a new one.
    again = hook.register_model_version(MODEL, f"runs:/{runs[0]}/model", runs[0],
                                        {**registered["tags"], "mlops.airflow.try_number": "2"})
    assert str(again.version) == "1" and len(hook.get_client().search_model_versions(f"name = '{MODEL}'")) == 1
    assert hook.get_client().get_model_version(MODEL, "1").tags["mlops.airflow.try_number"] == "2"
    assert hook.get_alias_version(MODEL, "challenger") == "1"
    with create_session() as session:
        asset = session.query(AssetModel).filter(AssetModel.uri == f"x-mlflow://{MODEL}@challenger").one()
        events = session.query(AssetEvent).filter(AssetEvent.asset_id == asset.id).all()
        assert [e.extra.get("version") for e in events] == ["1"]
        assert events[0].extra["model_uri"] == f"models:/{MODEL}@challenger"

    # 2. Make v1 the champion; a better v2 with failed checks is rejected, and promote is skipped.
    hook.move_alias(MODEL, "champion", "1", expected_version=None, actor="test")
    rejected = dag.test(run_conf={"run_id": runs[1], "checks_pass": False})
    assert _states(rejected)["promote"] == "skipped"
    reasons = rejected.get_task_instance("compare").xcom_pull(task_ids="compare")["reasons"]
    assert reasons[0] == "required check model_checks failed"
    assert hook.get_client().get_model_version(MODEL, "2").tags["mlops.check.model_checks.failed_checks"] == \
        "WeakSegments"

    # 3. v3: better accuracy but f1 regresses beyond the guard -> reject, with the guard as reason.
    guarded = dag.test(run_conf={"run_id": runs[2], "checks_pass": True})
    reasons = guarded.get_task_instance("compare").xcom_pull(task_ids="compare")["reasons"]
    assert reasons[0].startswith("guard test_f1 0.7 vs champion 0.88: regression +0.18")
    assert hook.get_alias_version(MODEL, "challenger") == "1"

    # 4. v2 again with passing checks beats the champion by 0.05 >= 0.01: challenger moves 1 -> 2.
    promoted = dag.test(run_conf={"run_id": runs[1], "checks_pass": True})
    assert _states(promoted)["promote"] == "success"
    assert hook.get_alias_version(MODEL, "challenger") == "4"
    assert hook.get_alias_version(MODEL, "challenger_previous") == "1"

    # 5. Roll the champion back after a second promotion.
    hook.move_alias(MODEL, "champion", "4", expected_version="1", actor="rollout")
    rollback = load_dag("registry_rollback").test()
    assert _states(rollback) == {"rollback": "success"}
    assert hook.get_alias_version(MODEL, "champion") == "1"
    assert hook.get_client().get_model_version(MODEL, "1").tags["mlops.alias.champion.reason"] == "canary error rate"
    assert [h["to"] for h in hook.alias_history(MODEL, "champion")] == ["1", "4", "1"]


def test_promotion_fails_when_the_alias_moved_since_compare(airflow_db: Path, mlops_home: Path,
                                                            tmp_path: Path) -> None:
    """compare reads challenger unset; someone sets it before promote: promote fails and moves nothing."""
    hook = MlflowHook()
    runs = _runs(hook, tmp_path, [{"test_accuracy": 0.9, "test_f1": 0.9}])
    dag = load_dag("registry_flow")
    make_versions(hook.get_client(), tmp_path, MODEL, [{"test_accuracy": 0.1, "test_f1": 0.1}])  # version 1
    original = MlflowHook.move_alias

    def interfere(self, name, alias, version, **kw):
        # A concurrent writer (another DAG run) moves the alias between this run's compare and its promote.
        original(MlflowHook(), name, alias, "1", expected_version=None, actor="other run")
        return original(self, name, alias, version, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(MlflowHook, "move_alias", interfere)
        run = dag.test(run_conf={"run_id": runs[0]})
    assert _states(run)["promote"] == "failed"
    assert hook.get_alias_version(MODEL, "challenger") == "1"
    assert [h["by"] for h in hook.alias_history(MODEL, "challenger")] == ["other run"]


def test_deferrable_sensor_waits_for_promoted_champion(airflow_db: Path, mlops_home: Path, tmp_path: Path) -> None:
    hook = MlflowHook()
    client = hook.get_client()
    make_versions(client, tmp_path, "sensor_model", [{"acc": 0.5}])

    def promote_later() -> None:
        time.sleep(1.5)
        make_versions(MlflowHook().get_client(), tmp_path, "sensor_model", [{"acc": 0.6}])
        MlflowHook().get_client().set_model_version_tag("sensor_model", "2", "mlops.decision", "promote")
        MlflowHook().move_alias("sensor_model", "champion", "2", expected_version=None)

    writer = threading.Thread(target=promote_later)
    writer.start()
    run = load_dag("registry_sensor").test(run_conf={"newer_than": "1"})
    writer.join()
    assert _states(run) == {"wait_for_champion": "success", "wait_for_new_version": "success"}
    out = run.get_task_instance("wait_for_champion").xcom_pull(task_ids="wait_for_champion")
    assert out == {"model_name": "sensor_model", "alias": "champion", "version": "2"}


def test_sensor_timeout_says_what_it_awaited_and_saw(airflow_db: Path, mlops_home: Path, tmp_path: Path,
                                                     capfd: pytest.CaptureFixture[str]) -> None:
    make_versions(MlflowHook().get_client(), tmp_path, "sensor_model", [{"acc": 0.5}])
    run = load_dag("registry_sensor").test(run_conf={"newer_than": "1"})
    assert _states(run) == {"wait_for_champion": "failed", "wait_for_new_version": "failed"}
    out, err = capfd.readouterr()
    text = out + err
    assert ("waiting for sensor_model@champion on a version newer than v1 tagged {'mlops.decision': 'promote'}; "
            "last seen: sensor_model@champion is unset") in text
    assert "waiting for a version of sensor_model newer than v1; last seen: latest version v1" in text


def test_human_approval_gates_promotion_and_is_audited(airflow_db: Path, mlops_home: Path, tmp_path: Path) -> None:
    """The response goes through the public HITL API's own handler, as the Required Actions UI sends it."""
    hook = MlflowHook()
    make_versions(hook.get_client(), tmp_path, "approval_model", [{"acc": 0.9}])
    answered: list[str] = []
    responder = answer_when_waiting("registry_approval", "approve", "Approve", answered)
    run = load_dag("registry_approval").test()
    responder.join()
    assert answered, "the approval task never waited for input"
    assert _states(run) == {"compare": "success", "approve": "success", "promote": "success"}
    tags = hook.get_client().get_model_version("approval_model", "1").tags
    assert tags["mlops.approved_by"] == "Alice"
    assert "approved by Alice" in tags["mlops.alias.challenger.set_by"]
    assert hook.get_alias_version("approval_model", "challenger") == "1"
