"""Extra links from a task to MLflow."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperatorLink

RUN_URL_KEY = "mlflow_run_url"


class MlflowRunLink(BaseOperatorLink):
    """"MLflow run": the run this task trained or registered from (URL stored in XCom by the operator)."""

    name = "MLflow run"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        return str(XCom.get_value(ti_key=ti_key, key=RUN_URL_KEY) or "")
