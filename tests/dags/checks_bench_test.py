"""Test/benchmark DAG: data_integrity + train_test_validation on datasets given by params (gate warn)."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param

from airflow_mlops.operators.checks import DataChecksOperator

with DAG(
    dag_id="checks_bench_test",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    doc_md="The data checks operator alone, for the P4 benchmark (operator vs bare suite.run()).",
    tags=["test"],
    default_args={"owner": "tests", "retries": 1, "retry_delay": timedelta(seconds=0)},
    params={"train_uri": Param("", type="string"), "test_uri": Param("", type="string")},
) as dag:
    DataChecksOperator(
        task_id="data_checks",
        train_data_uri="{{ params.train_uri }}",
        test_data_uri="{{ params.test_uri }}",
        label_column="target",
        cat_features=["color"],
        gate="warn",
        fail_on_warning=False,
    )
