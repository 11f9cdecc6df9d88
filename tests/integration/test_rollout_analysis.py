"""Analysis providers and the router, over real HTTP: the router as its own process in front of two small
stdlib backends, CloudWatch GetMetricData through real boto3 against a moto server (``ThreadedMotoServer``),
and the HTTP probe. No Prometheus server can run here: the Prometheus provider is tested against a stdlib
HTTP server that answers ``/api/v1/query`` in the Prometheus API's JSON format (said so in its docstring), and
against a closed port.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from airflow_mlops.core.rollout import MetricCheck
from airflow_mlops.rollout.analysis import make_provider, measure
from airflow_mlops.rollout.targets.base import Backend
from airflow_mlops.rollout.targets.local import free_port

BACKENDS = {"candidate": Backend("v2", "2"), "stable": Backend("v1", "1")}


def _serve(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


class ModelBackend(BaseHTTPRequestHandler):
    """A stand-in model server: ``/fail`` servers answer 500 to every third request."""

    calls = 0

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).calls += 1
        failing = self.server.server_address[1] % 1 == 0 and getattr(self.server, "failing", False)
        status = 500 if failing and type(self).calls % 3 == 0 else 200
        body = json.dumps({"predictions": [0.7]}).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def router(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The router process with v1 (healthy) and v2 (every third request fails) behind it."""
    good, good_url = _serve(type("Good", (ModelBackend,), {"calls": 0}))
    bad, bad_url = _serve(type("Bad", (ModelBackend,), {"calls": 0}))
    bad.failing = True  # type: ignore[attr-defined]
    port = free_port()
    log = tmp_path / "inference.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "airflow_mlops.steps.router", "--port", str(port), "--routes",
                             str(tmp_path / "routes.json"), "--inference-log", str(log)])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=1)
            break
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    yield {"url": url, "backends": {"v1": good_url, "v2": bad_url}, "log": log, "routes": tmp_path / "routes.json"}
    proc.terminate()
    proc.wait(timeout=10)
    good.shutdown()
    bad.shutdown()


def _post(url: str, body: Any) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_router_splits_exactly_measures_and_logs(router: dict[str, Any]) -> None:
    status, _, _ = _post(f"{router['url']}/admin/routes", {"backends": router["backends"], "weights": {"v1": 80,
                                                                                                        "v2": 20}})
    assert status == 200
    served = [_post(f"{router['url']}/invocations", {"inputs": [[1.0]]}) for _ in range(100)]
    by_backend = [h["X-Mlops-Backend"] for _, h, _ in served]
    assert by_backend.count("v2") == 20  # smooth weighted round-robin: exact shares, interleaved
    assert max(len(run) for run in "".join("x" if b == "v2" else "." for b in by_backend).split(".")) == 1
    errors = MetricCheck(name="error_rate", provider="router", query="error_ratio", interval_s=30, count=1,
                         success_condition="result <= stable * 1.5 + 0.005")
    m = measure(errors, make_provider("router", {"router_url": router["url"]}), BACKENDS, "m", step=0)
    assert m.value == pytest.approx(sum(1 for s, h, _ in served if h["X-Mlops-Backend"] == "v2" and s == 500) / 20)
    assert m.value > 0.2 and m.baseline == 0.0 and m.outcome == "failed"
    lines = router["log"].read_text().splitlines()
    assert len(lines) == 100 and json.loads(lines[0])["request"] == {"inputs": [[1.0]]}
    # the table survives a router restart: it is written before it is applied
    assert json.loads(router["routes"].read_text())["weights"] == {"v1": 80, "v2": 20}
    text = urllib.request.urlopen(f"{router['url']}/metrics").read().decode()
    assert 'mlops_router_requests_total{backend="v2",code="500"}' in text


def test_router_rejects_bad_tables_and_missing_metrics_are_inconclusive(router: dict[str, Any]) -> None:
    for table in ({"backends": router["backends"], "weights": {"v1": 80, "v2": 30}},
                  {"backends": router["backends"], "weights": {"v3": 100}},
                  {"backends": router["backends"], "weights": {"v1": -5, "v2": 105}}):
        status, _, body = _post(f"{router['url']}/admin/routes", table)
        assert status == 400, body
    missing = MetricCheck(name="x", provider="router", query="no_such_metric", interval_s=1, count=1,
                          success_condition="result < 1")
    m = measure(missing, make_provider("router", {"router_url": router["url"]}), BACKENDS, "m", step=0)
    assert m.outcome == "inconclusive" and "no metric" in m.message
    dead = measure(missing, make_provider("router", {"router_url": f"http://127.0.0.1:{free_port()}"}), BACKENDS,
                   "m", step=0)
    assert dead.outcome == "inconclusive" and "unavailable" in dead.message


class FakePrometheus(BaseHTTPRequestHandler):
    """Answers ``/api/v1/query`` like Prometheus does (no Prometheus binary can run here): the error rate of the
    version named in the query's ``version="..."`` label; ``multi`` returns two series, ``broken`` an error."""

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        query = parse_qs(urlsplit(self.path).query)["query"][0]
        if "broken" in query:
            body, status = {"status": "error", "errorType": "bad_data", "error": "parse error"}, 400
        else:
            rates = {"1": "0.01", "2": "0.25"}
            series = [{"metric": {"version": v}, "value": [time.time(), rates[v]]} for v in rates
                      if f'version="{v}"' in query or "multi" in query]
            body, status = {"status": "success", "data": {"resultType": "vector", "result": series}}, 200
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


def test_prometheus_provider() -> None:
    server, url = _serve(FakePrometheus)
    try:
        metric = MetricCheck(name="errors", provider="prometheus",
                             query='sum(rate(errors{{version="{version}"}}[{window}s]))', interval_s=30, count=1,
                             success_condition="result <= stable * 1.5 + 0.005")
        m = measure(metric, make_provider("prometheus", {"prometheus_url": url}), BACKENDS, "m", step=0)
        assert (m.value, m.baseline, m.outcome) == (0.25, 0.01, "failed")
        for query, why in (("multi", "2 series"), ("broken", "parse error")):
            bad = MetricCheck(name="e", provider="prometheus", query=query, success_condition="result < 1")
            m = measure(bad, make_provider("prometheus", {"prometheus_url": url}), BACKENDS, "m", step=0)
            assert m.outcome == "inconclusive" and why in m.message
        none = MetricCheck(name="e", provider="prometheus", query='x{version="9"}', success_condition="result < 1")
        assert measure(none, make_provider("prometheus", {"prometheus_url": url}), BACKENDS, "m", 0).value is None
    finally:
        server.shutdown()
    dead = measure(metric, make_provider("prometheus", {"prometheus_url": f"http://127.0.0.1:{free_port()}"}),
                   BACKENDS, "m", step=0)
    assert dead.outcome == "inconclusive" and "unavailable" in dead.message


@pytest.fixture(scope="module")
def moto_server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def test_cloudwatch_provider_against_moto(moto_server: str) -> None:
    import boto3

    aws = {"region_name": "us-east-1", "endpoint_url": moto_server, "aws_access_key_id": "testing",
           "aws_secret_access_key": "testing"}
    cw = boto3.client("cloudwatch", **aws)
    for variant, rate in (("v1", 0.0), ("v2", 0.3)):
        cw.put_metric_data(Namespace="AWS/SageMaker", MetricData=[{
            "MetricName": "Invocation5XXErrors", "Value": rate, "Unit": "Count",
            "Dimensions": [{"Name": "EndpointName", "Value": "churn"}, {"Name": "VariantName", "Value": variant}]}])
    metric = MetricCheck(name="errors_5xx", provider="cloudwatch", query="AWS/SageMaker/Invocation5XXErrors",
                         interval_s=60, count=1, success_condition="result <= stable * 1.5 + 0.005",
                         params={"dimensions": {"EndpointName": "churn", "VariantName": "{backend}"},
                                 "stat": "Average", "period": 60})
    m = measure(metric, make_provider("cloudwatch", {"aws": aws}), BACKENDS, "m", step=0)
    assert (m.value, m.baseline, m.outcome) == (0.3, 0.0, "failed")
    unreachable = {**aws, "endpoint_url": f"http://127.0.0.1:{free_port()}"}
    from botocore.config import Config

    client = boto3.client("cloudwatch", **unreachable, config=Config(retries={"max_attempts": 1},
                                                                    connect_timeout=1, read_timeout=1))
    dead = measure(metric, make_provider("cloudwatch", {"aws": {"client": client}}), BACKENDS, "m", step=0)
    assert dead.outcome == "inconclusive" and "CloudWatch" in dead.message


def test_cloudwatch_query_list_with_hidden_inputs_is_matched_by_id(moto_server: str) -> None:
    """GetMetricData returns only ReturnData queries: the returned one must not be paired with a hidden one."""
    import json

    import boto3

    aws = {"region_name": "us-east-1", "endpoint_url": moto_server, "aws_access_key_id": "testing",
           "aws_secret_access_key": "testing"}
    cw = boto3.client("cloudwatch", **aws)
    dims = [{"Name": "EndpointName", "Value": "hidden-ids"}, {"Name": "VariantName", "Value": "v2"}]
    cw.put_metric_data(Namespace="AWS/SageMaker", MetricData=[
        {"MetricName": "Invocations", "Value": 50.0, "Unit": "Count", "Dimensions": dims},
        {"MetricName": "Invocation5XXErrors", "Value": 0.25, "Unit": "Count", "Dimensions": dims}])

    def stat(name: str) -> dict:
        return {"Metric": {"Namespace": "AWS/SageMaker", "MetricName": name,
                           "Dimensions": [{"Name": "EndpointName", "Value": "hidden-ids"},
                                          {"Name": "VariantName", "Value": "{backend}"}]},
                "Period": 60, "Stat": "Average"}

    queries = [{"Id": "calls", "ReturnData": False, "MetricStat": stat("Invocations")},
               {"Id": "errors", "ReturnData": True, "MetricStat": stat("Invocation5XXErrors")}]
    # Literal braces of the JSON are doubled for the query template; {backend} is filled in.
    template = json.dumps(queries).replace("{", "{{").replace("}", "}}").replace("{{backend}}", "{backend}")
    metric = MetricCheck(name="errors", provider="cloudwatch", query=template, interval_s=60, count=1,
                         success_condition="result <= 0.1")
    m = measure(metric, make_provider("cloudwatch", {"aws": aws}), BACKENDS, "m", step=0)
    assert (m.value, m.outcome) == (0.25, "failed"), m
