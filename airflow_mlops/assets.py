"""Assets the reference DAGs share: one definition, so producers and the DAGs scheduled on them agree.

Their URIs use an ``x-`` scheme: Airflow skips provider URI normalisers for those, which would otherwise load
every provider's asset handlers (and boto3) while a DAG file is parsed.
"""

from __future__ import annotations

from airflow.sdk import Asset

#: New training data landed (an upstream DAG's outlet, an S3-event bridge, or ``POST /api/v2/assets/events``).
TRAINING_DATA = Asset(name="mlops_training_data", uri="x-mlops://training-data")

#: Someone (the drift monitor, a person) asks for retraining; the event's ``extra`` says why.
RETRAINING_REQUESTED = Asset(name="mlops_retraining_requested", uri="x-mlops://retraining-requested")
