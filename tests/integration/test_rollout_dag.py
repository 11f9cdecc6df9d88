"""The reference rollout DAG under dag.test() on the local target: first deployment, a good canary resolved from
the challenger alias, a bad candidate rolled back. Real MLflow scoring servers, the real router, real traffic.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.dagfiles import load_dag
from tests.integration.hitl import answer_when_waiting
from tests.integration.test_rollout_local import Traffic

pytestmark = pytest.mark.slow
MODEL = "breast_cancer_classifier"  # the reference DAG's model (its schedule's Asset names it)
FAST_BLUE_GREEN = {"local": {"metrics": [
    {"name": "error_rate", "provider": "router", "query": "error_ratio", "interval_s": 1, "count": 2,
     "success_condition": "result <= 0.05", "failure_limit": 0, "inconclusive_limit": 1},
]}}
FAST = {"local": {"metrics": [
    {"name": "error_rate", "provider": "router", "query": "error_ratio", "interval_s": 1, "count": 2,
     "success_condition": "result <= stable * 1.5 + 0.05", "failure_limit": 0, "inconclusive_limit": 1},
]}}


@pytest.fixture
def registry(airflow_db: Path, mlops_home: Path) -> Iterator[dict[str, str]]:
    """v1 and v2 good, v3 fails 30% of requests (HTTP 500), in the test's embedded MLflow store."""
    import mlflow

    from airflow_mlops.hooks.mlflow import MlflowHook
    from airflow_mlops.steps.demo_model import log_demo_model

    uri = MlflowHook().tracking_uri
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    yield {"good": log_demo_model(MODEL), "good2": log_demo_model(MODEL, bias=0.1),
           "bad": log_demo_model(MODEL, fail_percent=30), "good3": log_demo_model(MODEL, bias=0.2)}
    from airflow_mlops.rollout.targets.local import LocalTarget

    LocalTarget("breast-cancer-classifier", MODEL, uri).cleanup()
    os.environ["MLFLOW_TRACKING_URI"] = saved or ""


def _alerts(mlops_home: Path) -> list[dict[str, Any]]:
    """What the laptop's default file channel received ($MLOPS_HOME/alerts/alerts.jsonl)."""
    path = mlops_home / "alerts" / "alerts.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _run(conf: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    run = load_dag("mlops_progressive_rollout").test(
        run_conf={"canary_steps": [50, 100], "pause_seconds": 2.5, "analysis": FAST, **conf})
    return run, {ti.task_id: ti for ti in run.get_task_instances()}


def test_first_deployment_good_canary_then_bad_candidate(registry: dict[str, str], mlops_home: Path) -> None:
    import mlflow

    from airflow_mlops.hooks.mlflow import MlflowHook
    from airflow_mlops.rollout.targets.local import LocalTarget

    client = mlflow.MlflowClient()
    target = LocalTarget("breast-cancer-classifier", MODEL, MlflowHook().tracking_uri)
    assert target.root == str(mlops_home / "rollout" / "breast-cancer-classifier")

    # 1. Nothing is served and there is no champion: the first version goes straight to 100%.
    run, tis = _run({"candidate_version": registry["good"]})
    assert str(run.state) == "success", {k: str(v.state) for k, v in tis.items()}
    assert tis["resolve"].xcom_pull(task_ids="resolve")["stable_version"] is None
    assert target.serving_version() == registry["good"]
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == registry["good"]

    # 2. The training pipeline's promotion moved @challenger: the run resolves the candidate from the alias.
    client.set_registered_model_alias(MODEL, "challenger", registry["good2"])
    with Traffic(target.router_url, rate=30) as traffic:
        run, tis = _run({})
    assert str(run.state) == "success"
    resolved = tis["resolve"].xcom_pull(task_ids="resolve")
    assert resolved == {**resolved, "candidate_version": registry["good2"], "stable_version": registry["good"],
                        "source": "alias challenger"}
    record = tis["rollout"].xcom_pull(task_ids="rollout")
    assert record["outcome"] == "promoted" and [h["weight"] for h in record["history"]][:2] == [50, 100]
    assert target.serving_version() == registry["good2"]
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == registry["good2"]
    assert traffic.counts[(f"v{registry['good2']}", 200)] > 0

    # 3. A bad candidate (30% HTTP 500) is rolled back: stable keeps 100%, @champion stays where it was.
    with Traffic(target.router_url, rate=30) as traffic:
        run, tis = _run({"candidate_version": registry["bad"]})
    assert str(tis["rollout"].state) == "failed"
    assert target.serving_version() == registry["good2"] and target.read_state().weight == 0
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == registry["good2"]
    assert traffic.counts[(f"v{registry['bad']}", 500)] > 0
    tags = client.get_model_version(MODEL, registry["bad"]).tags
    assert tags["mlops.rollout.outcome"] == "aborted" and "error_rate" in tags["mlops.rollout.reason"]
    # The tag is a summary that is always valid JSON; every measurement is in the record file it points to.
    summary = json.loads(tags["mlops.rollout.measurements"])
    assert summary["error_rate"]["n"] >= 1 and "f" in summary["error_rate"]["outcomes"]
    stored = json.loads(Path(tags["mlops.rollout.record_uri"]).read_text())
    assert stored["outcome"] == "aborted" and stored["candidate"] == registry["bad"]
    assert len(stored["measurements"]) == sum(e["n"] for e in summary.values())
    assert tags["mlops.rollout.record_uri"].startswith(str(mlops_home / "artifacts" / "rollouts" / MODEL))
    # One alert, from the rollout task where it decided to roll back (its failure callback stays silent): the
    # model, the version, the reason, links to the candidate's MLflow run and version and to the task's log.
    [alert] = _alerts(mlops_home)
    assert (alert["event"], alert["model"], alert["version"]) == ("rollout_rolled_back", MODEL, registry["bad"])
    assert "error_rate" in alert["reason"] and f"v{registry['good2']} serves 100%" in alert["reason"]
    run_id = client.get_model_version(MODEL, registry["bad"]).run_id
    assert alert["links"]["mlflow_run"].endswith(f"/runs/{run_id}")
    assert alert["links"]["mlflow_model_version"].endswith(f"/models/{MODEL}/versions/{registry['bad']}")
    assert alert["links"]["airflow_log"].endswith(
        f"/dags/mlops_progressive_rollout/runs/{quote(alert['run_id'])}/tasks/rollout?try_number=1")
    assert alert["links"]["record"] == tags["mlops.rollout.record_uri"]
    assert f"model:    {MODEL}" in alert["text"] and f"version:  {registry['bad']}" in alert["text"]
    # 4. Blue-green by param: preview, switch, judged after the switch (absolute thresholds), old version kept.
    with Traffic(target.router_url, rate=30) as traffic:
        run, tis = _run({"candidate_version": registry["good3"], "strategy": "blue_green", "preview_seconds": 1,
                         "scale_down_seconds": 3, "blue_green_analysis": FAST_BLUE_GREEN})
    assert str(run.state) == "success", {k: str(v.state) for k, v in tis.items()}
    record = tis["rollout"].xcom_pull(task_ids="rollout")
    assert record["outcome"] == "promoted" and record["strategy"]["kind"] == "blue_green"
    assert [h["weight"] for h in record["history"]][:2] == [0, 100]
    # Without switch_approval the approval gate short-circuits: the rollout task did everything.
    assert str(tis["approve_switch"].state) == "skipped" and str(tis["switch"].state) == "skipped"
    assert {m["metric"] for m in record["measurements"]} == {"error_rate"}
    assert target.serving_version() == registry["good3"]
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == registry["good3"]
    assert traffic.counts[(f"v{registry['good3']}", 200)] > 0

    # The router kept an inference log the drift monitor reads.
    log = Path(target.root) / "inference.jsonl"
    assert log.is_file() and json.loads(log.read_text().splitlines()[0])["status"] == 200


def test_unknown_candidate_version_fails_before_touching_the_target(registry: dict[str, str],
                                                                    mlops_home: Path) -> None:
    _, tis = _run({"candidate_version": "99"})
    assert str(tis["resolve"].state) == "failed"
    # The failed task alerts through the DAG's failure callback (AlertOnFailure), with the error and its log.
    [alert] = _alerts(mlops_home)
    assert (alert["event"], alert["model"], alert["task_id"]) == ("task_failed", MODEL, "resolve")
    assert "99" in alert["reason"] and alert["links"]["airflow_log"].endswith("/tasks/resolve?try_number=1")
    assert str(tis["rollout"].state) in ("upstream_failed", "None")
    # The switch (all_done, for a timed-out approval) has nothing to take over: it skips, never errors or retries.
    assert str(tis["switch"].state) == "skipped" and tis["switch"].try_number <= 1


def _answer_switch(option: str, answered: list[str]) -> threading.Thread:
    return answer_when_waiting("mlops_progressive_rollout", "approve_switch", option, answered, "carol", "Carol", 240)


def test_blue_green_switch_waits_for_a_person_in_the_ui(registry: dict[str, str], mlops_home: Path) -> None:
    """switch_approval: the rollout stops at the gate (preview, no live traffic), a HITL task asks, and the switch
    task takes the rollout over: Switch promotes, Roll back removes the candidate."""
    import mlflow

    from airflow_mlops.hooks.mlflow import MlflowHook
    from airflow_mlops.rollout.targets.local import LocalTarget

    client = mlflow.MlflowClient()
    target = LocalTarget("breast-cancer-classifier", MODEL, MlflowHook().tracking_uri)
    run, _ = _run({"candidate_version": registry["good"]})  # first deployment
    assert str(run.state) == "success"
    blue_green = {"strategy": "blue_green", "switch_approval": True, "preview_seconds": 1, "scale_down_seconds": 3,
                  "blue_green_analysis": FAST_BLUE_GREEN}

    answered: list[str] = []
    responder = _answer_switch("Roll back", answered)
    run, tis = _run({"candidate_version": registry["good2"], **blue_green})
    responder.join(timeout=5)
    assert answered, "the approval task never waited for input"
    assert str(tis["rollout"].state) == "success"
    assert tis["rollout"].xcom_pull(task_ids="rollout")["outcome"] == "awaiting_approval"
    assert str(tis["switch"].state) == "failed"  # rolled back: the run says so
    record = tis["switch"].xcom_pull(task_ids="switch", key="rollout")
    assert record["outcome"] == "aborted" and "Carol" in record["reason"]
    assert [h["action"] for h in record["history"] if h["action"] in ("Adopt", "Reject")] == ["Adopt", "Reject"]
    # A person was asked (alert at the gate), then told the answer rolled the candidate back.
    alerts = [a for a in _alerts(mlops_home) if a["version"] == registry["good2"]]
    assert [(a["event"], a["task_id"]) for a in alerts] == [("rollout_awaiting_approval", "rollout"),
                                                             ("rollout_rolled_back", "switch")]
    assert "Required actions" in alerts[0]["reason"] and "Carol" in alerts[1]["reason"]
    assert target.serving_version() == registry["good"]
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == registry["good"]

    answered.clear()
    responder = _answer_switch("Switch", answered)
    with Traffic(target.router_url, rate=30) as traffic:
        run, tis = _run({"candidate_version": registry["good2"], **blue_green})
    responder.join(timeout=5)
    assert answered and str(run.state) == "success", {k: str(v.state) for k, v in tis.items()}
    record = tis["switch"].xcom_pull(task_ids="switch")
    assert record["outcome"] == "promoted" and record["owner"].endswith("/switch")
    approvals = [h for h in record["history"] if h["action"] == "Approve"]
    assert len(approvals) == 1 and approvals[0]["by"] == "Carol"
    assert target.serving_version() == registry["good2"]
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == registry["good2"]
    assert traffic.counts[(f"v{registry['good2']}", 200)] > 0

