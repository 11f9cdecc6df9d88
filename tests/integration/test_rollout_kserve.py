"""The KServe target against the kmock fake cluster (tests/kube) over HTTP, with the real ``kubernetes`` client
(CustomObjectsApi) through the cncf provider's KubernetesHook and an Airflow ``kubernetes_default`` connection.

What is not real, said precisely: the fake cluster stores InferenceServices but runs no KServe controller, so
nobody writes ``.status``. :class:`KServeController` plays that controller where a test needs it: from the spec
it derives Knative-style revisions (a new one whenever the predictor spec other than ``canaryTrafficPercent``
changes) and writes ``status.components.predictor`` (latestCreated/ReadyRevision, ``traffic`` split by
``canaryTrafficPercent`` between the latest and the previous revision, tag URLs) and the ``PredictorReady``
condition. Tests call :meth:`KServeController.reconcile` explicitly, so they also see the status *lag* behind
the spec. Without any status, the target reads the desired weight from the spec (and says so).

kubernetes-validate has no schema for KServe's CRD (checked: SchemaNotFoundError). What is validated with it,
strictly, is everything in an InferenceService that has a Kubernetes schema: its ObjectMeta (name, labels,
annotations, including the state JSON) and the predictor's containers / serviceAccountName as a PodSpec.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from airflow_mlops.core.rollout import Abort, CanaryStrategy, Promote, RolloutState, applied

MODEL = "churn"
IMAGE = "ghcr.io/airflow-mlops/serving:0.1.0"
GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"


def declare_inferenceservices(cluster: Any) -> None:
    """Declare InferenceServices in the emulator's discovery (the fake cluster declares core/batch only)."""
    import kmock

    cluster.emulator.resources[kmock.resource(GROUP, VERSION, PLURAL)] = kmock.ResourceInfo(
        kind="InferenceService", singular="inferenceservice", namespaced=True, shortnames={"isvc"},
        verbs={"create", "delete", "get", "list", "patch", "update", "watch"}, subresources={"status"})


class KServeController:
    """Stand-in for the KServe controller: writes an InferenceService's status from its spec (see module doc).

    :param report_traffic: write ``status.components.predictor.traffic`` (False: readiness only).
    """

    def __init__(self, api: Any, namespace: str = "default", report_traffic: bool = True) -> None:
        self.api, self.namespace, self.report_traffic = api, namespace, report_traffic
        self.revisions: dict[str, list[tuple[str, str]]] = {}  # name -> [(spec hash, revision)]

    def reconcile(self, name: str) -> dict[str, Any] | None:
        from kubernetes.client.rest import ApiException

        try:
            obj = self.api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        predictor = dict(obj["spec"]["predictor"])
        canary = predictor.pop("canaryTrafficPercent", None)
        # Knative cuts a revision per spec generation; the fake API server bumps no generation, and a poll can miss
        # a spec that came and went (v2 -> v1 -> v2 between two polls), so the target's own markers of a new
        # predictor write count too.
        notes = obj["metadata"].get("annotations") or {}
        marks = [notes.get(f"mlops.airflow-mlops.io/{k}") for k in ("predictor-version", "previous-revision")]
        digest = hashlib.sha256(json.dumps([predictor, marks], sort_keys=True).encode()).hexdigest()
        history = self.revisions.setdefault(name, [])
        if not history or history[-1][0] != digest:
            history.append((digest, f"{name}-predictor-{len(history) + 1:05d}"))
        latest = history[-1][1]
        url = f"http://{name}-predictor.{self.namespace}.example.com"
        traffic = [{"revisionName": latest, "latestRevision": True, "tag": "latest",
                    "url": url.replace("http://", "http://latest-"), "percent": 100 if canary is None else canary}]
        if canary is not None and len(history) > 1:
            traffic.append({"revisionName": history[-2][1], "latestRevision": False, "tag": "prev",
                            "url": url.replace("http://", "http://prev-"), "percent": 100 - canary})
        component: dict[str, Any] = {"latestCreatedRevision": latest, "latestReadyRevision": latest, "url": url}
        if self.report_traffic:
            component["traffic"] = traffic
        status = {"observedGeneration": obj["metadata"].get("generation", 1), "url": url,
                  "conditions": [{"type": t, "status": "True"} for t in ("PredictorReady", "Ready")],
                  "components": {"predictor": component}}
        return dict(self.api.patch_namespaced_custom_object_status(GROUP, VERSION, self.namespace, PLURAL, name,
                                                                   {"status": status}))

    def run(self, stop: threading.Event, every: float = 0.1, names: tuple[str, ...] = ()) -> None:
        """Reconcile ``names`` every ``every`` seconds until ``stop`` (for tests that do not drive it step by step)."""
        while not stop.is_set():
            for name in names:
                self.reconcile(name)
            stop.wait(every)


def validate_inferenceservice(obj: dict[str, Any]) -> None:
    """kubernetes-validate (strict) on every part of an InferenceService that has a Kubernetes schema."""
    import kubernetes_validate

    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(obj, "1.37.0", strict=True)
    meta = {k: v for k, v in obj["metadata"].items() if k in ("name", "namespace", "labels", "annotations")}
    predictor = obj["spec"]["predictor"]
    containers = predictor.get("containers") or [{"name": "kserve-container", "image": "kserve/mlserver"}]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
           "spec": {"containers": containers,
                    **({"serviceAccountName": predictor["serviceAccountName"]}
                       if "serviceAccountName" in predictor else {})}}
    kubernetes_validate.validate(pod, "1.37.0", strict=True)
    assert obj["apiVersion"] == f"{GROUP}/{VERSION}" and obj["kind"] == "InferenceService"
    assert set(predictor) <= {"containers", "model", "minReplicas", "serviceAccountName", "canaryTrafficPercent"}
    assert "canaryTrafficPercent" not in predictor or 0 <= predictor["canaryTrafficPercent"] <= 100


@pytest.fixture
def kserve(airflow_kubernetes_conn: Any, fake_kubeconfig: Path, airflow_db: Path) -> Iterator[dict[str, Any]]:
    """The fake cluster with InferenceServices declared, a CustomObjectsApi, and the controller stand-in."""
    from kubernetes import client, config

    declare_inferenceservices(airflow_kubernetes_conn)
    api = client.CustomObjectsApi(config.new_client_from_config(config_file=str(fake_kubeconfig)))
    yield {"cluster": airflow_kubernetes_conn, "api": api, "controller": KServeController(api)}


def _target(**overrides: Any) -> Any:
    from airflow_mlops.rollout.targets import make_target

    return make_target({"kind": "kserve", "name": "churn", "model": MODEL, "image": IMAGE,
                        "tracking_uri": "http://mlflow.mlops.svc:5000", "service_account": "mlops-serving",
                        **overrides})


def _isvc(kserve: dict[str, Any], name: str = "churn") -> dict[str, Any]:
    return dict(kserve["api"].get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, name))


def _state(candidate: str = "2", stable: str | None = "1", owner: str = "dag/run/task") -> RolloutState:
    return RolloutState(owner=owner, model=MODEL, stable=stable, candidate=candidate,
                        strategy=CanaryStrategy(steps=(25, 50, 100), pause_s=1).to_dict(), started_at=time.time())


def _env(obj: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in obj["spec"]["predictor"]["containers"][0]["env"]}


def test_kserve_contract_canary_rollback_promote(kserve: dict[str, Any]) -> None:
    controller = kserve["controller"]
    target = _target()
    assert target.serving_version() is None and target.read_state() is None
    target.deploy_initial("1")  # over HTTP, through the Airflow connection's KubernetesHook
    original = _isvc(kserve)
    validate_inferenceservice(original)
    assert _env(original) == {"MODEL_URI": f"models:/{MODEL}/1", "MLFLOW_TRACKING_URI": "http://mlflow.mlops.svc:5000"}
    controller.reconcile("churn")
    assert target.serving_version() == "1"

    state = _state()
    target.deploy_candidate(state)
    obj = _isvc(kserve)
    validate_inferenceservice(obj)
    assert obj["spec"]["predictor"]["canaryTrafficPercent"] == 0 and _env(obj)["MODEL_URI"] == f"models:/{MODEL}/2"
    assert not target.candidate_ready(state)  # the status still describes v1's revision
    assert target.observed_weight(state) == 0 and target.serving_version() == "1"
    controller.reconcile("churn")
    assert target.candidate_ready(state) and target.read_state() == state

    for step, weight in enumerate((25, 50)):
        state = replace(state, step=step, weight=weight)
        target.apply_weight(state)
        previous = 0 if step == 0 else 25
        assert target.observed_weight(state) == previous  # the controller has not caught up: status says so
        controller.reconcile("churn")
        assert target.observed_weight(state) == weight
        validate_inferenceservice(_isvc(kserve))
    backends = target.backends(state)
    assert backends["candidate"].url.startswith("http://latest-") and backends["stable"].url.startswith("http://prev-")
    again = _target()  # a restarted task reads the same rollout back
    assert again.read_state() == state and again.read_state().split

    state = applied(state, Abort("error_rate failed"), time.time())
    again.rollback(state)
    obj = _isvc(kserve)
    assert obj["spec"]["predictor"] == original["spec"]["predictor"]  # the previous spec, restored
    controller.reconcile("churn")
    assert again.serving_version() == "1" and again.observed_weight(state) == 0
    assert again.read_state() == replace(state, weight=0) and again.read_state().phase == "aborted"
    validate_inferenceservice(_isvc(kserve))

    state = _state(owner="dag/run2/task")
    target.deploy_candidate(state)
    controller.reconcile("churn")
    assert target.candidate_ready(state)
    state = replace(state, step=2, weight=100)
    target.apply_weight(state)
    controller.reconcile("churn")
    state = applied(state, Promote(), time.time())
    target.promote(state)
    obj = _isvc(kserve)
    assert "canaryTrafficPercent" not in obj["spec"]["predictor"] and _env(obj)["MODEL_URI"] == f"models:/{MODEL}/2"
    validate_inferenceservice(obj)
    controller.reconcile("churn")
    assert target.observed_weight(state) == 100 and target.serving_version() == "2"
    assert target.read_state().phase == "promoted"
    target.cleanup()
    assert _target().read_state() is None and _target().serving_version() is None


def test_without_any_status_the_spec_weight_is_read(kserve: dict[str, Any]) -> None:
    target = _target()
    target.deploy_initial("1")
    state = _state()
    target.deploy_candidate(state)
    assert not target.candidate_ready(state)  # no controller: never ready (the operator's deadline decides)
    state = replace(state, step=0, weight=25)
    target.apply_weight(state)
    assert target.observed_weight(state) == 25 and target.read_state() == state
    target.cleanup()


def test_first_deployment_and_storage_uri_mode(kserve: dict[str, Any]) -> None:
    target = _target(image=None, storage_uri="s3://models/{model}/{version}/artifacts")
    state = _state(candidate="1", stable=None)
    target.deploy_candidate(state)
    obj = _isvc(kserve)
    validate_inferenceservice(obj)
    assert obj["spec"]["predictor"]["model"] == {
        "modelFormat": {"name": "mlflow"}, "protocolVersion": "v2", "storageUri": f"s3://models/{MODEL}/1/artifacts",
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}}}
    kserve["controller"].reconcile("churn")
    assert target.candidate_ready(state) and target.serving_version() == "1"
    assert target.read_state() == replace(state, weight=100)
    target.cleanup()


def test_bad_config_names_the_field() -> None:
    from airflow_mlops.core.errors import SpecError

    with pytest.raises(SpecError, match=r"target\.name"):
        _target(name="Churn_Model")
    with pytest.raises(SpecError, match=r"target\.image"):
        _target(image=None)
    with pytest.raises(SpecError, match=r"target\.image"):
        _target(storage_uri="s3://m/{version}")
    with pytest.raises(SpecError, match=r"target\.storage_uri"):
        _target(image=None, storage_uri="s3://m/latest")
    with pytest.raises(SpecError, match=r"target\.tracking_uri"):
        _target(tracking_uri=None)
    with pytest.raises(SpecError, match=r"target\.protocol_version"):
        _target(protocol_version="v3")


@pytest.fixture
def kserve_contract_config(kube: str) -> Iterator[dict[str, Any]]:
    """The KServe target's config for the shared contract suite (``kube``: its fake cluster's kubeconfig), with the
    controller stand-in reconciling in a thread (readiness only: weights are then read from the spec)."""
    from kubernetes import client, config

    api = client.CustomObjectsApi(config.new_client_from_config(config_file=kube))
    stop = threading.Event()
    controller = KServeController(api, report_traffic=False)
    thread = threading.Thread(target=controller.run, args=(stop, 0.1, ("contract-kserve",)), daemon=True)
    thread.start()
    yield {"kind": "kserve", "name": "contract-kserve", "model": MODEL, "image": IMAGE,
           "tracking_uri": "http://mlflow.mlops.svc:5000", "kubeconfig": kube}
    stop.set()
    thread.join(timeout=5)
