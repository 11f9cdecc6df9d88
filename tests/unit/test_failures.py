"""Pod failure classification from realistic API JSON (camelCase, as ``kubectl get pod -o json`` shows it)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from airflow_mlops.core.failures import FailureKind, PodFailure, Retry, classify_pod

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/ml/trainer:2026.11.1"
CHECKPOINT = "s3://acme-ml/artifacts/runs/train_fraud/manual__2026-11-23T00_00_00_00_00/train/checkpoints"


def make_pod(phase: str, *, main_state: dict[str, Any] | None = None,
             last_state: dict[str, Any] | None = None, conditions: list[dict[str, Any]] | None = None,
             reason: str | None = None, message: str | None = None,
             with_sidecar: bool = True) -> dict[str, Any]:
    """A pod the way the API returns it, with an istio sidecar listed before the main container."""
    statuses = []
    if with_sidecar:
        statuses.append({
            "name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.24.0", "imageID": "", "ready": True,
            "restartCount": 0, "started": True, "state": {"running": {"startedAt": "2026-11-23T00:00:05Z"}},
            "lastState": {},
        })
    if main_state is not None:
        statuses.append({
            "name": "base", "image": IMAGE, "imageID": "", "ready": False, "restartCount": 0,
            "started": "running" in main_state, "state": main_state, "lastState": last_state or {},
            "containerID": "containerd://4f1e0c",
        })
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": conditions if conditions is not None else [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-11-23T00:00:01Z"},
            {"type": "Initialized", "status": "True", "lastTransitionTime": "2026-11-23T00:00:02Z"},
        ],
        "hostIP": "10.0.12.7", "podIP": "10.0.13.44", "qosClass": "Burstable",
        "startTime": "2026-11-23T00:00:01Z",
        "containerStatuses": statuses,
    }
    if reason:
        status["reason"] = reason
    if message:
        status["message"] = message
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "mlops-train-7f3a9c21", "namespace": "ml", "uid": "0b5c6f3e",
                     "labels": {"app.kubernetes.io/name": "train"}},
        "spec": {
            "restartPolicy": "Never", "activeDeadlineSeconds": 21600,
            "containers": [
                {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.24.0",
                 "resources": {"limits": {"memory": "1Gi"}}},
                {"name": "base", "image": IMAGE, "command": ["python"], "args": ["-m", "acme.train"],
                 "resources": {"requests": {"cpu": "8", "memory": "16Gi", "nvidia.com/gpu": "1"},
                               "limits": {"memory": "24Gi", "nvidia.com/gpu": "1"}}},
            ],
        },
        "status": status,
    }


def terminated(exit_code: int, reason: str) -> dict[str, Any]:
    return {"terminated": {"exitCode": exit_code, "reason": reason, "startedAt": "2026-11-23T00:00:10Z",
                           "finishedAt": "2026-11-23T01:12:44Z", "containerID": "containerd://4f1e0c"}}


def event(reason: str, message: str, ts: str = "2026-11-23T00:01:00Z",
          kind: str = "Warning") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Event", "type": kind, "reason": reason, "message": message,
            "involvedObject": {"kind": "Pod", "name": "mlops-train-7f3a9c21", "namespace": "ml"},
            "firstTimestamp": ts, "lastTimestamp": ts, "count": 1,
            "source": {"component": "kubelet", "host": "ip-10-0-12-7.ec2.internal"}}


def classify(pod: dict[str, Any], events: list[dict[str, Any]] | None = None, **kwargs: Any) -> PodFailure:
    failure = classify_pod(pod, events or [], **kwargs)
    assert failure is not None
    assert failure.message.startswith("Pod mlops-train-7f3a9c21")
    return failure


# --- OOM ----------------------------------------------------------------------------------------------------

def test_oom_killed() -> None:
    failure = classify(make_pod("Failed", main_state=terminated(137, "OOMKilled")))
    assert failure.kind is FailureKind.OOM_KILLED
    assert failure.retry is Retry.NORMAL and failure.retryable
    assert failure.exit_code == 137
    assert "memory limit 24Gi" in failure.message  # the main container's limit, not the sidecar's 1Gi
    assert "GpuSpec.memory_limit" in failure.message
    assert "'base'" in failure.message


def test_oom_killed_in_last_state_while_restarting() -> None:
    waiting = {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}}
    pod = make_pod("Running", main_state=waiting, last_state=terminated(137, "OOMKilled"))
    failure = classify(pod)
    assert failure.kind is FailureKind.OOM_KILLED
    assert failure.retry is Retry.NORMAL


def test_oom_without_memory_limit_says_unset() -> None:
    pod = make_pod("Failed", main_state=terminated(137, "OOMKilled"))
    del pod["spec"]["containers"][1]["resources"]["limits"]["memory"]
    assert "memory limit unset" in classify(pod).message


def test_sidecar_oom_is_not_the_step() -> None:
    pod = make_pod("Failed", main_state=terminated(1, "Error"))
    pod["status"]["containerStatuses"][0]["state"] = terminated(137, "OOMKilled")
    failure = classify(pod)
    assert failure.kind is FailureKind.USER_CODE


# --- eviction and preemption --------------------------------------------------------------------------------

def test_evicted_by_kubelet() -> None:
    msg = ("The node was low on resource: memory. Threshold quantity: 100Mi, available: 42Mi. "
           "Container base was using 23Gi, request is 16Gi, has larger consumption of memory. ")
    pod = make_pod("Failed", main_state=terminated(137, "Error"), reason="Evicted", message=msg)
    failure = classify(pod, checkpoint_uri=CHECKPOINT)
    assert failure.kind is FailureKind.EVICTED
    assert failure.retry is Retry.RESUME and failure.retryable
    assert f"from checkpoint {CHECKPOINT}" in failure.message
    assert "Evicted" in failure.message
    assert "The node was low on resource: memory." in failure.message
    assert failure.exit_code == 137


def test_spot_preemption_via_disruption_target_condition() -> None:
    """Spot interruption: Karpenter taints and drains the node; the pod gets DisruptionTarget, exits 143."""
    conditions = [
        {"type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager",
         "message": "Taint manager: deleting due to NoExecute taint",
         "lastTransitionTime": "2026-11-23T01:10:00Z"},
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-11-23T00:00:01Z"},
        {"type": "Ready", "status": "False", "reason": "PodFailed",
         "lastTransitionTime": "2026-11-23T01:10:31Z"},
    ]
    pod = make_pod("Failed", main_state=terminated(143, "Error"), conditions=conditions)
    failure = classify(pod, checkpoint_uri=CHECKPOINT)
    # Exit 143 alone would read as a user-code failure that is never retried; the condition takes precedence.
    assert failure.kind is FailureKind.EVICTED
    assert failure.retry is Retry.RESUME
    assert failure.exit_code == 143
    assert "DeletionByTaintManager" in failure.message
    assert "Taint manager: deleting due to NoExecute taint" in failure.message
    assert CHECKPOINT in failure.message
    assert "capacity_type='on-demand'" in failure.message


def test_preemption_without_checkpoint_uri_still_says_it_resumes() -> None:
    conditions = [{"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
                   "message": "default/high-prio-pod: preempting to accommodate a higher priority pod"}]
    failure = classify(make_pod("Failed", main_state=terminated(143, "Error"), conditions=conditions))
    assert failure.retry is Retry.RESUME
    assert "from its latest checkpoint" in failure.message
    assert "PreemptionByScheduler" in failure.message


def test_disruption_target_false_is_not_a_disruption() -> None:
    conditions = [{"type": "DisruptionTarget", "status": "False", "reason": "EvictionByEvictionAPI"}]
    failure = classify(make_pod("Failed", main_state=terminated(1, "Error"), conditions=conditions))
    assert failure.kind is FailureKind.USER_CODE
    assert failure.retry is Retry.NEVER


def test_disruption_on_a_still_running_pod_is_not_yet_a_failure() -> None:
    conditions = [{"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI",
                   "message": "Eviction API: evicting"}]
    running = {"running": {"startedAt": "2026-11-23T00:00:10Z"}}
    pod = make_pod("Running", main_state=running, conditions=conditions)
    assert classify_pod(pod) is None


# --- image and config errors --------------------------------------------------------------------------------

@pytest.mark.parametrize("reason", ["ImagePullBackOff", "ErrImagePull"])
def test_image_pull_failure_is_never_retried(reason: str) -> None:
    pod = make_pod("Pending", main_state={"waiting": {
        "reason": reason, "message": f'Back-off pulling image "{IMAGE}"'}})
    events = [
        event("Pulling", f'Pulling image "{IMAGE}"', "2026-11-23T00:00:03Z", kind="Normal"),
        event("Failed", f'Failed to pull image "{IMAGE}": rpc error: code = Unknown desc = failed to resolve '
                        "reference: not found", "2026-11-23T00:00:04Z"),
        event("Failed", f'Failed to pull image "{IMAGE}": 403 Forbidden', "2026-11-23T00:00:40Z"),
    ]
    failure = classify(pod, events)
    assert failure.kind is FailureKind.IMAGE_PULL
    assert failure.retry is Retry.NEVER and not failure.retryable
    assert repr(IMAGE) in failure.message
    assert reason in failure.message
    assert "403 Forbidden" in failure.message  # the latest Failed event
    assert "not found" not in failure.message


def test_image_pull_failure_without_events_uses_waiting_message() -> None:
    pod = make_pod("Pending", main_state={"waiting": {"reason": "ErrImagePull",
                                                      "message": "manifest unknown"}}, with_sidecar=False)
    failure = classify(pod)
    assert failure.kind is FailureKind.IMAGE_PULL
    assert "manifest unknown" in failure.message
    assert IMAGE in failure.message


def test_create_container_config_error_is_never_retried() -> None:
    pod = make_pod("Pending", main_state={"waiting": {
        "reason": "CreateContainerConfigError", "message": 'secret "mlflow-credentials" not found'}})
    failure = classify(pod)
    assert failure.kind is FailureKind.CONFIG_ERROR
    assert failure.retry is Retry.NEVER
    assert 'secret "mlflow-credentials" not found' in failure.message
    assert "CreateContainerConfigError" in failure.message


def test_normal_waiting_is_no_failure() -> None:
    pod = make_pod("Pending", main_state={"waiting": {"reason": "ContainerCreating"}})
    assert classify_pod(pod) is None


# --- scheduling ---------------------------------------------------------------------------------------------

UNSCHEDULABLE = [
    {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
     "message": "0/5 nodes are available: 5 Insufficient nvidia.com/gpu. preemption: "
                "0/5 nodes are available: 5 No preemption victims found for incoming pod.",
     "lastTransitionTime": "2026-11-23T00:00:01Z"},
]


def test_unschedulable_quotes_the_scheduler_event() -> None:
    pod = make_pod("Pending", conditions=UNSCHEDULABLE)
    pod["status"]["containerStatuses"] = []
    latest = "0/5 nodes are available: 5 Insufficient nvidia.com/gpu."
    events = [
        event("FailedScheduling", "0/4 nodes are available: 4 Insufficient nvidia.com/gpu.",
              "2026-11-23T00:00:02Z"),
        event("FailedScheduling", latest, "2026-11-23T00:05:02Z"),
        event("Nominated", "Pod should schedule on: node/ip-10-0-12-7", "2026-11-23T00:06:00Z",
              kind="Normal"),
    ]
    failure = classify(pod, events)
    assert failure.kind is FailureKind.UNSCHEDULABLE
    assert failure.retry is Retry.NORMAL
    assert f"could not be scheduled: {latest} " in failure.message  # quoted exactly
    assert "0/4" not in failure.message
    assert "GpuSpec.gpus" in failure.message


def test_unschedulable_without_events_uses_the_condition() -> None:
    pod = make_pod("Pending", conditions=UNSCHEDULABLE)
    del pod["status"]["containerStatuses"]
    failure = classify(pod)
    assert failure.kind is FailureKind.UNSCHEDULABLE
    assert UNSCHEDULABLE[0]["message"] in failure.message


def test_events_without_timestamps_use_event_time() -> None:
    pod = make_pod("Pending", conditions=UNSCHEDULABLE)
    older = {"reason": "FailedScheduling", "message": "old", "eventTime": "2026-11-23T00:00:01.000000Z"}
    newer = {"reason": "FailedScheduling", "message": "new", "eventTime": "2026-11-23T00:09:01.000000Z"}
    assert "scheduled: new " in classify(pod, [newer, older]).message


# --- deadline, user code, unknown, healthy ------------------------------------------------------------------

def test_deadline_exceeded() -> None:
    pod = make_pod("Failed", main_state=terminated(137, "Error"), reason="DeadlineExceeded",
                   message="Pod was active on the node longer than the specified deadline")
    failure = classify(pod)
    assert failure.kind is FailureKind.DEADLINE_EXCEEDED
    assert failure.retry is Retry.NORMAL
    assert "(21600 s)" in failure.message
    assert "GpuSpec.active_deadline_seconds" in failure.message


@pytest.mark.parametrize("exit_code", [1, 2, 139])
def test_user_code_error_is_never_retried(exit_code: int) -> None:
    failure = classify(make_pod("Failed", main_state=terminated(exit_code, "Error")))
    assert failure.kind is FailureKind.USER_CODE
    assert failure.retry is Retry.NEVER and not failure.retryable
    assert failure.exit_code == exit_code
    assert f"exited with code {exit_code} (Error)" in failure.message


def test_failed_pod_with_no_detail_is_unknown_and_retried() -> None:
    pod = make_pod("Failed", reason="UnexpectedAdmissionError",
                   message="Allocate failed due to requested number of devices unavailable for "
                           "nvidia.com/gpu")
    failure = classify(pod)
    assert failure.kind is FailureKind.UNKNOWN
    assert failure.retry is Retry.NORMAL
    assert "UnexpectedAdmissionError" in failure.message
    assert "requested number of devices unavailable" in failure.message


def test_custom_container_name() -> None:
    pod = make_pod("Failed", main_state=terminated(137, "OOMKilled"))
    renamed = copy.deepcopy(pod)
    renamed["spec"]["containers"][1]["name"] = "trainer"
    renamed["status"]["containerStatuses"][1]["name"] = "trainer"
    assert classify(renamed, container="trainer").kind is FailureKind.OOM_KILLED
    # Looking for the default container finds no status: only the phase is left to go on.
    assert classify(renamed).kind is FailureKind.UNKNOWN


@pytest.mark.parametrize("pod", [
    make_pod("Running", main_state={"running": {"startedAt": "2026-11-23T00:00:10Z"}}),
    make_pod("Succeeded", main_state=terminated(0, "Completed")),
    make_pod("Pending"),
    {"metadata": {"name": "x"}},
    {},
], ids=["running", "succeeded", "pending", "no-status", "empty"])
def test_healthy_pods_are_not_failures(pod: dict[str, Any]) -> None:
    assert classify_pod(pod) is None
