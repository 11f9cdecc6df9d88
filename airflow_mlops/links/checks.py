"""Extra link from a checks task to its HTML report."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperatorLink

REPORT_URL_KEY = "check_report_url"


class CheckReportLink(BaseOperatorLink):
    """"Check report": the deepchecks HTML report this task wrote (URL stored in XCom by the operator)."""

    name = "Check report"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        return str(XCom.get_value(ti_key=ti_key, key=REPORT_URL_KEY) or "")
