"""Test DAG: the drift check (recent inference data vs training data), as the drift-monitor DAG uses it."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param

from airflow_mlops.operators.checks import DriftChecksOperator

with DAG(
    dag_id="checks_drift_test",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    doc_md="Feature and prediction drift between a reference and a current dataset given by params.",
    tags=["test"],
    default_args={"owner": "tests", "retries": 1, "retry_delay": timedelta(seconds=0)},
    params={name: Param("", type="string") for name in ("reference", "current", "reference_predictions",
                                                        "current_predictions")},
) as dag:
    DriftChecksOperator(
        task_id="drift",
        reference_data_uri="{{ params.reference }}",
        current_data_uri="{{ params.current }}",
        reference_predictions_uri="{{ params.reference_predictions }}",
        current_predictions_uri="{{ params.current_predictions }}",
        label_column="target",
        cat_features=["color"],
        gate="warn",
    )
