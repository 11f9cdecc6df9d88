"""Assets the reference DAGs share: one definition, so producers and the DAGs scheduled on them agree.

Their URIs use an ``x-`` scheme: Airflow skips provider URI normalisers for those, which would otherwise load
every provider's asset handlers (and boto3) while a DAG file is parsed.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset

#: New training data landed (an upstream DAG's outlet, an S3-event bridge, or ``POST /api/v2/assets/events``);
#: the event's ``extra`` carries ``{"uri": "s3://.../data.parquet"}``, which the training pipeline trains on.
TRAINING_DATA = Asset(name="mlops_training_data", uri="x-mlops://training-data")

#: Someone (the drift monitor, a person) asks for retraining; the event's ``extra`` says why.
RETRAINING_REQUESTED = Asset(name="mlops_retraining_requested", uri="x-mlops://retraining-requested")


def training_data_uri(events: Any) -> str:
    """The data a ``mlops_training_data`` event announced: the newest event's ``extra["uri"]`` ("" if none).

    :param events: the run's ``triggering_asset_events`` (empty for scheduled and manual runs).
    """
    if not events:
        return ""
    try:
        found = list(events[TRAINING_DATA])
    except KeyError:
        return ""
    for event in sorted(found, key=lambda e: getattr(e, "timestamp", 0), reverse=True):
        uri = (getattr(event, "extra", None) or {}).get("uri")
        if uri:
            return str(uri)
    return ""
