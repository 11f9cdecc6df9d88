"""Test DAG: a deferrable registry sensor waiting for an alias on a promoted version."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param

from airflow_mlops.sensors.mlflow import MlflowRegistrySensor

with DAG(dag_id="registry_sensor", schedule=None, start_date=datetime(2026, 1, 1), catchup=False,
         params={"model_name": Param("sensor_model", type="string"), "newer_than": Param("0", type="string"),
                 "timeout": Param(30, type="integer")}) as dag:
    MlflowRegistrySensor(
        task_id="wait_for_champion",
        model_name="{{ params.model_name }}",
        alias="champion",
        newer_than="{{ params.newer_than }}",
        required_tags={"mlops.decision": "promote"},
        poke_interval=0.5,
        timeout=4,
    )
    MlflowRegistrySensor(task_id="wait_for_new_version", model_name="{{ params.model_name }}",
                         newer_than="{{ params.newer_than }}", poke_interval=0.5, timeout=4)
