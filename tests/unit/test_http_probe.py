"""The HTTP probe against a real local HTTP server answering like the MLflow scoring server does."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from airflow_mlops.core.rollout import MetricCheck
from airflow_mlops.rollout.analysis.http_probe import HttpProbe
from airflow_mlops.rollout.targets.base import Backend


@pytest.fixture
def server() -> Iterator[dict[str, Any]]:
    """Answers each POST with ``state["answer"]`` and records the bodies it was sent."""
    state: dict[str, Any] = {"answer": {"predictions": [[0.2, 0.8]]}, "bodies": []}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            state["bodies"].append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            body = json.dumps(state["answer"]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield state
    httpd.shutdown()
    httpd.server_close()


def test_sanity_rule_holds_for_every_class_probability(server: dict[str, Any]) -> None:
    import pandas as pd

    from airflow_mlops.steps.signature import InputContract

    payload = InputContract(("a", "b"), ("float64", "float64")).request_body(pd.DataFrame({"b": [2], "a": [1]}))
    metric = MetricCheck(name="sanity", provider="http_probe", query="sanity_ratio", success_condition="result >= 1",
                         params={"samples": 2, "payload": payload, "sanity": "0 <= prediction <= 1"})
    backend = Backend("v1", "1", server["url"])
    assert HttpProbe().query(metric, backend, {}) == 1.0
    assert server["bodies"][0] == {"dataframe_split": {"columns": ["a", "b"], "data": [[1.0, 2.0]]}}
    server["answer"] = {"predictions": [[-0.5, 1.5]]}  # not probabilities
    assert HttpProbe().query(metric, backend, {}) == 0.0
    server["answer"] = {"predictions": [0.7, 0.1]}  # one score per row still works
    assert HttpProbe().query(metric, backend, {}) == 1.0
