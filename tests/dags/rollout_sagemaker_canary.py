"""Test DAG: a canary rollout on a SageMaker endpoint (moto in tests) judged by CloudWatch GetMetricData."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Param

from airflow_mlops.core.rollout import AnalysisSpec, MetricCheck
from airflow_mlops.operators.rollout import CanaryRolloutOperator

ENDPOINT = "rollout-sm-test"
PARAMS = {
    "model": Param("rollout_sm", type="string"),
    "candidate": Param("2", type="string"),
    "tracking_uri": Param("http://mlflow.internal:5000", type="string"),
}
TARGET = {"kind": "sagemaker", "name": ENDPOINT, "model": "{{ params.model }}",
          "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/airflow-mlops-serving:0.1.0",
          "execution_role_arn": "arn:aws:iam::123456789012:role/mlops-sagemaker-execution",
          "tracking_uri": "{{ params.tracking_uri }}", "aws_conn_id": "aws_default", "poll_s": 0.1}
# SageMaker publishes Invocation5XXErrors as 0/1 per request: its Average is the 5xx rate of a variant.
DIMENSIONS = {"EndpointName": ENDPOINT, "VariantName": "{backend}"}
ERRORS = MetricCheck(name="error_rate", provider="cloudwatch", query="AWS/SageMaker/Invocation5XXErrors",
                     interval_s=1.0, count=2, success_condition="result <= stable * 1.5 + 0.05", failure_limit=0,
                     inconclusive_limit=1,
                     params={"stat": "Average", "period": 1, "lookback_s": 2, "dimensions": DIMENSIONS})
LATENCY = MetricCheck(name="latency_us", provider="cloudwatch", query="AWS/SageMaker/ModelLatency",
                      interval_s=1.0, count=2, success_condition="result <= stable * 2 + 50000", inconclusive_limit=1,
                      params={"stat": "Average", "period": 1, "lookback_s": 2, "dimensions": DIMENSIONS})

with DAG("rollout_sagemaker_canary", schedule=None, start_date=dt.datetime(2025, 1, 1), catchup=False,
         params=PARAMS, tags=["test", "rollout", "sagemaker"],
         doc_md="Canary 25/50/100 on a SageMaker endpoint; CloudWatch 5xx rate and latency per variant.") as dag:
    CanaryRolloutOperator(
        task_id="canary", owner="mlops", retries=1, model_name="{{ params.model }}",
        candidate_version="{{ params.candidate }}", target=TARGET, steps=(25, 50, 100), pause_s=2.5,
        analysis=AnalysisSpec((ERRORS, LATENCY)), poll_s=0.2,
    )
