"""The reference rollout DAG, unchanged, on Kubernetes: only Variables differ from the laptop.

The cluster is kmock's emulator over HTTP (real kubernetes client) with a Deployment-controller stand-in that
marks replicas ready; every object the target writes is validated with kubernetes-validate. No Prometheus
binary can run here, and nothing would serve the pods' traffic: ``ServiceErrorRates`` answers ``/api/v1/query``
in the Prometheus API's JSON format with a configured 5xx rate per Service, the way Prometheus would report it
for the query the DAG's default analysis sends.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.dagfiles import load_dag
from tests.integration.test_rollout_targets import _deployment_controller, declare_rollout_resources, validate_manifests

pytestmark = pytest.mark.slow
MODEL = "breast_cancer_classifier"
ROUTES = ("gateway.networking.k8s.io", "v1", "httproutes")
DEPLOYMENTS = ("apps", "v1", "deployments")
ENDPOINT = "breast-cancer-classifier"
# The DAG's own Kubernetes query, with a short window: the pauses below are seconds, not minutes.
FAST = {"kubernetes": {"metrics": [
    {"name": "error_rate", "provider": "prometheus", "interval_s": 1, "count": 2,
     "query": 'sum(rate(http_requests_total{{service="{backend}",code=~"5.."}}[{window}s])) / '
              'sum(rate(http_requests_total{{service="{backend}"}}[{window}s]))',
     "success_condition": "result <= stable * 1.5 + 0.005", "failure_limit": 0, "inconclusive_limit": 1},
]}}


class ServiceErrorRates(BaseHTTPRequestHandler):
    """``/api/v1/query``: one vector sample, the configured error rate of the Service the query names."""

    rates: ClassVar[dict[str, float]] = {}
    queries: ClassVar[list[str]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        query = parse_qs(urlsplit(self.path).query)["query"][0]
        self.queries.append(query)
        services = set(re.findall(r'service="([^"]+)"', query))
        result = [{"metric": {"service": s}, "value": [time.time(), str(self.rates.get(s, 0.0))]} for s in services]
        raw = json.dumps({"status": "success", "data": {"resultType": "vector", "result": result[:1]}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


@pytest.fixture
def on_kubernetes(airflow_db: Path, mlops_home: Path, monkeypatch: pytest.MonkeyPatch,
                  tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Variables select the Kubernetes target and a Prometheus URL; a real MLflow registry holds v1 (champion),
    v2 and v3; v1 serves at 100% behind the HTTPRoute."""
    import mlflow

    from airflow_mlops.rollout.targets import make_target
    from tests.kube.cluster import FakeCluster

    server = ThreadingHTTPServer(("127.0.0.1", 0), ServiceErrorRates)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ServiceErrorRates.rates, ServiceErrorRates.queries = {}, []
    with FakeCluster(phase_delay=0.1) as cluster:
        declare_rollout_resources(cluster)
        kubeconfig = str(cluster.write_kubeconfig(tmp_path / "kubeconfig"))
        stop = threading.Event()
        controller = threading.Thread(target=_deployment_controller, args=(kubeconfig, stop), daemon=True)
        controller.start()
        config = {"kubeconfig": kubeconfig, "traffic": "gateway", "replicas": 1, "gateway": "public",
                  "tracking_uri": "http://mlflow.mlops.svc:5000", "mlflow_secret": "mlflow-creds"}
        monkeypatch.setenv("AIRFLOW_VAR_MLOPS_ROLLOUT_TARGET", "kubernetes")
        monkeypatch.setenv("AIRFLOW_VAR_MLOPS_ROLLOUT_TARGET_CONFIG", json.dumps(config))
        monkeypatch.setenv("AIRFLOW_VAR_MLOPS_ROLLOUT_ANALYSIS_SETTINGS",
                           json.dumps({"prometheus_url": f"http://127.0.0.1:{server.server_port}"}))
        (mlops_home / "mlflow").mkdir(parents=True)
        client = mlflow.MlflowClient(f"sqlite:///{mlops_home}/mlflow/mlflow.db")
        client.create_registered_model(MODEL)
        versions = [str(client.create_model_version(MODEL, f"s3://models/{MODEL}/{i}").version) for i in range(3)]
        client.set_registered_model_alias(MODEL, "champion", versions[0])
        target = make_target({"kind": "kubernetes", "name": ENDPOINT, "model": MODEL, **config})
        target.deploy_initial(versions[0])
        try:
            yield {"client": client, "versions": versions, "target": target, "cluster": cluster}
        finally:
            stop.set()
            controller.join(timeout=5)
            server.shutdown()
        assert not cluster.errors


def _run(**conf: Any) -> dict[str, Any]:
    run = load_dag("mlops_progressive_rollout").test(run_conf={
        "canary_steps": [50, 100], "pause_seconds": 2.5, "analysis": FAST, **conf})
    return {ti.task_id: ti for ti in run.get_task_instances()}


def _route_weights(cluster: Any) -> dict[str, int]:
    import kmock

    route = cluster.get(kmock.resource(*ROUTES), ENDPOINT)
    return {ref["name"]: ref["weight"] for ref in route["spec"]["rules"][0]["backendRefs"]}


def _deployment(cluster: Any, name: str) -> dict[str, Any] | None:
    import kmock

    return cluster.get(kmock.resource(*DEPLOYMENTS), name)


def _all_objects(cluster: Any) -> list[dict[str, Any]]:
    import kmock

    kinds = ((kmock.resource(*DEPLOYMENTS), "apps/v1", "Deployment"), ("services", "v1", "Service"),
             (kmock.resource(*ROUTES), "gateway.networking.k8s.io/v1", "HTTPRoute"))
    found = [{**obj, "apiVersion": api, "kind": kind} for res, api, kind in kinds for obj in cluster.list_objects(res)]
    assert {o["kind"] for o in found} == {"Deployment", "Service", "HTTPRoute"}
    # Server-filled fields are not part of what the target wrote.
    return [{**o, "metadata": {k: v for k, v in o["metadata"].items() if k in ("name", "namespace", "labels",
                                                                              "annotations")}}
            for o in found]


def test_same_dag_canary_on_kubernetes_promotes_then_rolls_back(on_kubernetes: dict[str, Any]) -> None:
    client, cluster, target = on_kubernetes["client"], on_kubernetes["cluster"], on_kubernetes["target"]
    _, v2, v3 = on_kubernetes["versions"]

    tis = _run(candidate_version=v2)
    assert str(tis["rollout"].state) == "success"
    record = tis["rollout"].xcom_pull(task_ids="rollout")
    assert record["outcome"] == "promoted" and record["target"]["kind"] == "kubernetes"
    assert {m["metric"] for m in record["measurements"]} == {"error_rate"}
    assert any(f'service="{ENDPOINT}-v{v2}"' in q for q in ServiceErrorRates.queries), "the DAG's query was sent"
    assert _route_weights(cluster) == {f"{ENDPOINT}-v{v2}": 100}
    assert target.serving_version() == v2
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == v2
    validate_manifests(_all_objects(cluster))
    deployment = _deployment(cluster, f"{ENDPOINT}-v{v2}")
    assert deployment is not None
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MLFLOW_TRACKING_URI"]["value"] == "http://mlflow.mlops.svc:5000"
    assert env["MLFLOW_TRACKING_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-creds"

    # v3's Service answers 40% 5xx in Prometheus: the canary rolls back at 50%, v2 keeps 100%.
    ServiceErrorRates.rates = {f"{ENDPOINT}-v{v3}": 0.4}
    tis = _run(candidate_version=v3)
    assert str(tis["rollout"].state) == "failed"
    assert _route_weights(cluster) == {f"{ENDPOINT}-v{v2}": 100}
    assert target.serving_version() == v2
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == v2
    assert _deployment(cluster, f"{ENDPOINT}-v{v3}") is None, "the rolled-back candidate was left running"


def test_without_a_prometheus_url_nothing_is_deployed(on_kubernetes: dict[str, Any],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_VAR_MLOPS_ROLLOUT_ANALYSIS_SETTINGS", "{}")
    cluster, (_, v2, _) = on_kubernetes["cluster"], on_kubernetes["versions"]
    tis = _run(candidate_version=v2)
    assert str(tis["rollout"].state) == "failed"
    assert tis["rollout"].try_number == 1, "a configuration error is not retried"
    assert _deployment(cluster, f"{ENDPOINT}-v{v2}") is None
    assert _route_weights(cluster) == {f"{ENDPOINT}-v1": 100}
    assert on_kubernetes["target"].read_state() is None, "no rollout state without an owner"
