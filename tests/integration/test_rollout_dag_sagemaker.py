"""The reference rollout DAG, unchanged, on a SageMaker endpoint: only Variables differ from the laptop.

SageMaker and CloudWatch are a moto server over HTTP (with the two behaviours moto lacks added by the fixtures of
``test_rollout_sagemaker``); nothing serves the endpoint there, so ``VariantTraffic`` plays SageMaker's data plane
and publishes each variant's per-request metrics by the weights the endpoint reports.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.dagfiles import load_dag
from tests.integration.test_rollout_sagemaker import IMAGE, ROLE, VariantTraffic, aws, moto_url

pytestmark = pytest.mark.slow
__all__ = ["aws", "moto_url"]
MODEL = "breast_cancer_classifier"
ENDPOINT = "breast-cancer-classifier"
DIMENSIONS = {"EndpointName": "{endpoint}", "VariantName": "{backend}"}
FAST = {"sagemaker": {"metrics": [
    {"name": "error_rate", "provider": "cloudwatch", "query": "AWS/SageMaker/Invocation5XXErrors", "interval_s": 1,
     "count": 2, "success_condition": "result <= stable * 1.5 + 0.05", "failure_limit": 0, "inconclusive_limit": 1,
     "params": {"stat": "Average", "period": 1, "lookback_s": 2, "dimensions": DIMENSIONS}},
]}}


@pytest.fixture
def on_sagemaker(aws: dict[str, Any], mlops_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Variables select the SageMaker target; a real MLflow registry (SQLite) holds v1 (champion), v2, v3."""
    import mlflow

    monkeypatch.setenv("AIRFLOW_VAR_MLOPS_ROLLOUT_TARGET", "sagemaker")
    monkeypatch.setenv("AIRFLOW_VAR_MLOPS_ROLLOUT_TARGET_CONFIG", json.dumps({
        "image": IMAGE, "execution_role_arn": ROLE, "tracking_uri": "http://mlflow.internal:5000",
        "aws_conn_id": "aws_default", "poll_s": 0.1}))
    (mlops_home / "mlflow").mkdir(parents=True)
    client = mlflow.MlflowClient(f"sqlite:///{mlops_home}/mlflow/mlflow.db")
    client.create_registered_model(MODEL)
    versions = [str(client.create_model_version(MODEL, f"s3://models/{MODEL}/{i}").version) for i in range(3)]
    client.set_registered_model_alias(MODEL, "champion", versions[0])
    from airflow_mlops.rollout.targets import make_target

    target = make_target({"kind": "sagemaker", "name": ENDPOINT, "model": MODEL, "image": IMAGE,
                          "execution_role_arn": ROLE, "tracking_uri": "http://mlflow.internal:5000", "poll_s": 0.05})
    target.deploy_initial(versions[0])
    yield {"client": client, "versions": versions, "target": target}
    target.cleanup()


def _run(candidate: str) -> dict[str, Any]:
    run = load_dag("mlops_progressive_rollout").test(run_conf={
        "candidate_version": candidate, "canary_steps": [50, 100], "pause_seconds": 2.5, "analysis": FAST})
    return {ti.task_id: ti for ti in run.get_task_instances()}


def test_same_dag_canary_on_sagemaker_promotes_then_rolls_back(on_sagemaker: dict[str, Any],
                                                                aws: dict[str, Any]) -> None:
    client, (_, v2, v3) = on_sagemaker["client"], on_sagemaker["versions"]
    target = on_sagemaker["target"]

    with VariantTraffic(aws, ENDPOINT, fail={}):
        tis = _run(v2)
    assert str(tis["rollout"].state) == "success"
    record = tis["rollout"].xcom_pull(task_ids="rollout")
    assert record["outcome"] == "promoted" and record["target"]["kind"] == "sagemaker"
    assert [m["metric"] for m in record["measurements"]][:1] == ["error_rate"]
    assert target.serving_version() == v2
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == v2

    # v3's variant fails 40% of requests: CloudWatch shows it, the canary rolls back at 50%.
    with VariantTraffic(aws, ENDPOINT, fail={f"v{v3}": 0.4}):
        tis = _run(v3)
    assert str(tis["rollout"].state) == "failed"
    assert target.serving_version() == v2
    weights = {v["VariantName"]: v["CurrentWeight"] for v in
               aws["sagemaker"].describe_endpoint(EndpointName=ENDPOINT)["ProductionVariants"]}
    assert weights.get(f"v{v2}") and not weights.get(f"v{v3}")
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == v2
