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
            {
                "connection-type": "mlflow", "hook-class-name": "airflow_mlops.hooks.mlflow.MlflowHook",
                "hook-name": "MLflow",
                # Declarative form (Airflow 3.2+ deprecates get_connection_form_widgets); saved in the extra.
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port"],
                    "relabeling": {"host": "Tracking URI", "login": "Username (basic auth)",
                                   "password": "Password (basic auth)"},
                    "placeholders": {"host": "https://mlflow.example.com, or empty with a Databricks host"},
                },
                "conn-fields": {
                    "auth_type": {"label": "Auth", "description": "none, basic (login/password) or bearer (token)",
                                  "schema": {"type": ["string", "null"], "enum": ["none", "basic", "bearer", None]}},
                    "token": {"label": "Bearer token", "schema": {"type": ["string", "null"], "format": "password"}},
                    "registry_uri": {"label": "Registry URI", "description": "when the registry is not the tracking "
                                     "server", "schema": {"type": ["string", "null"]}},
                    "databricks_host": {"label": "Databricks host", "schema": {"type": ["string", "null"]}},
                    "databricks_token": {"label": "Databricks token",
                                         "schema": {"type": ["string", "null"], "format": "password"}},
                    "ui_url": {"label": "MLflow UI URL", "schema": {"type": ["string", "null"]}},
                    "kubernetes_secret": {"label": "Kubernetes Secret with the credentials (for pods)",
                                          "schema": {"type": ["string", "null"]}},
                    "max_retries": {"label": "Retries on 5xx/timeouts", "schema": {"type": ["integer", "null"],
                                                                                 "minimum": 0}},
                    "backoff_factor": {"label": "First retry wait (s)", "schema": {"type": ["number", "null"],
                                                                                   "minimum": 0}},
                    "timeout": {"label": "Request timeout (s)", "schema": {"type": ["integer", "null"], "minimum": 1}},
                },
            },
        ],
        "extra-links": [
            "airflow_mlops.links.mlflow.MlflowRunLink",
            "airflow_mlops.links.mlflow.MlflowModelVersionLink",
            "airflow_mlops.links.checks.CheckReportLink",
        ],
        "triggers": [
            {"integration-name": "MLOps progressive rollout", "python-modules": ["airflow_mlops.triggers.rollout"]},
            {"integration-name": "MLflow", "python-modules": ["airflow_mlops.triggers.mlflow"]},
        ],
        "sensors": [
            {"integration-name": "MLflow", "python-modules": ["airflow_mlops.sensors.mlflow"]},
        ],
        "hooks": [
            {"integration-name": "MLflow", "python-modules": ["airflow_mlops.hooks.mlflow"]},
        ],
    }
