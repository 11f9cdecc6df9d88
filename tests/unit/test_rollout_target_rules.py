"""Target rules that need no cluster or AWS: the Kubernetes serving Deployment (schema-valid, admitted by the
``restricted`` Pod Security Standard) and SageMaker's busy endpoint.

The namespace in ``infra/k8s/namespace.yaml`` enforces ``restricted``; a Deployment whose pods fail it is created,
but its ReplicaSet never gets a pod, so a rollout would wait for readiness until its timeout.
"""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from airflow_mlops.core.errors import SpecError
from airflow_mlops.rollout.targets.kubernetes import KubernetesTarget, deployment_manifest


def restricted_violations(pod_spec: dict[str, Any]) -> list[str]:
    """What the restricted profile (Kubernetes Pod Security Standards, v1.30+) would reject in ``pod_spec``."""
    problems = []
    pod_sc = pod_spec.get("securityContext") or {}
    for c in pod_spec.get("containers", []) + pod_spec.get("initContainers", []):
        sc = c.get("securityContext") or {}
        name = c["name"]
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation != false")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            problems.append(f"{name}: capabilities.drop lacks ALL")
        if set((sc.get("capabilities") or {}).get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: adds capabilities")
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
            problems.append(f"{name}: runAsNonRoot != true")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            problems.append(f"{name}: runAsUser 0")
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile {seccomp}")
        if sc.get("privileged"):
            problems.append(f"{name}: privileged")
    return problems


def test_serving_deployment_passes_restricted_and_the_schema() -> None:
    manifest = deployment_manifest("churn", "churn", "3", "registry/serving:1", "http://mlflow:5000", 2, 8080,
                                   mlflow_secret="mlflow-creds", service_account="serving")
    kubernetes_validate.validate(manifest, "1.37.0", strict=True)
    spec = manifest["spec"]["template"]["spec"]
    assert restricted_violations(spec) == []
    assert spec["serviceAccountName"] == "serving"
    (container,) = spec["containers"]
    assert container["resources"]["requests"] == {"cpu": "500m", "memory": "1Gi"}
    secret_env = [e for e in container["env"] if "valueFrom" in e]
    assert {e["name"] for e in secret_env} == {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                                               "MLFLOW_TRACKING_TOKEN"}
    assert all(e["valueFrom"]["secretKeyRef"]["name"] == "mlflow-creds" for e in secret_env)
    assert all("value" not in e for e in secret_env), "credentials must never be literal"


def test_the_checker_catches_an_unhardened_pod() -> None:
    bare = {"containers": [{"name": "server", "image": "x"}]}
    assert len(restricted_violations(bare)) == 4


def test_target_resources_flow_into_the_manifest_and_bad_ones_are_rejected() -> None:
    target = KubernetesTarget("churn", "churn", tracking_uri="http://mlflow:5000",
                              resources={"requests": {"cpu": "1"}, "limits": {"memory": "4Gi"}})
    container = target._deployment("7", 1)["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == {"requests": {"cpu": "1"}, "limits": {"memory": "4Gi"}}
    with pytest.raises(SpecError, match=r"target\.resources"):
        KubernetesTarget("churn", "churn", tracking_uri="http://mlflow:5000", resources={"cpus": 1})
    with pytest.raises(SpecError, match=r"target\.tracking_uri"):
        KubernetesTarget("churn", "churn")


def test_sagemaker_endpoint_still_updating_is_busy_not_a_worker_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """An UpdateEndpointWeightsAndCapacities call needs an InService endpoint; updates take minutes. The target
    waits ``settle_timeout_s`` at most, then raises TargetBusy (the operator defers); the endpoint's status is
    stubbed here (``describe_endpoint``: moto's endpoints are InService at once, so it cannot show an Updating
    one); the calls themselves run against moto in tests/integration/test_rollout_sagemaker.py."""
    import time

    from airflow_mlops.rollout.targets import TargetBusy
    from airflow_mlops.rollout.targets.sagemaker import SageMakerTarget

    target = SageMakerTarget("churn", image="img", execution_role_arn="arn:aws:iam::1:role/r",
                             tracking_uri="http://mlflow:5000", settle_timeout_s=0.2, poll_s=0.05)
    status = {"EndpointStatus": "Updating", "EndpointArn": "arn", "ProductionVariants": []}
    monkeypatch.setattr(target, "describe_endpoint", lambda: status)
    started = time.monotonic()
    with pytest.raises(TargetBusy, match="still Updating"):
        target._set_weights({"v1": 100.0})
    assert time.monotonic() - started < 5
    assert target.settled() is False
    status["EndpointStatus"] = "InService"
    assert target.settled() is True
    status.update(EndpointStatus="Failed", FailureReason="image not found")
    with pytest.raises(RuntimeError, match="image not found"):
        target.settled()
