"""Test DAG: roll the champion alias back to the version its rollback alias holds."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param

from airflow_mlops.operators.registry import RollbackModelAliasOperator

with DAG(dag_id="registry_rollback", schedule=None, start_date=datetime(2026, 1, 1), catchup=False,
         params={"model_name": Param("registry_flow_model", type="string")}) as dag:
    RollbackModelAliasOperator(task_id="rollback", model_name="{{ params.model_name }}", alias="champion",
                               reason="canary error rate")
