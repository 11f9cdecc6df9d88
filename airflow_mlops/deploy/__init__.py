"""Ship to Amazon MWAA: bundle, validate, incremental S3 sync and environment update (the ``airflow-mlops`` CLI).

This package runs in CI without Airflow: it never imports airflow at module level (DAG imports happen in a child
process, see ``validate``) and boto3 only inside functions. Nothing else in airflow_mlops imports it.
"""

from __future__ import annotations

# Where MWAA unpacks the bucket's DAGs folder and plugins.zip on its containers.
MWAA_DAGS_ROOT = "/usr/local/airflow/dags"
MWAA_PLUGINS_ROOT = "/usr/local/airflow/plugins"
# Object metadata key holding the sha256 of an uploaded file's content (S3 returns it as x-amz-meta-sha256).
HASH_METADATA_KEY = "sha256"


class DeployError(Exception):
    """A deploy step failed; the message says what to fix."""
