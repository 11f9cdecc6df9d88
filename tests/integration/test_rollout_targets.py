"""One contract suite for rollout targets: deploy the candidate, set weights, read state back (also from a fresh
target object, as a restarted task does), roll back, promote, clean up.

- local: real MLflow scoring-server processes behind the real router process (real HTTP);
- kubernetes: the real ``kubernetes`` client against kmock's emulator over HTTP (tests/kube FakeCluster). The
  fake cluster runs no Deployment controller: :func:`_deployment_controller` plays it (a thread marking each
  Deployment's replicas ready), which is the only part not real. Every manifest the target generates is
  validated with kubernetes-validate; HTTPRoute is a Gateway API CRD that kubernetes-validate has no schema
  for (checked), so it is validated against the Gateway API v1 HTTPRoute fields the target writes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from airflow_mlops.core.rollout import Abort, BlueGreenStrategy, CanaryStrategy, Promote, RolloutState, applied
from airflow_mlops.rollout.targets import make_target
from tests.integration.test_rollout_kserve import kserve_contract_config
from tests.integration.test_rollout_local import MODEL, stack
from tests.integration.test_rollout_sagemaker import aws, moto_url, sagemaker_contract_config

__all__ = ["aws", "kserve_contract_config", "moto_url", "sagemaker_contract_config", "stack"]
pytestmark = pytest.mark.slow

# The Gateway API v1 HTTPRoute fields the Kubernetes target writes (gateway-api standard-install CRD).
HTTPROUTE_SCHEMA = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "gateway.networking.k8s.io/v1"}, "kind": {"const": "HTTPRoute"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {"type": "object", "additionalProperties": False, "properties": {
            "parentRefs": {"type": "array", "maxItems": 32, "items": {
                "type": "object", "required": ["name"], "properties": {"name": {"type": "string", "minLength": 1}}}},
            "rules": {"type": "array", "maxItems": 16, "items": {"type": "object", "properties": {
                "backendRefs": {"type": "array", "maxItems": 16, "items": {
                    "type": "object", "required": ["name"], "additionalProperties": False, "properties": {
                        "name": {"type": "string", "minLength": 1, "maxLength": 253},
                        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                        "weight": {"type": "integer", "minimum": 0, "maximum": 1000000}}}}}}}}},
    },
}


def validate_manifests(objects: list[dict[str, Any]]) -> None:
    import jsonschema
    import kubernetes_validate

    for obj in objects:
        if obj["kind"] == "HTTPRoute":
            with pytest.raises(kubernetes_validate.SchemaNotFoundError):
                kubernetes_validate.validate(obj, "1.37.0", strict=True)
            jsonschema.validate(obj, HTTPROUTE_SCHEMA)
        else:
            kubernetes_validate.validate(obj, "1.37.0", strict=True)


def _deployment_controller(kubeconfig: str, stop: threading.Event) -> None:
    """Stand-in for the Deployment controller + kubelet: every Deployment's replicas become ready."""
    from kubernetes import client, config

    apps = client.AppsV1Api(config.new_client_from_config(config_file=kubeconfig))
    while not stop.is_set():
        for d in apps.list_namespaced_deployment("default").items:
            want = d.spec.replicas or 0
            if ((d.status and d.status.ready_replicas) or 0) != want:
                apps.patch_namespaced_deployment(d.metadata.name, "default", {"status": {
                    "replicas": want, "readyReplicas": want, "availableReplicas": want}})
        stop.wait(0.1)


def declare_rollout_resources(cluster: Any) -> None:
    """Declare Deployments and HTTPRoutes in the emulator's discovery (the fake cluster declares core/batch only)."""
    import kmock

    verbs = {"create", "delete", "get", "list", "patch", "update", "watch"}
    cluster.emulator.resources[kmock.resource("apps", "v1", "deployments")] = kmock.ResourceInfo(
        kind="Deployment", singular="deployment", namespaced=True, verbs=verbs, subresources={"status", "scale"})
    cluster.emulator.resources[kmock.resource("gateway.networking.k8s.io", "v1", "httproutes")] = kmock.ResourceInfo(
        kind="HTTPRoute", singular="httproute", namespaced=True, verbs=verbs, subresources={"status"})


@pytest.fixture(scope="module")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from tests.kube.cluster import FakeCluster

    with FakeCluster(phase_delay=0.1) as cluster:
        declare_rollout_resources(cluster)
        kubeconfig = str(cluster.write_kubeconfig(tmp_path_factory.mktemp("kube") / "kubeconfig"))
        stop = threading.Event()
        thread = threading.Thread(target=_deployment_controller, args=(kubeconfig, stop), daemon=True)
        thread.start()
        yield kubeconfig
        stop.set()
        thread.join(timeout=5)
        assert not cluster.errors


TARGETS = ["local", "kubernetes-gateway", "kubernetes-replicas", "sagemaker", "kserve"]


@pytest.fixture(params=TARGETS)
def target_config(request: pytest.FixtureRequest, stack: dict[str, Any]) -> dict[str, Any]:
    kind = request.param
    if kind == "local":
        return {"kind": "local", "name": "contract", "model": MODEL, "tracking_uri": stack["uri"]}
    if kind in ("sagemaker", "kserve"):  # moto server / KServe controller stand-in: fixtures in their test modules
        return dict(request.getfixturevalue(f"{kind}_contract_config"))
    kubeconfig = request.getfixturevalue("kube")
    return {"kind": "kubernetes", "name": f"contract-{kind.split('-')[1]}", "model": MODEL,
            "tracking_uri": "http://mlflow.mlops.svc:5000", "kubeconfig": kubeconfig,
            "traffic": kind.split("-")[1], "replicas": 4}


def _eventually(check: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def test_target_contract(target_config: dict[str, Any], stack: dict[str, Any]) -> None:
    good, good2 = stack["versions"]["good"], stack["versions"]["good2"]
    target = make_target(target_config)
    try:
        target.deploy_initial(good)
        assert target.serving_version() == good and target.read_state() is None
        strategy = CanaryStrategy(steps=(25, 50, 100), pause_s=1)
        state = RolloutState(owner="dag/run/task", model=MODEL, stable=good, candidate=good2,
                             strategy=strategy.to_dict(), started_at=time.time())
        target.deploy_candidate(state)
        _eventually(lambda: target.candidate_ready(state))
        assert target.read_state() == state and target.observed_weight(state) == 0
        for step, weight in enumerate(strategy.steps[:2]):
            state = replace(state, step=step, weight=weight)
            target.apply_weight(state)
            assert target.observed_weight(state) == weight
            if hasattr(target, "manifests"):
                validate_manifests(target.manifests(state))
        # a restarted task builds a new target object from the same config and reads the same rollout back
        again = make_target(target_config)
        assert again.read_state() == state and again.read_state().split  # type: ignore[union-attr]
        state = applied(state, Abort("contract: rollback"), time.time())
        again.rollback(state)
        assert again.observed_weight(state) == 0 and again.serving_version() == good
        assert again.read_state().phase == "aborted"  # type: ignore[union-attr]
        # a second rollout of the same candidate, promoted
        state = RolloutState(owner="dag/run2/task", model=MODEL, stable=good, candidate=good2,
                             strategy=strategy.to_dict(), started_at=time.time())
        target.deploy_candidate(state)
        _eventually(lambda: target.candidate_ready(state))
        state = replace(state, step=2, weight=100)
        target.apply_weight(state)
        state = applied(state, Promote(), time.time())
        target.promote(state)
        assert target.observed_weight(state) == 100 and target.serving_version() == good2
        assert target.read_state().phase == "promoted"  # type: ignore[union-attr]
        if hasattr(target, "manifests"):
            validate_manifests(target.manifests(state))
    finally:
        target.cleanup()
    assert make_target(target_config).read_state() is None


@pytest.mark.parametrize("traffic", ["gateway", "replicas"])
def test_kubernetes_blue_green_switches_the_active_service_selector(kube: str, traffic: str) -> None:
    from kubernetes import client, config

    from airflow_mlops.rollout.targets.kubernetes import VERSION

    target = make_target({"kind": "kubernetes", "name": f"bg-{traffic}", "model": MODEL, "kubeconfig": kube,
                          "traffic": traffic, "replicas": 2, "tracking_uri": "http://mlflow.mlops.svc:5000"})
    core = client.CoreV1Api(config.new_client_from_config(config_file=kube))
    selector: Callable[[], str] = lambda: core.read_namespaced_service(  # noqa: E731
        f"bg-{traffic}", "default").spec.selector[VERSION]
    try:
        target.deploy_initial("1")
        state = RolloutState(owner="o", model=MODEL, stable="1", candidate="2",
                             strategy=BlueGreenStrategy(preview_pause_s=1, scale_down_delay_s=1).to_dict())
        target.deploy_candidate(state)
        _eventually(lambda: target.candidate_ready(state), 10)
        state = replace(state, step=0, weight=0)
        target.apply_weight(state)
        assert selector() == "1" and target.observed_weight(state) == 0  # preview: no live traffic
        validate_manifests(target.manifests(state))
        state = replace(state, step=1, weight=100)
        target.apply_weight(state)
        assert selector() == "2" and target.observed_weight(state) == 100  # the switch
        state = applied(state, Abort("post-promotion analysis failed"), time.time())
        target.rollback(state)
        assert selector() == "1" and target.serving_version() == "1"
    finally:
        target.cleanup()


@pytest.mark.parametrize("keep_previous", [True, False])
def test_kubernetes_promotion_keeps_only_the_previous_version_scaled_down(kube: str, keep_previous: bool) -> None:
    """keep_previous: the replaced version stays at 0 replicas for a fast rollback; older ones are always deleted
    (otherwise every release would leave a Deployment behind)."""
    from kubernetes import client, config

    from airflow_mlops.rollout.targets.kubernetes import VERSION

    name = f"keep-{str(keep_previous).lower()}"
    target = make_target({"kind": "kubernetes", "name": name, "model": MODEL, "kubeconfig": kube, "replicas": 2,
                          "tracking_uri": "http://mlflow.mlops.svc:5000"})
    apps = client.AppsV1Api(config.new_client_from_config(config_file=kube))
    core = client.CoreV1Api(config.new_client_from_config(config_file=kube))

    def deployed() -> dict[str, int]:
        items = apps.list_namespaced_deployment("default", label_selector=f"app.kubernetes.io/name={name}").items
        return {d.metadata.labels[VERSION]: d.spec.replicas for d in items}

    def services() -> set[str]:
        items = core.list_namespaced_service("default", label_selector=f"app.kubernetes.io/name={name}").items
        return {s.metadata.name for s in items}

    try:
        target.deploy_initial("1")
        strategy = BlueGreenStrategy(preview_pause_s=1, scale_down_delay_s=1, keep_previous=keep_previous).to_dict()
        for stable, candidate in (("1", "2"), ("2", "3")):
            state = RolloutState(owner="o", model=MODEL, stable=stable, candidate=candidate, strategy=strategy)
            target.deploy_candidate(state)
            state = replace(state, step=1, weight=100)
            target.apply_weight(state)
            target.promote(applied(state, Promote(), time.time()))
        assert target.serving_version() == "3"
        if keep_previous:
            assert deployed() == {"3": 2, "2": 0}
            assert services() == {name, f"{name}-v3", f"{name}-v2"}
        else:
            assert deployed() == {"3": 2}
            assert services() == {name, f"{name}-v3"}
    finally:
        target.cleanup()


def test_unknown_target_kind_is_a_spec_error() -> None:
    from airflow_mlops.core.errors import SpecError

    with pytest.raises(SpecError, match=r"target\.kind"):
        make_target({"kind": "nomad"})
    with pytest.raises(SpecError, match=r"target\.traffic"):
        make_target({"kind": "kubernetes", "name": "x", "model": "m", "traffic": "dns"})


def test_manifest_modules_do_not_need_a_cluster(tmp_path: Path) -> None:
    """The generated manifests validate without any cluster (what CI's manifest lint runs)."""
    from airflow_mlops.rollout.targets.kubernetes import KubernetesTarget

    target = KubernetesTarget("churn", "churn", tracking_uri="http://mlflow", replicas=3)
    state = RolloutState(owner="o", model="churn", stable="3", candidate="4", strategy=CanaryStrategy().to_dict(),
                         step=1, weight=25)
    objects = target.manifests(state)
    assert {o["kind"] for o in objects} == {"Deployment", "Service", "HTTPRoute"}
    route = next(o for o in objects if o["kind"] == "HTTPRoute")
    assert [(r["name"], r["weight"]) for r in route["spec"]["rules"][0]["backendRefs"]] == [("churn-v3", 75),
                                                                                          ("churn-v4", 25)]
    validate_manifests(objects)


def test_kubernetes_replica_ratio_rounds_to_whole_pods(kube: str) -> None:
    """Weights finer than 100/replicas map to whole pods (a canary always gets one); the recorded weight is
    reported back, so the engine does not re-apply it forever; a crash before the scale shows as drift."""
    from kubernetes import client, config

    target = make_target({"kind": "kubernetes", "name": "ratio", "model": MODEL, "kubeconfig": kube,
                          "traffic": "replicas", "replicas": 4, "tracking_uri": "http://mlflow.mlops.svc:5000"})
    apps = client.AppsV1Api(config.new_client_from_config(config_file=kube))
    try:
        target.deploy_initial("1")
        state = RolloutState(owner="o", model=MODEL, stable="1", candidate="2",
                             strategy=CanaryStrategy(steps=(5, 50, 100), pause_s=1).to_dict())
        target.deploy_candidate(state)
        state = replace(state, step=0, weight=5)
        target.apply_weight(state)
        replicas = {v: apps.read_namespaced_deployment(f"ratio-v{v}", "default").spec.replicas for v in "12"}
        assert replicas == {"1": 4, "2": 1} and target.observed_weight(state) == 5
        # The active Service now selects every version's pods (the version key deleted, not merged back in).
        core = client.CoreV1Api(config.new_client_from_config(config_file=kube))
        assert core.read_namespaced_service("ratio", "default").spec.selector == {"app.kubernetes.io/name": "ratio"}
        target.save_state(replace(state, step=1, weight=50))  # persisted, then the worker died before scaling
        assert target.read_state().weight == 20  # type: ignore[union-attr]  # what the pods really give
    finally:
        target.cleanup()
