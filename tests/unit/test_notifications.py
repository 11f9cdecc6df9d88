"""The alert channel validator and the message builder: pure, no Airflow."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from airflow_mlops.core.errors import SpecError
from airflow_mlops.notifiers.alerts import (
    EVENTS,
    SUBJECT_LIMIT,
    build_alert,
    default_alerts_path,
    render_text,
    validate_channels,
    wants,
)

ARN = "arn:aws:sns:us-east-1:111122223333:mlops-alerts"
ROLLBACK = {
    "event": "rollout_rolled_back", "model": "churn", "version": 7,
    "reason": "analysis at step 0 (weight 20%) failed: error_rate 0.3", "dag_id": "mlops_progressive_rollout",
    "run_id": "manual__2026-01-01", "task_id": "rollout", "try_number": 1,
    "links": {"mlflow_run": "http://mlflow/#/experiments/1/runs/abc", "airflow_log": "http://airflow/dags/x",
              "mlflow_model_version": "", "record": None},
    "details": {"stable": "6", "weights": [20, 0]},
}


def test_the_pure_module_imports_no_airflow() -> None:
    code = "import sys, airflow_mlops.notifiers.alerts; print(sorted(m for m in sys.modules if m.split('.')[0] in " \
           "('airflow', 'boto3', 'mlflow')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_unset_or_empty_config_means_log_and_file_under_mlops_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_HOME", "/tmp/mlops-x")
    for value in (None, "", "  ", "[]", []):
        channels = validate_channels(value)
        assert [c["kind"] for c in channels] == ["log", "file"]
        assert channels[1]["path"] == "/tmp/mlops-x/alerts/alerts.jsonl" == default_alerts_path()


def test_a_full_config_validates_and_gets_names() -> None:
    config = json.dumps([
        {"kind": "sns", "topic_arn": ARN, "aws_conn_id": "aws_alerts", "events": ["rollout_rolled_back"]},
        {"kind": "slack", "slack_conn_id": "slack_api", "channel": "#ml-alerts", "min_severity": "critical"},
        {"kind": "slack", "name": "hook", "slack_webhook_conn_id": "slack_hook"},
        {"kind": "smtp", "to": "oncall@example.com", "from_email": "airflow@example.com"},
        {"kind": "log", "level": "error"},
        {"kind": "file", "path": "$MLOPS_HOME/a.jsonl"},
    ])
    channels = validate_channels(config)
    assert [c["name"] for c in channels] == ["sns#0", "slack#1", "hook", "smtp#3", "log#4", "file#5"]
    assert channels[3]["to"] == ["oncall@example.com"]
    assert channels[5]["path"].endswith("/a.jsonl") and "$" not in channels[5]["path"]


@pytest.mark.parametrize(("config", "field", "allowed"), [
    ("not json", "mlops_alerts", "JSON list"),
    ({"kind": "log"}, "mlops_alerts", "a list of channels"),
    (["log"], "mlops_alerts[0]", "kind = one of"),
    ([{"kind": "pagerduty"}], "mlops_alerts[0].kind", "('log', 'file', 'sns', 'slack', 'smtp')"),
    ([{"kind": "log"}, {"kind": "sns"}], "mlops_alerts[1].topic_arn", "required for a sns channel"),
    ([{"kind": "sns", "topic_arn": "mlops-alerts"}], "mlops_alerts[0].topic_arn", "an SNS topic ARN"),
    ([{"kind": "sns", "topic_arn": ARN, "topic": "x"}], "mlops_alerts[0].topic", "a field of a sns channel"),
    ([{"kind": "sns", "topic_arn": ARN, "format": "xml"}], "mlops_alerts[0].format", "('text', 'json')"),
    ([{"kind": "sns", "topic_arn": ARN, "aws_conn_id": ""}], "mlops_alerts[0].aws_conn_id", "non-empty"),
    ([{"kind": "slack"}], "mlops_alerts[0].slack_conn_id/slack_webhook_conn_id", "exactly one"),
    ([{"kind": "slack", "slack_conn_id": "s"}], "mlops_alerts[0].channel", "the Slack channel"),
    ([{"kind": "slack", "slack_webhook_conn_id": "s", "channel": "#x"}], "mlops_alerts[0].channel", "only with"),
    ([{"kind": "smtp", "to": ["ok@example.com", "nope"]}], "mlops_alerts[0].to", "an e-mail address"),
    ([{"kind": "smtp", "to": []}], "mlops_alerts[0].to", "required"),
    ([{"kind": "log", "level": "debug"}], "mlops_alerts[0].level", "('info', 'warning', 'error')"),
    ([{"kind": "file", "path": "alerts.jsonl"}], "mlops_alerts[0].path", "an absolute path"),
    ([{"kind": "log", "events": ["rollback"]}], "mlops_alerts[0].events", "rollout_rolled_back"),
    ([{"kind": "log", "min_severity": "high"}], "mlops_alerts[0].min_severity", "('info', 'warning', 'critical')"),
    ([{"kind": "log"}, {"kind": "log", "name": "log#0"}], "mlops_alerts[1].name", "no other channel"),
])
def test_bad_configs_name_the_field_and_the_allowed_values(config: Any, field: str, allowed: str) -> None:
    with pytest.raises(SpecError) as err:
        validate_channels(config)
    assert err.value.field == field, str(err.value)
    assert allowed in err.value.allowed, str(err.value)


def test_filters_by_event_and_severity() -> None:
    alert = build_alert(ROLLBACK)  # critical
    reject = build_alert({**ROLLBACK, "event": "promotion_rejected"})  # warning
    assert wants({"kind": "log"}, alert) and wants({"kind": "log"}, reject)
    assert wants({"min_severity": "critical"}, alert) and not wants({"min_severity": "critical"}, reject)
    assert not wants({"events": ["drift_detected"]}, alert)


def test_the_message_names_model_version_reason_and_links() -> None:
    alert = build_alert(ROLLBACK)
    assert (alert.event, alert.severity, alert.model, alert.version) == ("rollout_rolled_back", "critical", "churn",
                                                                         "7")
    assert alert.subject == "[mlops critical] churn v7 rolled back"
    assert alert.links == {"mlflow_run": "http://mlflow/#/experiments/1/runs/abc",
                           "airflow_log": "http://airflow/dags/x"}  # empty links are dropped
    text = render_text(alert)
    for expected in ("model:    churn", "version:  7", "reason:   analysis at step 0 (weight 20%) failed",
                     "MLflow run        http://mlflow/#/experiments/1/runs/abc",
                     "Airflow task log  http://airflow/dags/x", "mlops_progressive_rollout / manual__2026-01-01 / "
                     "rollout (try 1)", "weights: [20, 0]"):
        assert expected in text, text
    assert text.index("MLflow run") < text.index("Airflow task log")
    assert alert.attributes() == {"event": "rollout_rolled_back", "severity": "critical", "model": "churn",
                                  "version": "7", "dag_id": "mlops_progressive_rollout"}
    assert json.loads(json.dumps(alert.to_dict()))["details"] == {"stable": "6", "weights": [20, 0]}


@pytest.mark.parametrize("event", list(EVENTS))
def test_every_event_has_a_subject_within_the_sns_limit(event: str) -> None:
    alert = build_alert({**ROLLBACK, "event": event, "model": "m" * 150, "reason": "line one\nline two"})
    assert len(alert.subject) <= SUBJECT_LIMIT and "\n" not in alert.subject
    assert alert.subject.isascii() and alert.reason == "line one line two"


def test_an_outcome_without_version_or_with_odd_details_still_builds() -> None:
    alert = build_alert({"event": "checks_failed", "model": "churn", "task_id": "data_checks",
                         "reason": "1 check(s) failed", "details": {"at": object()}})
    assert alert.version is None and alert.subject == "[mlops warning] churn: data_checks failed"
    assert "version:  (none)" in render_text(alert)
    assert isinstance(alert.details["at"], str)
    failed = build_alert({"event": "task_failed", "model": "churn", "dag_id": "d", "task_id": "t", "version": "None"})
    assert failed.subject == "[mlops critical] d.t failed (churn)" and failed.reason == "(no reason recorded)"


@pytest.mark.parametrize(("outcome", "field"), [
    ({"event": "oops", "model": "m"}, "outcome.event"),
    ({"event": "drift_detected", "model": " "}, "outcome.model"),
    ({"event": "drift_detected", "model": "m", "severity": "fatal"}, "outcome.severity"),
])
def test_bad_outcomes_name_the_field(outcome: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as err:
        build_alert(outcome)
    assert err.value.field == field
