"""Airflow plugin shipped to MWAA in plugins.zip: Jinja macros over the airflow-mlops configuration surface.

In templates: ``{{ macros.airflow_mlops.artifact_uri('datasets', params.dataset) }}`` or
``{{ macros.airflow_mlops.runtime() }}``. Values are read when the template renders (task run time), never at parse.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin


def artifact_uri(*parts: str) -> str:
    """A URI under the configured artifact root (``mlops_artifact_root``: local dir or s3://)."""
    from airflow_mlops.core.lineage import join_uri
    from airflow_mlops.hooks.config import load_config

    return join_uri(load_config().artifact_root, *parts)


def runtime() -> str:
    """The configured step runtime: ``local`` or ``kubernetes``."""
    from airflow_mlops.hooks.config import load_config

    return load_config().runtime


def model_uri(name: str, alias_or_version: str | int) -> str:
    """``models:/<name>@<alias>`` for an alias, ``models:/<name>/<version>`` for a version number."""
    ref = str(alias_or_version)
    return f"models:/{name}/{ref}" if ref.isdigit() else f"models:/{name}@{ref}"


def inference_log_uri(model_name: str) -> str:
    """Where the served model's captured traffic lives: the ``mlops_inference_log_uri`` Variable (``{model}`` and
    ``{endpoint}`` filled in; e.g. a SageMaker Data Capture prefix), else the local router's log."""
    import os

    from airflow.sdk import Variable

    from airflow_mlops.core.config import mlops_home

    configured = Variable.get("mlops_inference_log_uri", default=None)
    if configured:
        return str(configured).replace("{model}", model_name).replace("{endpoint}", endpoint_name(model_name))
    return os.path.join(mlops_home(), "rollout", endpoint_name(model_name), "inference.jsonl")


def endpoint_name(model_name: str) -> str:
    """The endpoint a model rolls out to by default (a DNS label): also the local router's state directory."""
    from airflow_mlops.core.lineage import endpoint_name as name

    return name(model_name)


class AirflowMlopsPlugin(AirflowPlugin):
    """Registers the ``airflow_mlops`` macros."""

    name = "airflow_mlops"
    macros = [artifact_uri, runtime, model_uri, inference_log_uri, endpoint_name]
