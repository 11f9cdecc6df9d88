"""Test DAG: one step mapped over arguments (dynamic task mapping), as a hyperparameter fan-out does."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

from airflow_mlops.operators.step import MlopsStepOperator

with DAG(dag_id="mapped_steps_test", schedule=None, start_date=datetime(2026, 1, 1), catchup=False,
         tags=["test"], doc_md="Mapped step instances must not share result, output or checkpoint URIs.",
         default_args={"owner": "tests", "retries": 1}) as dag:
    MlopsStepOperator.partial(task_id="prepare", step_name="prepare", module="airflow_mlops.steps.prepare_data",
                              runtime="local").expand(args=[["--test-size", "0.2"], ["--test-size", "0.3"]])
