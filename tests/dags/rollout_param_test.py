"""Test DAG: a rollout whose strategy comes from the run's conf (benchmarks and contract checks)."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Param

from airflow_mlops.operators.rollout import ModelRolloutOperator

with DAG("rollout_param_test", schedule=None, start_date=dt.datetime(2025, 1, 1), catchup=False,
         params={"model": Param("rollout_demo", type="string"), "candidate": Param("2", type="string"),
                 "endpoint": Param("rollout-bench", type="string"), "root": Param("", type="string"),
                 "strategy": Param({"kind": "canary", "steps": [50, 100], "pause_s": 1}, type="object")},
         tags=["test", "rollout"], doc_md="A rollout with the strategy given in the run conf.") as dag:
    ModelRolloutOperator(
        task_id="rollout", owner="mlops", retries=0, model_name="{{ params.model }}",
        candidate_version="{{ params.candidate }}", strategy="{{ params.strategy | tojson }}",
        target={"kind": "local", "name": "{{ params.endpoint }}", "root": "{{ params.root }}"}, poll_s=0.1,
        champion_alias=None,
    )
