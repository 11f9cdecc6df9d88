"""Assets the reference DAGs share: one definition, so producers and the DAGs scheduled on them agree.

Their URIs use an ``x-`` scheme: Airflow skips provider URI normalisers for those, which would otherwise load
every provider's asset handlers (and boto3) while a DAG file is parsed.

``mlops_training_data`` gets an Asset watcher when the ``mlops_training_data_queue`` Variable names an SQS queue
that S3 notifies (see docs/data-landing.md); unset (a laptop), it has none and events come from producers or
``POST /api/v2/assets/events``. That Variable is the one read at parse time (one lookup per parse of a DAG file
that imports this module).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from airflow.sdk import Asset, AssetWatcher

#: Variable naming the SQS queue S3 notifies when data lands: a queue URL, or a JSON object with ``queue_url``
#: and optionally ``aws_conn_id``, ``region_name``, ``bucket``, ``prefix``, ``suffixes``. Unset, empty or ``off``:
#: no watcher (``off`` is a value a secrets backend can hold and Airflow's secrets cache can keep; a missing
#: Variable is looked up again at every parse). Also settable as ``AIRFLOW_VAR_MLOPS_TRAINING_DATA_QUEUE``.
TRAINING_DATA_QUEUE_VARIABLE = "mlops_training_data_queue"
TRAINING_DATA_WATCHER = "mlops_training_data_s3_landing"
_OFF = ("", "off", "none")
_WATCH_KEYS = {"queue_url", "aws_conn_id", "region_name", "bucket", "prefix", "suffixes"}


def landing_watch_settings(value: str | None) -> dict[str, Any] | None:
    """The S3 landing trigger's arguments from the Variable's value (None: no watcher); raises on a bad value.

    :param value: a queue URL, or a JSON object (see :data:`TRAINING_DATA_QUEUE_VARIABLE`).
    """
    text = (value or "").strip()
    if text.lower() in _OFF:
        return None
    where = f"Variable {TRAINING_DATA_QUEUE_VARIABLE}"
    if text.startswith("{"):
        try:
            spec = json.loads(text)
        except ValueError as err:
            raise ValueError(f"{where}: a queue URL or a JSON object ({err})") from None
        unknown = sorted(set(spec) - _WATCH_KEYS)
        if unknown or not spec.get("queue_url"):
            raise ValueError(f"{where}: a JSON object needs queue_url and may have {sorted(_WATCH_KEYS)}; "
                             f"got keys {sorted(spec)}")
    else:
        spec = {"queue_url": text}
    settings = {k: v for k, v in spec.items() if k != "queue_url"}
    settings["sqs_queue"] = spec["queue_url"]
    settings.setdefault("aws_conn_id", "aws_default")
    return settings


def training_data_watchers(value: str | None) -> list[AssetWatcher]:
    """The ``mlops_training_data`` watchers the Variable's value asks for: one S3 landing watcher, or none."""
    settings = landing_watch_settings(value)
    if settings is None:
        return []
    from airflow_mlops.triggers.data_landing import S3DataLandingTrigger

    try:
        trigger = S3DataLandingTrigger(**settings)
    except (TypeError, ValueError) as err:
        raise ValueError(f"Variable {TRAINING_DATA_QUEUE_VARIABLE}: {err}") from None
    return [AssetWatcher(name=TRAINING_DATA_WATCHER, trigger=trigger)]


def _queue_setting() -> str | None:
    from airflow.sdk import Variable

    return Variable.get(TRAINING_DATA_QUEUE_VARIABLE, default=None)


#: New training data landed (an upstream DAG's outlet, the S3 landing watcher, or ``POST /api/v2/assets/events``);
#: the event's ``extra`` carries ``{"uri": "s3://.../data.parquet"}`` (``{"payload": {"uri": ...}}`` from the
#: watcher), which the training pipeline trains on.
TRAINING_DATA = Asset(name="mlops_training_data", uri="x-mlops://training-data",
                      watchers=training_data_watchers(_queue_setting()))

#: Someone (the drift monitor, a person) asks for retraining; the event's ``extra`` says why.
RETRAINING_REQUESTED = Asset(name="mlops_retraining_requested", uri="x-mlops://retraining-requested")


def event_data_uri(extra: Mapping[str, Any] | None) -> str:
    """The data URI an asset event's ``extra`` names: ``extra["uri"]`` (producers, the REST API), else
    ``extra["payload"]["uri"]`` (an Asset watcher's event: Airflow stores the trigger event's payload there)."""
    extra = extra or {}
    uri = extra.get("uri")
    if not uri and isinstance(extra.get("payload"), Mapping):
        uri = extra["payload"].get("uri")
    return str(uri) if uri else ""


def training_data_uri(events: Any) -> str:
    """The data a ``mlops_training_data`` event announced: the newest event's data URI ("" if none).

    :param events: the run's ``triggering_asset_events`` (empty for scheduled and manual runs).
    """
    if not events:
        return ""
    try:
        found = list(events[TRAINING_DATA])
    except KeyError:
        return ""
    for event in sorted(found, key=lambda e: getattr(e, "timestamp", 0), reverse=True):
        uri = event_data_uri(getattr(event, "extra", None))
        if uri:
            return uri
    return ""
