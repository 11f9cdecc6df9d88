"""Test DAG: a checks gate between a data step and what follows, for each gate mode (a DAG param)."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, Param

from airflow_mlops.operators.checks import ChecksOperator

with DAG(
    dag_id="checks_gate_test",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    doc_md="Gate modes of the checks operator: data_integrity on a dataset given by params, then a downstream task.",
    tags=["test"],
    default_args={"owner": "tests", "retries": 1, "retry_delay": timedelta(seconds=0)},
    params={"gate": Param("fail", enum=["fail", "skip_downstream", "warn"]),
            "data_uri": Param("", type="string"), "mlflow_run_id": Param("", type="string")},
) as dag:
    checks = ChecksOperator(
        task_id="checks",
        checks=["data_duplicates", "mixed_nulls", "is_single_value"],
        train_data_uri="{{ params.data_uri }}",
        label_column="target",
        cat_features=[],
        gate="{{ params.gate }}",
        mlflow_run_id="{{ params.mlflow_run_id }}",
    )
    after = EmptyOperator(task_id="after")
    last = EmptyOperator(task_id="last")
    checks >> after >> last
