"""Why a step's pod failed, from its status and events, as a message that says what to change.

Input is the pod as Kubernetes JSON (camelCase, as the API returns it) and the pod's events.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from airflow_mlops.core.podspec import MAIN_CONTAINER

IMAGE_PULL_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
CONFIG_ERROR_REASONS = frozenset({"CreateContainerConfigError", "CreateContainerError"})
# Disruption reasons Kubernetes puts on the DisruptionTarget condition or the pod status.
DISRUPTION_REASONS = frozenset({
    "Evicted", "Preempting", "PreemptionByScheduler", "PreemptionByKubeScheduler", "DeletionByTaintManager",
    "EvictionByEvictionAPI", "DeletionByPodGC", "TerminationByKubelet", "NodeShutdown", "Terminated",
})


class Retry(str, Enum):
    """What Airflow should do with a failure."""

    NORMAL = "normal"  # obey the task's retries
    RESUME = "resume"  # obey retries; the next try resumes from the checkpoint
    NEVER = "never"  # fail now: retrying cannot help


class FailureKind(str, Enum):
    """The classes of pod failure we tell apart."""

    OOM_KILLED = "OOMKilled"
    EVICTED = "Evicted"
    IMAGE_PULL = "ImagePull"
    CONFIG_ERROR = "ContainerConfigError"
    UNSCHEDULABLE = "Unschedulable"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    USER_CODE = "UserCodeError"
    UNKNOWN = "Unknown"


@dataclass(frozen=True)
class PodFailure:
    """A classified failure: kind, retry decision and a message naming the cause and the fix."""

    kind: FailureKind
    retry: Retry
    message: str
    exit_code: int | None = None

    @property
    def retryable(self) -> bool:
        """False when retrying cannot help (bad image, bad config, user code)."""
        return self.retry is not Retry.NEVER


def _main_status(pod: Mapping[str, Any], container: str) -> Mapping[str, Any]:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == container:
            return status
    return {}


def _condition(pod: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return cond
    return {}


def _image(pod: Mapping[str, Any], container: str) -> str:
    for spec in (pod.get("spec") or {}).get("containers") or []:
        if spec.get("name") == container:
            return str(spec.get("image", "?"))
    return "?"


def _memory_limit(pod: Mapping[str, Any], container: str) -> str:
    for spec in (pod.get("spec") or {}).get("containers") or []:
        if spec.get("name") == container:
            return str(((spec.get("resources") or {}).get("limits") or {}).get("memory", "unset"))
    return "unset"


def _events_text(events: Sequence[Mapping[str, Any]], reasons: set[str]) -> str | None:
    matching = [e for e in events if e.get("reason") in reasons and e.get("message")]
    if not matching:
        return None
    latest = max(matching, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
    return str(latest["message"])


def classify_pod(pod: Mapping[str, Any], events: Sequence[Mapping[str, Any]] = (),
                 container: str = MAIN_CONTAINER, checkpoint_uri: str | None = None) -> PodFailure | None:
    """Classify a failed or stuck pod; None when the pod shows no failure (running or succeeded).

    :param pod: the pod as API JSON.
    :param events: events whose involvedObject is this pod.
    :param container: the main container's name.
    :param checkpoint_uri: where the next try resumes from, quoted in eviction messages.
    """
    status = pod.get("status") or {}
    name = (pod.get("metadata") or {}).get("name", "?")
    main = _main_status(pod, container)
    state = main.get("state") or {}
    terminated = state.get("terminated") or (main.get("lastState") or {}).get("terminated") or {}
    waiting = state.get("waiting") or {}
    phase = status.get("phase")
    disruption = _condition(pod, "DisruptionTarget")

    if waiting.get("reason") in IMAGE_PULL_REASONS:
        detail = _events_text(events, {"Failed"}) or waiting.get("message") or waiting["reason"]
        return PodFailure(
            FailureKind.IMAGE_PULL, Retry.NEVER,
            f"Pod {name}: image {_image(pod, container)!r} cannot be pulled ({waiting['reason']}: {detail}). "
            "Check the image name and tag (or digest), that it exists in the registry, and the registry "
            "credentials (imagePullSecrets, node IAM role). Not retried: retrying pulls the same image.",
        )
    if waiting.get("reason") in CONFIG_ERROR_REASONS:
        detail = waiting.get("message") or _events_text(events, {"Failed"}) or waiting["reason"]
        return PodFailure(
            FailureKind.CONFIG_ERROR, Retry.NEVER,
            f"Pod {name}: container cannot start ({waiting['reason']}: {detail}). Usually a missing Secret or "
            "ConfigMap key referenced by env; create it in the pod's namespace. Not retried.",
        )
    scheduled = _condition(pod, "PodScheduled")
    if phase == "Pending" and scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        reason = _events_text(events, {"FailedScheduling"}) or scheduled.get("message") or "no reason given"
        return PodFailure(
            FailureKind.UNSCHEDULABLE, Retry.NORMAL,
            f"Pod {name} could not be scheduled: {reason} Ask for fewer or other GPUs (GpuSpec.gpus, gpu_type, "
            "capacity_type), relax node placement, or add capacity (Karpenter NodePool limits, node group size).",
        )
    disrupted_by = status.get("reason") if status.get("reason") in DISRUPTION_REASONS else None
    if disruption.get("status") == "True":
        disrupted_by = disruption.get("reason") or disrupted_by or "DisruptionTarget"
    if phase == "Failed" and disrupted_by:
        why = status.get("message") or disruption.get("message") or disrupted_by
        resume = f" from checkpoint {checkpoint_uri}" if checkpoint_uri else " from its latest checkpoint"
        return PodFailure(
            FailureKind.EVICTED, Retry.RESUME,
            f"Pod {name} was evicted or preempted ({disrupted_by}: {why}). This is not a bug in the step: the "
            f"next try resumes{resume} and continues the same MLflow run. Use capacity_type='on-demand' if "
            "spot interruptions recur.",
            exit_code=terminated.get("exitCode"),
        )
    if phase == "Failed" and status.get("reason") == "DeadlineExceeded":
        return PodFailure(
            FailureKind.DEADLINE_EXCEEDED, Retry.NORMAL,
            f"Pod {name} ran past its active deadline ({(pod.get('spec') or {}).get('activeDeadlineSeconds')} s) "
            "and was stopped. Raise GpuSpec.active_deadline_seconds / the step timeout, or checkpoint more often.",
        )
    if terminated.get("reason") == "OOMKilled":
        return PodFailure(
            FailureKind.OOM_KILLED, Retry.NORMAL,
            f"Pod {name}: container {container!r} was OOMKilled (exit {terminated.get('exitCode', 137)}) at its "
            f"memory limit {_memory_limit(pod, container)}. Raise GpuSpec.memory_limit, lower the batch size, "
            "or use fewer DataLoader workers.",
            exit_code=terminated.get("exitCode", 137),
        )
    exit_code = terminated.get("exitCode")
    if phase == "Failed" and exit_code not in (None, 0):
        return PodFailure(
            FailureKind.USER_CODE, Retry.NEVER,
            f"Pod {name}: step exited with code {exit_code} ({terminated.get('reason') or 'Error'}). This is an "
            "error in the step's code or input, shown in the log above; fix it and clear the task. Not retried.",
            exit_code=exit_code,
        )
    if phase == "Failed":
        return PodFailure(
            FailureKind.UNKNOWN, Retry.NORMAL,
            f"Pod {name} failed ({status.get('reason') or 'no reason'}: {status.get('message') or 'no message'}).",
        )
    return None
