"""An empty DAG: the floor of parse cost."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

with DAG(dag_id="empty_dag", schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["benchmark"]) as dag:
    pass
