"""The one configuration surface: which runtime, artifact store, connections and images a DAG uses.

DAG files never change between a laptop and MWAA + EKS; these settings do. Each comes from an Airflow
Variable (``mlops_<name>``; also settable as ``AIRFLOW_VAR_MLOPS_<NAME>``) and has a laptop default.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from airflow_mlops.core.errors import SpecError
from airflow_mlops.core.lineage import check_artifact_root
from airflow_mlops.core.step import check_runtime

DEFAULT_IMAGE = "airflow-mlops/trainer:0.1.0"
DEFAULT_CHECKS_IMAGE = "airflow-mlops/checks:0.1.0"

#: Variable name -> (default, what it selects). The README's settings table is generated from this.
SETTINGS: Mapping[str, tuple[str, str]] = {
    "mlops_runtime": ("local", "where steps run: `local` (subprocess) or `kubernetes` (pod / Indexed Job)"),
    "mlops_artifact_root": ("$MLOPS_HOME/artifacts", "artifact store: absolute path or `s3://bucket/prefix`"),
    "mlops_mlflow_conn_id": ("mlflow_default", "MLflow connection; if absent, the embedded SQLite store"),
    "mlops_kubernetes_conn_id": ("kubernetes_default", "Kubernetes connection used by the kubernetes runtime"),
    "mlops_namespace": ("", "namespace for step pods (empty: the connection's namespace, else `default`)"),
    "mlops_image": (DEFAULT_IMAGE, "default image for steps on Kubernetes (pin a digest in production)"),
    "mlops_mlflow_secret": ("", "Kubernetes Secret holding MLflow credentials for pods (`token` or "
                                "`username`/`password` keys); empty: none"),
    "mlops_deferrable": ("true", "defer while pods run (frees the worker slot)"),
    "mlops_git_sha": ("", "git sha recorded on runs (CI sets it on deploy); empty: `git rev-parse` if possible"),
    "mlops_checks_image": (DEFAULT_CHECKS_IMAGE, "image for data/model checks on Kubernetes (pinned deepchecks; "
                                                 "`docker/checks.Dockerfile`)"),
    "mlops_serving_image": ("", "serving image for the kubernetes and kserve rollout targets when the target config "
                                "names none (the deploy sets it to the digest CI built); empty: the target's default"),
    "mlops_automation_level": ("auto", "promotion after a passing comparison: `auto`, or `approve` (a person "
                                       "approves in the Airflow UI, HITL)"),
    "mlops_rollout_target": ("local", "where models roll out: `local` (router + MLflow scoring servers), "
                                      "`kubernetes`, `kserve` or `sagemaker`"),
    "mlops_rollout_target_config": ("{}", "JSON settings of that target (namespace, gateway, image, instance type, "
                                          "execution role, aws_conn_id...); see the rollout section"),
    "mlops_rollout_analysis_settings": ("{}", "JSON settings of the rollout analysis providers: `prometheus_url` "
                                              "(required for Prometheus metrics on Kubernetes/KServe), `aws` "
                                              "(boto3 options for CloudWatch, e.g. `region_name`)"),
    "mlops_inference_log_uri": ("$MLOPS_HOME/rollout/{endpoint}/inference.jsonl",
                                "captured traffic the drift monitor reads (`{model}`, `{endpoint}` filled in): the "
                                "local router's log, or a SageMaker Data Capture prefix (`s3://.../{endpoint}/`)"),
    "mlops_alerts": ("", "JSON list of alert channels (`sns`, `slack`, `smtp`, `log`, `file`); empty: log + "
                         "`$MLOPS_HOME/alerts/alerts.jsonl` (README \"Alerts\")"),
    "mlops_training_data_queue": ("", "SQS queue URL (or JSON with queue_url, aws_conn_id, bucket, prefix, suffixes) "
                                      "that S3 notifies when training data lands: the `mlops_training_data` Asset "
                                      "watcher starts the pipeline (read at parse time; docs/data-landing.md); "
                                      "empty: no watcher"),
    "mlops_checks_python": ("", "interpreter for checks on the local runtime; empty: the venv built from the "
                                "checks lock, cached under `~/.cache/airflow-mlops`"),
}


def mlops_home(env: Mapping[str, str] | None = None) -> str:
    """Root of the embedded laptop stack: ``$MLOPS_HOME`` or ``~/.airflow-mlops``."""
    env = os.environ if env is None else env
    return os.path.abspath(os.path.expanduser(env.get("MLOPS_HOME") or "~/.airflow-mlops"))


@dataclass(frozen=True)
class MlopsConfig:
    """Resolved settings for one task execution."""

    runtime: str
    artifact_root: str
    mlflow_conn_id: str
    kubernetes_conn_id: str
    namespace: str | None
    image: str
    mlflow_secret: str | None
    deferrable: bool
    git_sha: str | None
    checks_image: str = DEFAULT_CHECKS_IMAGE
    checks_python: str | None = None
    serving_image: str | None = None

    @classmethod
    def resolve(cls, lookup: Callable[[str], str | None], env: Mapping[str, str] | None = None) -> MlopsConfig:
        """Build from a Variable lookup (returns None when unset); validates every value it reads."""

        def get(name: str) -> str:
            value = lookup(name)
            default = SETTINGS[name][0].replace("$MLOPS_HOME", mlops_home(env))
            return default if value is None or str(value).strip() == "" else str(value).strip()

        deferrable = get("mlops_deferrable").lower()
        if deferrable not in ("true", "false", "1", "0", "yes", "no"):
            raise SpecError("Variable mlops_deferrable", "true or false", deferrable)
        return cls(
            runtime=check_runtime(get("mlops_runtime"), "Variable mlops_runtime"),
            artifact_root=check_artifact_root(get("mlops_artifact_root")),
            mlflow_conn_id=get("mlops_mlflow_conn_id"),
            kubernetes_conn_id=get("mlops_kubernetes_conn_id"),
            namespace=get("mlops_namespace") or None,
            image=get("mlops_image"),
            mlflow_secret=get("mlops_mlflow_secret") or None,
            deferrable=deferrable in ("true", "1", "yes"),
            git_sha=get("mlops_git_sha") or None,
            checks_image=get("mlops_checks_image"),
            checks_python=get("mlops_checks_python") or None,
            serving_image=get("mlops_serving_image") or None,
        )
