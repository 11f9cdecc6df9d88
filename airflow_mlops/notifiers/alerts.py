"""What an alert says and where it may go: the channel config validator and the message builder (pure, no Airflow).

An *outcome* is what an operator decided (a rollback, a drift verdict, a failed gate, a rejected promotion) or what
a failure callback saw, as a plain dict; :func:`build_alert` turns it into an :class:`Alert` (model, version,
reason, links, where it happened), :func:`render_text` into the text a person reads. :func:`validate_channels`
checks the ``mlops_alerts`` Variable (a JSON list of channels) and names the field and the allowed values.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from airflow_mlops.core.config import mlops_home
from airflow_mlops.core.errors import SpecError

VARIABLE = "mlops_alerts"

#: Event -> (severity, subject template). Subjects take {model}, {version}, {task}, {dag}.
EVENTS: Mapping[str, tuple[str, str]] = {
    "rollout_rolled_back": ("critical", "{model} v{version} rolled back"),
    "rollout_awaiting_approval": ("warning", "{model} v{version} awaits approval to switch"),
    "drift_detected": ("warning", "drift in {model} v{version}: retraining requested"),
    "checks_failed": ("warning", "{model}{at_version}: {task} failed"),
    "training_failed": ("critical", "{model}: training failed ({task})"),
    "promotion_rejected": ("warning", "{model} v{version} not promoted"),
    "task_failed": ("critical", "{dag}.{task} failed{for_model}"),
}
SEVERITIES = ("info", "warning", "critical")

CHANNEL_KINDS = ("log", "file", "sns", "slack", "smtp")
COMMON_FIELDS = ("kind", "name", "events", "min_severity")
#: kind -> (required fields, optional fields)
CHANNEL_FIELDS: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "log": ((), ("level",)),
    "file": ((), ("path",)),
    "sns": (("topic_arn",), ("aws_conn_id", "region_name", "format")),
    "slack": ((), ("slack_conn_id", "slack_webhook_conn_id", "channel")),
    "smtp": (("to",), ("from_email", "smtp_conn_id")),
}
LOG_LEVELS = ("info", "warning", "error")
SNS_FORMATS = ("text", "json")
#: The provider package each kind needs (log and file need none).
PROVIDER_PACKAGES = {"sns": "apache-airflow-providers-amazon", "slack": "apache-airflow-providers-slack",
                     "smtp": "apache-airflow-providers-smtp"}
_TOPIC_ARN = re.compile(r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
SUBJECT_LIMIT = 100  # SNS: at most 100 printable ASCII characters, no line breaks


def default_alerts_path(env: Mapping[str, str] | None = None) -> str:
    """The laptop default: ``$MLOPS_HOME/alerts/alerts.jsonl``."""
    return os.path.join(mlops_home(env), "alerts", "alerts.jsonl")


def default_channels() -> tuple[dict[str, Any], ...]:
    """When ``mlops_alerts`` is unset: the task log and a JSONL file under ``$MLOPS_HOME``."""
    return ({"kind": "log", "name": "log"}, {"kind": "file", "name": "file", "path": default_alerts_path()})


def _str(where: str, value: Any, allowed: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SpecError(where, allowed, value)
    return value


def validate_channels(value: Any) -> tuple[dict[str, Any], ...]:
    """Channels from the ``mlops_alerts`` Variable (a JSON list, or the parsed list); None/empty: the defaults.

    Each channel is a dict with ``kind`` (one of :data:`CHANNEL_KINDS`) and that kind's fields; optional on every
    channel: ``name`` (how errors and logs call it), ``events`` (only these events), ``min_severity``. Raises
    :class:`SpecError` naming the field (``mlops_alerts[1].topic_arn``) and the allowed values.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return default_channels()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise SpecError(VARIABLE, "a JSON list of channels, e.g. [{\"kind\": \"log\"}]", value) from None
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
        raise SpecError(VARIABLE, "a list of channels (dicts with a kind)", value)
    if not value:
        return default_channels()
    channels = []
    names: set[str] = set()
    for i, raw in enumerate(value):
        where = f"{VARIABLE}[{i}]"
        if not isinstance(raw, Mapping):
            raise SpecError(where, f"a dict with kind = one of {CHANNEL_KINDS}", raw)
        kind = raw.get("kind")
        if kind not in CHANNEL_KINDS:
            raise SpecError(f"{where}.kind", f"one of {CHANNEL_KINDS}", kind)
        required, optional = CHANNEL_FIELDS[kind]
        allowed = (*COMMON_FIELDS, *required, *optional)
        for key in raw:
            if key not in allowed:
                raise SpecError(f"{where}.{key}", f"a field of a {kind} channel: one of {allowed}", raw[key])
        for key in required:
            if raw.get(key) in (None, "", []):
                raise SpecError(f"{where}.{key}", f"required for a {kind} channel", raw.get(key))
        channel = {k: v for k, v in raw.items() if v is not None}
        name = channel.setdefault("name", f"{kind}#{i}")
        _str(f"{where}.name", name, "a non-empty string")
        if name in names:
            raise SpecError(f"{where}.name", "a name no other channel has", name)
        names.add(name)
        events = channel.get("events")
        if events is not None:
            if (not isinstance(events, Sequence) or isinstance(events, str) or not events
                    or any(e not in EVENTS for e in events)):
                raise SpecError(f"{where}.events", f"a non-empty list of events from {tuple(EVENTS)}", events)
            channel["events"] = list(events)
        if channel.get("min_severity", "info") not in SEVERITIES:
            raise SpecError(f"{where}.min_severity", f"one of {SEVERITIES}", channel.get("min_severity"))
        _check_kind(where, kind, channel)
        channels.append(channel)
    return tuple(channels)


def _check_kind(where: str, kind: str, channel: dict[str, Any]) -> None:
    if kind == "log" and channel.get("level", "warning") not in LOG_LEVELS:
        raise SpecError(f"{where}.level", f"one of {LOG_LEVELS}", channel.get("level"))
    if kind == "file":
        path = channel.get("path") or default_alerts_path()
        path = os.path.expandvars(os.path.expanduser(_str(f"{where}.path", path, "a file path")))
        if not os.path.isabs(path):
            raise SpecError(f"{where}.path", "an absolute path (~ and $MLOPS_HOME are expanded)", channel["path"])
        channel["path"] = path
    if kind == "sns":
        arn = channel["topic_arn"]
        if not isinstance(arn, str) or not _TOPIC_ARN.match(arn):
            raise SpecError(f"{where}.topic_arn", "an SNS topic ARN: arn:aws:sns:<region>:<account id>:<topic>", arn)
        for key in ("aws_conn_id", "region_name"):
            if key in channel:
                _str(f"{where}.{key}", channel[key], "a non-empty string")
        if channel.get("format", "text") not in SNS_FORMATS:
            raise SpecError(f"{where}.format", f"one of {SNS_FORMATS}", channel.get("format"))
    if kind == "slack":
        conn, webhook = channel.get("slack_conn_id"), channel.get("slack_webhook_conn_id")
        if bool(conn) == bool(webhook):
            raise SpecError(f"{where}.slack_conn_id/slack_webhook_conn_id",
                            "exactly one: a Slack API connection (with channel) or an incoming-webhook connection",
                            {"slack_conn_id": conn, "slack_webhook_conn_id": webhook})
        if conn:
            _str(f"{where}.channel", channel.get("channel"), "the Slack channel to post to (with slack_conn_id)")
        elif "channel" in channel:
            raise SpecError(f"{where}.channel", "only with slack_conn_id (a webhook posts to its own channel)",
                            channel["channel"])
    if kind == "smtp":
        to = channel["to"]
        recipients = [to] if isinstance(to, str) else to
        if (not isinstance(recipients, Sequence) or not recipients
                or any(not isinstance(r, str) or not _EMAIL.match(r) for r in recipients)):
            raise SpecError(f"{where}.to", "an e-mail address or a non-empty list of them", to)
        channel["to"] = list(recipients)
        if "from_email" in channel and not (isinstance(channel["from_email"], str)
                                            and _EMAIL.match(channel["from_email"])):
            raise SpecError(f"{where}.from_email", "an e-mail address", channel["from_email"])


def wants(channel: Mapping[str, Any], alert: Alert) -> bool:
    """Whether this channel takes this alert (its ``events`` and ``min_severity`` filters)."""
    events = channel.get("events")
    if events is not None and alert.event not in events:
        return False
    return SEVERITIES.index(alert.severity) >= SEVERITIES.index(channel.get("min_severity", "info"))


# -- the message -------------------------------------------------------------------------------------------------

#: Link key -> how the message labels it, in this order.
LINK_LABELS = {"mlflow_run": "MLflow run", "mlflow_model_version": "MLflow model version",
               "airflow_log": "Airflow task log", "report": "Check report", "record": "Rollout record"}


@dataclass(frozen=True)
class Alert:
    """One alert: what happened to which model version, why, and where to look."""

    event: str
    severity: str
    subject: str
    model: str
    version: str | None
    reason: str
    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    try_number: int | None = None
    at: str = ""
    links: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def attributes(self) -> dict[str, str]:
        """Flat string attributes (SNS message attributes, for subscription filter policies)."""
        values = {"event": self.event, "severity": self.severity, "model": self.model, "version": self.version,
                  "dag_id": self.dag_id}
        return {k: str(v) for k, v in values.items() if v not in (None, "")}


def _subject(text: str) -> str:
    text = " ".join(text.split())
    text = "".join(c if 32 <= ord(c) < 127 else "?" for c in text)
    return text if len(text) <= SUBJECT_LIMIT else text[:SUBJECT_LIMIT - 3] + "..."


def _plain(value: Any) -> Any:
    """JSON-safe copy of details (anything else becomes its string)."""
    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return str(value)


def build_alert(outcome: Mapping[str, Any]) -> Alert:
    """The alert for an outcome: ``event`` (one of :data:`EVENTS`), ``model``, ``reason``, optional ``version``,
    ``dag_id``/``run_id``/``task_id``/``try_number``, ``links`` (:data:`LINK_LABELS` keys or others -> URL; empty
    ones dropped), ``details`` (small JSON), ``at`` (ISO time; default now) and ``severity`` (default the event's).
    """
    event = str(outcome.get("event"))
    if event not in EVENTS:
        raise SpecError("outcome.event", f"one of {tuple(EVENTS)}", outcome.get("event"))
    severity, template = EVENTS[event]
    severity = outcome.get("severity") or severity
    if severity not in SEVERITIES:
        raise SpecError("outcome.severity", f"one of {SEVERITIES}", severity)
    model = str(outcome.get("model") or "").strip()
    if not model:
        raise SpecError("outcome.model", "the model the alert is about", outcome.get("model"))
    reason = " ".join(str(outcome.get("reason") or "").split()) or "(no reason recorded)"
    version = outcome.get("version")
    version = None if version in (None, "", "None") else str(version)
    task, dag = outcome.get("task_id"), outcome.get("dag_id")
    subject = template.format(model=model, version=version or "?", task=task or "task", dag=dag or "dag",
                              at_version=f" v{version}" if version else "",
                              for_model=f" ({model}{' v' + version if version else ''})")
    links = {str(k): str(v) for k, v in (outcome.get("links") or {}).items() if v}
    try_number = outcome.get("try_number")
    return Alert(event=event, severity=severity, subject=_subject(f"[mlops {severity}] {subject}"), model=model,
                 version=version, reason=reason, dag_id=dag, run_id=outcome.get("run_id"), task_id=task,
                 try_number=int(try_number) if try_number not in (None, "") else None,
                 at=str(outcome.get("at") or datetime.now(timezone.utc).isoformat(timespec="seconds")),
                 links=links, details=_plain(dict(outcome.get("details") or {})))


def render_text(alert: Alert) -> str:
    """The message a person reads (SNS e-mail, Slack, the log): what, model, version, reason, where, links."""
    lines = [alert.subject, "", f"model:    {alert.model}", f"version:  {alert.version or '(none)'}",
             f"reason:   {alert.reason}", f"event:    {alert.event} ({alert.severity})"]
    if alert.dag_id:
        where = f"{alert.dag_id} / {alert.run_id}"
        if alert.task_id:
            where += f" / {alert.task_id}" + (f" (try {alert.try_number})" if alert.try_number else "")
        lines.append(f"airflow:  {where}")
    lines.append(f"at:       {alert.at}")
    if alert.links:
        lines += ["", "links:"]
        ordered = [k for k in LINK_LABELS if k in alert.links] + [k for k in alert.links if k not in LINK_LABELS]
        width = max(len(LINK_LABELS.get(k, k)) for k in ordered)
        lines += [f"  {LINK_LABELS.get(k, k).ljust(width)}  {alert.links[k]}" for k in ordered]
    if alert.details:
        lines += ["", "details:"]
        lines += [f"  {k}: {json.dumps(v) if not isinstance(v, str) else v}" for k, v in alert.details.items()]
    return "\n".join(lines) + "\n"


def render_html(alert: Alert) -> str:
    """The same text for e-mail (preformatted, escaped)."""
    from html import escape

    return f"<pre>{escape(render_text(alert))}</pre>"
