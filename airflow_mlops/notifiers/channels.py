"""Deliver alerts through Airflow notifiers, to the channels the ``mlops_alerts`` Variable names.

- :func:`emit_alert`: operators call it where an outcome is decided (rollback, drift, a failed gate, a reject).
- :class:`AlertOnFailure`: an ``on_failure_callback`` for any task (a failed training run, a crash); it stays
  silent when the task already emitted its own alert.
- :func:`check_alert_channels`: a ``pre_execute`` hook: a bad channel config, or a channel whose provider is not
  installed, fails the task at start (naming the channel and the package) rather than when there is news.

Channels: ``log`` and ``file`` (JSONL; the laptop default, under ``$MLOPS_HOME/alerts/``) are ours; ``sns`` is the
amazon provider's ``SnsNotifier``, ``slack`` the slack provider's ``SlackNotifier`` / ``SlackWebhookNotifier``,
``smtp`` the smtp provider's ``SmtpNotifier``, each imported only when a channel of that kind is used. Delivery
never changes a task's outcome: a channel that fails is logged (ERROR) and the others still get the alert.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, MutableMapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from airflow.sdk.bases.notifier import BaseNotifier
from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops.core.errors import SpecError
from airflow_mlops.notifiers.alerts import (
    PROVIDER_PACKAGES,
    VARIABLE,
    Alert,
    build_alert,
    render_html,
    render_text,
    validate_channels,
    wants,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

log = logging.getLogger(__name__)

#: Context keys: facts a task recorded for a later failure alert, and "this task alerted already".
FACTS_KEY = "mlops_alert_facts"
SENT_KEY = "mlops_alert_sent"


class ChannelUnavailable(AirflowFailException):
    """A configured channel cannot be used here (its provider package is missing)."""


def load_channels() -> tuple[dict[str, Any], ...]:
    """The channels of the ``mlops_alerts`` Variable (or ``AIRFLOW_VAR_MLOPS_ALERTS``), validated; unset: defaults."""
    from airflow.sdk import Variable

    raw = Variable.get(VARIABLE, default=None)
    try:
        return validate_channels(raw)
    except SpecError as err:
        raise AirflowFailException(f"invalid alert configuration: {err}") from err


def _provider_notifier(channel: Mapping[str, Any]) -> type[BaseNotifier]:
    """The provider's notifier class for a channel, imported now; a missing provider names the package."""
    kind = channel["kind"]
    try:
        if kind == "sns":
            from airflow.providers.amazon.aws.notifications.sns import SnsNotifier

            return SnsNotifier
        if kind == "smtp":
            from airflow.providers.smtp.notifications.smtp import SmtpNotifier

            return SmtpNotifier
        if kind == "slack" and channel.get("slack_webhook_conn_id"):
            from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

            return SlackWebhookNotifier
        if kind == "slack":
            from airflow.providers.slack.notifications.slack import SlackNotifier

            return SlackNotifier
    except ImportError as err:
        package = PROVIDER_PACKAGES[kind]
        raise ChannelUnavailable(
            f"alert channel {channel['name']!r} (kind {kind}) needs the {package} package, which is not installed "
            f"here ({err}): add {package} to the environment's requirements, or remove the channel from the "
            f"{VARIABLE} Variable") from err
    raise ValueError(f"no provider notifier for kind {kind!r}")


def check_alert_channels(context: Context | None = None) -> tuple[dict[str, Any], ...]:
    """Validate the alert channels and import their providers (a ``pre_execute`` hook: fails the task at start)."""
    channels = load_channels()
    for channel in channels:
        if channel["kind"] in PROVIDER_PACKAGES:
            _provider_notifier(channel)
    return channels


class LogAlertNotifier(BaseNotifier):
    """Writes the alert to the task log (the ``log`` channel)."""

    def __init__(self, *, message: str, level: str = "warning", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.message = message
        self.level = level

    def notify(self, context: Context) -> None:
        level = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}[self.level]
        self.log.log(level, "ALERT\n%s", self.message)


class FileAlertNotifier(BaseNotifier):
    """Appends the alert as one JSON line to a file (the ``file`` channel; ``make demo`` shows them)."""

    def __init__(self, *, path: str, record: Mapping[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = path
        self.record = dict(record)

    def notify(self, context: Context) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        line = (json.dumps(self.record, sort_keys=True, default=str) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)  # one write on an O_APPEND file: lines from parallel tasks do not interleave
        finally:
            os.close(fd)


def notifier_for(channel: Mapping[str, Any], alert: Alert) -> BaseNotifier:
    """The notifier that delivers ``alert`` to ``channel`` (a validated channel dict)."""
    kind, text = channel["kind"], render_text(alert)
    if kind == "log":
        return LogAlertNotifier(message=text, level=channel.get("level", "warning"))
    if kind == "file":
        return FileAlertNotifier(path=channel["path"], record={**alert.to_dict(), "text": text})
    cls: Any = _provider_notifier(channel)
    if kind == "sns":
        message = json.dumps(alert.to_dict(), sort_keys=True) if channel.get("format") == "json" else text
        return cls(aws_conn_id=channel.get("aws_conn_id", "aws_default"), target_arn=channel["topic_arn"],
                   message=message, subject=alert.subject, message_attributes=alert.attributes(),
                   region_name=channel.get("region_name"))
    if kind == "smtp":
        return cls(to=channel["to"], from_email=channel.get("from_email"), subject=alert.subject,
                   html_content=render_html(alert), smtp_conn_id=channel.get("smtp_conn_id"))
    if channel.get("slack_webhook_conn_id"):
        return cls(slack_webhook_conn_id=channel["slack_webhook_conn_id"], text=f"```{text}```")
    return cls(slack_conn_id=channel["slack_conn_id"], channel=channel["channel"], text=f"```{text}```")


def deliver(alert: Alert, context: Context | Mapping[str, Any],
            channels: tuple[dict[str, Any], ...] | None = None) -> dict[str, str]:
    """Send ``alert`` to every channel that wants it; returns channel name -> ``sent`` or the error."""
    try:
        channels = load_channels() if channels is None else channels
    except AirflowFailException as err:
        log.error("alert not sent (%s): %s", err, alert.subject)
        return {VARIABLE: str(err)}
    results: dict[str, str] = {}
    for channel in channels:
        if not wants(channel, alert):
            continue
        try:
            # notify(), not __call__: the message is data, never a Jinja template to render.
            notifier_for(channel, alert).notify(context)  # type: ignore[arg-type]
            results[channel["name"]] = "sent"
        except Exception as err:
            log.error("alert channel %r (%s) failed: %s", channel["name"], channel["kind"], err)
            results[channel["name"]] = f"failed: {err}"
    return results


# -- from a task -------------------------------------------------------------------------------------------------


def _where(context: Mapping[str, Any]) -> dict[str, Any]:
    ti = context.get("ti")
    if ti is None:
        return {}
    out: dict[str, Any] = {"dag_id": getattr(ti, "dag_id", None), "run_id": getattr(ti, "run_id", None),
                           "task_id": getattr(ti, "task_id", None), "try_number": getattr(ti, "try_number", None)}
    try:
        out["airflow_log"] = ti.log_url
    except Exception:  # a TaskInstance without a base URL configured still alerts
        out["airflow_log"] = None
    map_index = getattr(ti, "map_index", None)
    if isinstance(map_index, int) and map_index >= 0:
        out["task_id"] = f"{out['task_id']}[{map_index}]"
    return out


def mlflow_links(hook: Any, model: str | None = None, version: str | None = None,
                 run_id: str | None = None) -> dict[str, str]:
    """MLflow UI links for a model version and/or run (best effort: an alert goes out without them)."""
    links: dict[str, str] = {}
    try:
        if model and version:
            links["mlflow_model_version"] = hook.model_version_url(model, str(version)) or ""
            if not run_id:
                run_id = hook.get_model_version(model, str(version)).run_id
        if run_id:
            run = hook.get_client().get_run(run_id)
            links["mlflow_run"] = hook.run_url(run.info.experiment_id, run_id) or ""
    except Exception as err:
        log.warning("no MLflow links for the alert (%s)", err)
    return {k: v for k, v in links.items() if v}


def remember(context: Context | MutableMapping[str, Any], **facts: Any) -> None:
    """Record facts (``model``, ``version``, ``links``) for a failure alert this task may send later."""
    store = context.setdefault(FACTS_KEY, {})  # type: ignore[misc]
    links = {**store.get("links", {}), **(facts.pop("links", None) or {})}
    store.update({k: v for k, v in facts.items() if v not in (None, "")}, links=links)


def emit_alert(context: Context | MutableMapping[str, Any], *, event: str, model: str, reason: str,
               version: str | None = None, links: Mapping[str, str | None] | None = None,
               details: Mapping[str, Any] | None = None) -> Alert | None:
    """Build the alert for an outcome this task decided and deliver it; never raises (the outcome stands)."""
    ctx: MutableMapping[str, Any] = context  # type: ignore[assignment]
    try:
        where = _where(ctx)
        facts = ctx.get(FACTS_KEY) or {}
        alert = build_alert({
            "event": event, "model": model, "version": version, "reason": reason, **where,
            "links": {**facts.get("links", {}), "airflow_log": where.get("airflow_log"), **(links or {})},
            "details": details or {}})
    except Exception as err:
        log.error("could not build the %s alert for %s v%s: %s", event, model, version, err)
        return None
    results = deliver(alert, ctx)
    ctx[SENT_KEY] = alert.event
    log.info("alert %s (%s): %s", alert.event, ", ".join(f"{k} {v}" for k, v in results.items()) or "no channel",
             alert.subject)
    return alert


class AlertOnFailure(BaseNotifier):
    """``on_failure_callback``: alert that a task failed for good (after its retries), naming the model, the
    version when known, the error, the MLflow run (when the task recorded it) and the task's log.

    Silent when the task already emitted an alert for its own outcome (a rollback, a failed checks gate).

    :param event: ``task_failed`` (default) or ``training_failed`` (for training tasks).
    :param model: the model; default the DAG run's ``model_name`` param, else the DAG id.
    """

    def __init__(self, event: str = "task_failed", model: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if event not in ("task_failed", "training_failed"):
            raise SpecError("AlertOnFailure.event", "task_failed or training_failed", event)
        self.event = event
        self.model = model

    def notify(self, context: Context) -> None:
        ctx: Mapping[str, Any] = context  # type: ignore[assignment]
        if ctx.get(SENT_KEY):
            return
        facts = ctx.get(FACTS_KEY) or {}
        params = ctx.get("params") or {}
        model = self.model or facts.get("model") or params.get("model_name") or ctx["ti"].dag_id
        error = ctx.get("exception")
        reason = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error or "failed")
        emit_alert(context, event=self.event, model=str(model), version=facts.get("version"), reason=reason[:2000])


#: ``default_args`` for a DAG that alerts: a task that fails for good alerts; the channels are checked at task start.
ALERTS: Mapping[str, Any] = MappingProxyType({"on_failure_callback": AlertOnFailure(),
                                              "pre_execute": check_alert_channels})
