"""The first-slice pipeline hand-written with the stock KubernetesPodOperator: the P1 parse-cost baseline."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk import DAG, Param
from kubernetes.client import models as k8s

with DAG(
    dag_id="stock_kpo_pipeline",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["benchmark"],
    default_args={"owner": "ml-platform", "retries": 2, "retry_delay": timedelta(minutes=2)},
    params={"dataset": Param("breast_cancer", type="string"), "epochs": Param(20, type="integer")},
) as dag:
    prepare_data = KubernetesPodOperator(
        task_id="prepare_data", name="prepare-data", image="airflow-mlops/trainer:0.1.0",
        cmds=["python", "-m", "airflow_mlops.steps.prepare_data"], arguments=["--dataset", "{{ params.dataset }}"],
        container_resources=k8s.V1ResourceRequirements(requests={"cpu": "1", "memory": "2Gi"},
                                                       limits={"memory": "2Gi"}),
        deferrable=True,
    )
    train = KubernetesPodOperator(
        task_id="train", name="train", image="airflow-mlops/trainer:0.1.0",
        cmds=["python", "-m", "airflow_mlops.steps.train"],
        env_vars={"MLOPS_PARAMS": '{"epochs": "{{ params.epochs }}"}'},
        container_resources=k8s.V1ResourceRequirements(
            requests={"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
            limits={"memory": "16Gi", "nvidia.com/gpu": "1"}),
        tolerations=[k8s.V1Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")],
        node_selector={"karpenter.k8s.aws/instance-gpu-name": "a100", "karpenter.sh/capacity-type": "spot"},
        volumes=[k8s.V1Volume(name="dshm", empty_dir=k8s.V1EmptyDirVolumeSource(medium="Memory", size_limit="4Gi"))],
        volume_mounts=[k8s.V1VolumeMount(name="dshm", mount_path="/dev/shm")],
        deferrable=True,
    )
    register = KubernetesPodOperator(
        task_id="register", name="register", image="airflow-mlops/trainer:0.1.0",
        cmds=["python", "-c", "print('register')"], deferrable=True,
    )
    prepare_data >> train >> register
