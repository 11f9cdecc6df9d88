"""Extra links from a task to MLflow: the run and the model version (URLs stored in XCom by the operators)."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperatorLink

RUN_URL_KEY = "mlflow_run_url"
MODEL_VERSION_URL_KEY = "mlflow_model_version_url"


def _xcom_link(ti_key: Any, key: str) -> str:
    from airflow.sdk.execution_time.xcom import XCom

    return str(XCom.get_value(ti_key=ti_key, key=key) or "")


class MlflowRunLink(BaseOperatorLink):
    """"MLflow run": the run this task trained or registered from (URL stored in XCom by the operator)."""

    name = "MLflow run"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        return _xcom_link(ti_key, RUN_URL_KEY)


class MlflowModelVersionLink(BaseOperatorLink):
    """"MLflow model version": the version this task registered, compared, promoted or rolled back to."""

    name = "MLflow model version"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        return _xcom_link(ti_key, MODEL_VERSION_URL_KEY)
