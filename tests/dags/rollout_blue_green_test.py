"""Test DAG: a blue-green rollout on the local target with short pauses."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Param

from airflow_mlops.core.rollout import AnalysisSpec, MetricCheck
from airflow_mlops.operators.rollout import BlueGreenRolloutOperator

PARAMS = {
    "model": Param("rollout_demo", type="string"),
    "candidate": Param("2", type="string"),
    "endpoint": Param("rollout-test", type="string"),
    "root": Param("", type="string"),
}
TARGET = {"kind": "local", "name": "{{ params.endpoint }}", "root": "{{ params.root }}"}

# 5xx share over each 0.5 s window, relative to the stable version; empty windows are inconclusive.
ERRORS = MetricCheck(name="error_rate", provider="router", query="error_ratio", interval_s=0.5, count=3,
                     success_condition="result <= stable * 1.5 + 0.05", failure_limit=0, inconclusive_limit=1)
P95 = MetricCheck(name="p95_latency", provider="router", query="latency_p95_seconds", interval_s=0.5, count=3,
                  success_condition="result <= stable * 5 + 0.5", inconclusive_limit=1)
PROBE = MetricCheck(name="probe", provider="http_probe", query="success_ratio", interval_s=0.5, count=2,
                    success_condition="result >= 0.99",
                    params={"samples": 10, "payload": {"dataframe_records": [{"x1": 1.0, "x2": 2.0}]},
                            "sanity": "0 <= prediction <= 1"})

with DAG("rollout_blue_green_test", schedule=None, start_date=dt.datetime(2025, 1, 1), catchup=False,
         params=PARAMS, tags=["test", "rollout"],
         doc_md="Blue-green on the local target: HTTP-probe the preview, switch, keep the old one 1 s.") as dag:
    BlueGreenRolloutOperator(
        task_id="blue_green", owner="mlops", retries=1, model_name="{{ params.model }}",
        candidate_version="{{ params.candidate }}", target=TARGET, preview_pause_s=1.2,
        preview_analysis=AnalysisSpec((PROBE,)), scale_down_delay_s=1.0, poll_s=0.2,
    )
