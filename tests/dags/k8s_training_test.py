"""Test DAG: the first slice with short timeouts and intervals, for Kubernetes failure scenarios."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param

from airflow_mlops.operators.step import MlopsStepOperator
from airflow_mlops.operators.training import GpuTrainingOperator

with DAG(
    dag_id="k8s_training_test",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    doc_md="Kubernetes runtime scenarios for the test suite (short timeouts and poll intervals).",
    tags=["test"],
    default_args={"owner": "tests", "retries": 1, "retry_delay": timedelta(seconds=0)},
    params={"epochs": Param(6, type="integer"), "num_workers": Param(1, type="integer"),
            "train_retries": Param(1, type="integer")},
) as dag:
    prepare_data = MlopsStepOperator(
        task_id="prepare_data", step_name="prepare-data", module="airflow_mlops.steps.prepare_data",
        poll_interval=0.5, startup_timeout_seconds=5,
    )
    train = GpuTrainingOperator(
        task_id="train",
        experiment_name="k8s-test",
        train_data_uri="{{ ti.xcom_pull(task_ids='prepare_data')['train_uri'] }}",
        test_data_uri="{{ ti.xcom_pull(task_ids='prepare_data')['test_uri'] }}",
        data_version="{{ ti.xcom_pull(task_ids='prepare_data')['data_version'] }}",
        hyperparams={"framework": "sklearn", "epochs": "{{ params.epochs }}"},
        compute={"gpus": 1, "gpu_type": "a100", "memory_request": "8Gi", "shm_size": "1Gi",
                 "num_workers": "{{ params.num_workers }}"},
        poll_interval=0.5,
        startup_timeout_seconds=4,
    )
    prepare_data >> train
