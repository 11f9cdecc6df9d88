"""Test DAG: register a run's model, compare with the champion, promote `challenger` (emits an Asset event)."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param, task

from airflow_mlops.operators.registry import (
    CompareModelVersionsOperator,
    PromoteModelAliasOperator,
    RegisterModelVersionOperator,
    model_alias_asset,
)

MODEL = "registry_flow_model"

with DAG(
    dag_id="registry_flow",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={
        "model_name": Param(MODEL, type="string"),
        "run_id": Param("", type="string"),
        "policy": Param({"primary_metric": "test_accuracy", "min_improvement": 0.01,
                         "guards": [{"name": "test_f1", "tolerance": 0.05}],
                         "required_checks": ["model_checks"]}, type="object"),
        "checks_pass": Param(True, type="boolean"),
        "alias": Param("challenger", type="string"),
    },
) as dag:

    @task
    def model_checks(**context) -> dict:
        """Stands in for the checks engineer's task: the XCom contract {passed, failed_checks, report_uri}."""
        passed = bool(context["params"]["checks_pass"])
        return {"passed": passed, "failed_checks": [] if passed else ["WeakSegments"],
                "report_uri": "file:///tmp/report.html", "json_uri": "file:///tmp/report.json"}

    register = RegisterModelVersionOperator(
        task_id="register",
        model_name="{{ params.model_name }}",
        source="runs:/{{ params.run_id }}/model",
        check_results={"model_checks": "{{ ti.xcom_pull(task_ids='model_checks') }}",
                       "data_checks": "{{ ti.xcom_pull(task_ids='data_checks') }}"},
        extra_tags={"team": "ml-platform"},
        ready_timeout=60,
    )
    compare = CompareModelVersionsOperator(
        task_id="compare",
        model_name="{{ params.model_name }}",
        version="{{ ti.xcom_pull(task_ids='register')['version'] }}",
        policy="{{ params.policy | tojson }}",
    )
    promote = PromoteModelAliasOperator(
        task_id="promote",
        model_name="{{ params.model_name }}",
        alias="challenger",
        decision="{{ ti.xcom_pull(task_ids='compare') | tojson }}",
        outlets=[model_alias_asset(MODEL, "challenger")],
    )
    model_checks() >> register >> compare >> promote
