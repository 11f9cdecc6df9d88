"""Alert delivery through Airflow notifiers: SNS (the amazon provider's SnsNotifier + SnsHook, real boto3) against a
moto server over HTTP, read back from an SQS queue subscribed to the topic; the laptop file channel; a channel
whose provider is not installed (Slack, absent here) failing at task start.

Nothing is mocked: moto is the AWS stand-in (SNS -> SQS fan-out is moto's own).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_mlops.notifiers.alerts import build_alert
from tests.aws import use_moto

REGION = "us-east-1"
ROLLBACK = {
    "event": "rollout_rolled_back", "model": "churn_classifier", "version": "7",
    "reason": "analysis at step 0 (weight 20%) failed: error_rate: failed (value 0.3); v6 serves 100% of traffic",
    "dag_id": "mlops_progressive_rollout", "run_id": "manual__2026-01-01T00:00:00", "task_id": "rollout",
    "try_number": 1,
    "links": {"mlflow_run": "http://127.0.0.1:5000/#/experiments/3/runs/0123abcd",
              "mlflow_model_version": "http://127.0.0.1:5000/#/models/churn_classifier/versions/7",
              "airflow_log": "http://localhost:8080/dags/mlops_progressive_rollout/runs/manual__2026-01-01T00%3A00%3A00"
                             "/tasks/rollout?try_number=1"},
    "details": {"stable": "6", "weights": [20, 0]},
}


@pytest.fixture
def topic(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """An SNS topic with an SQS queue subscribed, and an Airflow connection ``aws_alerts`` pointing at moto."""
    import boto3

    use_moto(monkeypatch, moto_url, "aws_alerts", REGION)
    sns = boto3.client("sns", region_name=REGION, endpoint_url=moto_url)
    sqs = boto3.client("sqs", region_name=REGION, endpoint_url=moto_url)
    arn = sns.create_topic(Name="mlops-alerts")["TopicArn"]
    queue = sqs.create_queue(QueueName="mlops-alerts-inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=queue_arn)
    yield {"arn": arn, "sqs": sqs, "queue": queue}
    sns.delete_topic(TopicArn=arn)
    sqs.delete_queue(QueueUrl=queue)


def _received(topic: dict[str, Any]) -> list[dict[str, Any]]:
    out = topic["sqs"].receive_message(QueueUrl=topic["queue"], MaxNumberOfMessages=10, WaitTimeSeconds=2)
    return [json.loads(m["Body"]) for m in out.get("Messages", [])]


def test_an_alert_reaches_an_sqs_subscriber_of_the_sns_topic(topic: dict[str, Any], tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_mlops.notifiers.channels import check_alert_channels, deliver

    monkeypatch.setenv("AIRFLOW_VAR_MLOPS_ALERTS", json.dumps([
        {"kind": "sns", "name": "oncall", "topic_arn": topic["arn"], "aws_conn_id": "aws_alerts"},
        {"kind": "file", "path": str(tmp_path / "alerts.jsonl")},
    ]))
    channels = check_alert_channels()  # what a task's pre_execute runs: config valid, providers importable
    results = deliver(build_alert(ROLLBACK), {}, channels)
    assert results == {"oncall": "sent", "file#1": "sent"}

    [envelope] = _received(topic)
    assert envelope["Type"] == "Notification" and envelope["TopicArn"] == topic["arn"]
    assert envelope["Subject"] == "[mlops critical] churn_classifier v7 rolled back"
    lines = envelope["Message"].splitlines()
    # The body a person reads names the model, the version and the reason, and links the MLflow run and the log.
    assert "model:    churn_classifier" in lines, envelope["Message"]
    assert "version:  7" in lines
    assert f"reason:   {ROLLBACK['reason']}" in lines
    assert f"  MLflow run            {ROLLBACK['links']['mlflow_run']}" in lines
    assert f"  MLflow model version  {ROLLBACK['links']['mlflow_model_version']}" in lines
    assert f"  Airflow task log      {ROLLBACK['links']['airflow_log']}" in lines
    # Message attributes, for subscription filter policies.
    attributes = {k: v["Value"] for k, v in envelope["MessageAttributes"].items()}
    assert attributes == {"event": "rollout_rolled_back", "severity": "critical", "model": "churn_classifier",
                          "version": "7", "dag_id": "mlops_progressive_rollout"}
    [line] = (tmp_path / "alerts.jsonl").read_text().splitlines()
    assert json.loads(line)["text"] == envelope["Message"]


def test_json_format_and_a_failing_channel_does_not_stop_the_others(topic: dict[str, Any], tmp_path: Path) -> None:
    from airflow_mlops.notifiers.alerts import validate_channels
    from airflow_mlops.notifiers.channels import deliver

    missing = topic["arn"].replace("mlops-alerts", "no-such-topic")
    channels = validate_channels([
        {"kind": "sns", "name": "gone", "topic_arn": missing, "aws_conn_id": "aws_alerts"},
        {"kind": "sns", "name": "machines", "topic_arn": topic["arn"], "aws_conn_id": "aws_alerts", "format": "json",
         "events": ["rollout_rolled_back"]},
        {"kind": "sns", "name": "drift-only", "topic_arn": topic["arn"], "aws_conn_id": "aws_alerts",
         "events": ["drift_detected"]},
        {"kind": "file", "path": str(tmp_path / "alerts.jsonl")},
    ])
    results = deliver(build_alert(ROLLBACK), {}, channels)
    assert results["gone"].startswith("failed:") and "NotFound" in results["gone"]
    assert results["machines"] == "sent" and results["file#3"] == "sent" and "drift-only" not in results
    [envelope] = _received(topic)
    message = json.loads(envelope["Message"])
    assert (message["model"], message["version"], message["reason"]) == ("churn_classifier", "7", ROLLBACK["reason"])
    assert message["links"]["mlflow_run"] == ROLLBACK["links"]["mlflow_run"]


def test_a_channel_whose_provider_is_missing_fails_at_task_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Slack provider is not installed in this environment (asserted), so a Slack channel must be refused."""
    import importlib.util

    from airflow.sdk.exceptions import AirflowFailException

    from airflow_mlops.notifiers.channels import check_alert_channels

    assert importlib.util.find_spec("airflow.providers.slack") is None
    monkeypatch.setenv("AIRFLOW_VAR_MLOPS_ALERTS", json.dumps([
        {"kind": "log"}, {"kind": "slack", "name": "ml-team", "slack_webhook_conn_id": "slack_ml"}]))
    with pytest.raises(AirflowFailException) as err:
        check_alert_channels()
    assert "'ml-team' (kind slack)" in str(err.value) and "apache-airflow-providers-slack" in str(err.value)

    monkeypatch.setenv("AIRFLOW_VAR_MLOPS_ALERTS", json.dumps([{"kind": "sns", "topic_arn": "mlops-alerts"}]))
    with pytest.raises(AirflowFailException, match=r"mlops_alerts\[0\]\.topic_arn: an SNS topic ARN"):
        check_alert_channels()
