"""airflow-mlops: Airflow provider for production MLOps. Importing this package is cheap (no heavy imports)."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def get_provider_info() -> dict[str, Any]:
    """Provider metadata read by Airflow's ProvidersManager through the ``apache_airflow_provider`` entry point."""
    return {
        "package-name": "airflow-mlops",
        "name": "MLOps",
        "description": "GPU training on Kubernetes, data/model checks, MLflow registry promotion and progressive "
        "rollout, with reference DAGs that ship to Amazon MWAA.",
        "versions": [__version__],
        "connection-types": [
            {"connection-type": "mlflow", "hook-class-name": "airflow_mlops.hooks.mlflow.MlflowHook"},
        ],
        "extra-links": [
            "airflow_mlops.links.mlflow.MlflowRunLink",
            "airflow_mlops.links.checks.CheckReportLink",
        ],
        "triggers": [
            {"integration-name": "MLOps progressive rollout", "python-modules": ["airflow_mlops.triggers.rollout"]},
        ],
    }
