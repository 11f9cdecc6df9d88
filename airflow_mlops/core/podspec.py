"""Kubernetes manifests (plain dicts) for a step: a Pod, or an Indexed Job + headless Service.

Pure functions of (StepSpec, StepContext). Every manifest they return is validated against the
Kubernetes OpenAPI schema in the tests.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_mlops.core.gpu import GPU_RESOURCE, CapacityType, GpuSpec
from airflow_mlops.core.quantity import format_quantity
from airflow_mlops.core.step import SecretEnvRef, StepSpec
from airflow_mlops.steps import contract

#: KubernetesPodOperator streams logs from and judges the container named "base".
MAIN_CONTAINER = "base"
RENDEZVOUS_PORT = 29500
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
MANAGED_BY = "airflow-mlops"
ANNOTATION_PREFIX = "mlops.airflow.apache.org"

DEFAULT_POD_SECURITY_CONTEXT: Mapping[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "runAsGroup": 1000,
    "fsGroup": 1000,
    "seccompProfile": {"type": "RuntimeDefault"},
}
DEFAULT_CONTAINER_SECURITY_CONTEXT: Mapping[str, Any] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


@dataclass(frozen=True)
class StepContext:
    """Where and for whom a step runs: identity, namespace and the env the orchestrator injects.

    :param dag_id: Airflow DAG id.
    :param task_id: Airflow task id.
    :param run_id: Airflow DAG run id.
    :param try_number: Airflow try number.
    :param namespace: Kubernetes namespace.
    :param env: non-secret env injected by the orchestrator (MLflow URI and run id, data and checkpoint URIs).
    :param secret_env: secret env injected by the orchestrator (MLflow token), as Secret references.
    """

    dag_id: str
    task_id: str
    run_id: str
    try_number: int = 1
    namespace: str = "default"
    env: Mapping[str, str] = field(default_factory=dict)
    secret_env: tuple[SecretEnvRef, ...] = ()


def label_value(value: str) -> str:
    """Squash any string into a valid label value (<= 63 chars, alnum at both ends), stable for one input."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", value).strip("-_.")
    if len(cleaned) > 63:
        digest = hashlib.sha256(value.encode()).hexdigest()[:8]
        cleaned = cleaned[:54].rstrip("-_.") + "-" + digest
    return cleaned or "none"


def dns_name(*parts: str, max_len: int = 63) -> str:
    """A DNS-1123 label built from ``parts``, shortened with a hash suffix when too long."""
    raw = "-".join(parts).lower()
    cleaned = re.sub(r"[^a-z0-9-]+", "-", raw).strip("-")
    cleaned = re.sub(r"-{2,}", "-", cleaned)
    if len(cleaned) > max_len:
        digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
        cleaned = cleaned[: max_len - 9].rstrip("-") + "-" + digest
    return cleaned or "step"


def labels(step: StepSpec, ctx: StepContext) -> dict[str, str]:
    """Recommended ``app.kubernetes.io/*`` labels, plus the Kueue queue label when set."""
    result = {
        "app.kubernetes.io/name": label_value(step.name),
        "app.kubernetes.io/instance": label_value(f"{ctx.dag_id}.{ctx.task_id}"),
        "app.kubernetes.io/component": "ml-step",
        "app.kubernetes.io/part-of": label_value(ctx.dag_id),
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }
    if step.compute.queue_name:
        result["kueue.x-k8s.io/queue-name"] = step.compute.queue_name
    return result


def pod_annotations(step: StepSpec, ctx: StepContext) -> dict[str, str]:
    """Full (unsquashed) lineage as annotations: labels cannot hold run ids with ':' or '+'."""
    return {
        f"{ANNOTATION_PREFIX}/dag-id": ctx.dag_id,
        f"{ANNOTATION_PREFIX}/task-id": ctx.task_id,
        f"{ANNOTATION_PREFIX}/run-id": ctx.run_id,
        f"{ANNOTATION_PREFIX}/try-number": str(ctx.try_number),
        f"{ANNOTATION_PREFIX}/compute": step.compute.describe(),
    }


def lineage_env(ctx: StepContext) -> dict[str, str]:
    """Airflow identity for the step process (tags on MLflow runs, log lines)."""
    return {
        contract.DAG_ID: ctx.dag_id,
        contract.TASK_ID: ctx.task_id,
        contract.AIRFLOW_RUN_ID: ctx.run_id,
        contract.TRY_NUMBER: str(ctx.try_number),
    }


def _env_list(step: StepSpec, ctx: StepContext, extra: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    merged: dict[str, str] = {**lineage_env(ctx), **ctx.env, **step.env, **(extra or {})}
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted(merged.items())]
    seen = set(merged)
    for ref in (*ctx.secret_env, *step.secret_env):
        if ref.env in seen:
            continue  # a literal value set by the DAG author wins over an injected secret
        seen.add(ref.env)
        env.append({"name": ref.env, "valueFrom": {"secretKeyRef": {"name": ref.secret_name, "key": ref.key}}})
    return env


def resources(compute: GpuSpec) -> dict[str, dict[str, str]]:
    """Container requests/limits; GPU (an extended resource) has request == limit."""
    requests = {"cpu": format_quantity(compute.cpu_request), "memory": compute.memory_request}
    limits = {"memory": compute.effective_memory_limit}
    if compute.cpu_limit is not None:
        limits["cpu"] = format_quantity(compute.cpu_limit)
    if compute.gpus:
        requests[GPU_RESOURCE] = str(compute.gpus)
        limits[GPU_RESOURCE] = str(compute.gpus)
    return {"requests": requests, "limits": limits}


def node_affinity(compute: GpuSpec) -> dict[str, Any] | None:
    """Required node affinity for GPU type and capacity type, or None when neither is constrained."""
    profile = compute.profile
    expressions: list[dict[str, Any]] = []
    if compute.gpu_type:
        expressions.append({"key": profile.gpu_label, "operator": "In",
                            "values": list(profile.gpu_values[compute.gpu_type])})
    if compute.capacity_type:
        value = profile.capacity_values[CapacityType(compute.capacity_type).value]
        expressions.append({"key": profile.capacity_label, "operator": "In", "values": [value]})
    if not expressions:
        return None
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": expressions}]}}}


def tolerations(compute: GpuSpec) -> list[dict[str, Any]]:
    """GPU nodes carry the ``nvidia.com/gpu`` NoSchedule taint: tolerate it whenever GPUs are requested."""
    result: list[dict[str, Any]] = []
    if compute.gpus:
        result.append({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    result.extend(dict(t) for t in compute.extra_tolerations)
    return result


def _with_refs(env: list[dict[str, Any]], refs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Append field refs whose names the env does not already set (an explicit value wins)."""
    names = {e["name"] for e in env}
    return env + [r for r in refs if r["name"] not in names]


def pod_template_spec(step: StepSpec, ctx: StepContext, extra_env: Mapping[str, str] | None = None,
                      extra_env_refs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The pod ``spec`` shared by single pods and Job templates."""
    compute = step.compute
    container: dict[str, Any] = {
        "name": MAIN_CONTAINER,
        "image": step.image,
        "imagePullPolicy": step.image_pull_policy,
        "command": step.argv()[:1] if step.command is None else list(step.command),
        "args": step.argv()[1:] if step.command is None else list(step.args),
        "env": _with_refs(_env_list(step, ctx, extra_env), extra_env_refs or []),
        "resources": resources(compute),
        "securityContext": dict(step.container_security_context or DEFAULT_CONTAINER_SECURITY_CONTEXT),
    }
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "securityContext": dict(step.pod_security_context or DEFAULT_POD_SECURITY_CONTEXT),
        "activeDeadlineSeconds": compute.active_deadline_seconds or step.timeout_seconds,
        "terminationGracePeriodSeconds": 60,
    }
    if compute.shm_size:
        container["volumeMounts"] = [{"name": "dshm", "mountPath": "/dev/shm"}]
        spec["volumes"] = [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": compute.shm_size}}]
    affinity = node_affinity(compute)
    if affinity:
        spec["affinity"] = affinity
    tols = tolerations(compute)
    if tols:
        spec["tolerations"] = tols
    if compute.priority_class:
        spec["priorityClassName"] = compute.priority_class
    if compute.service_account:
        spec["serviceAccountName"] = compute.service_account
    return spec


def build_pod(step: StepSpec, ctx: StepContext) -> dict[str, Any]:
    """A single-pod manifest for ``step`` (compute.num_workers == 1)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": dns_name("mlops", step.name),
            "namespace": ctx.namespace,
            "labels": labels(step, ctx),
            "annotations": pod_annotations(step, ctx),
        },
        "spec": pod_template_spec(step, ctx),
    }


def job_name(step: StepSpec, ctx: StepContext) -> str:
    """A deterministic Job name per (dag, task, run, try), short enough for ``<name>-<index>`` hostnames."""
    digest = hashlib.sha256(f"{ctx.dag_id}/{ctx.task_id}/{ctx.run_id}/{ctx.try_number}".encode()).hexdigest()
    # Starts with "job-": the cncf provider always prefixes Job names so, and MASTER_ADDR must match.
    return "job-" + dns_name("mlops", step.name, digest[:8], max_len=46)


def rendezvous_env(step: StepSpec, ctx: StepContext) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """torchrun env: MASTER_ADDR is worker 0's stable hostname; NODE_RANK comes from the completion index."""
    name = job_name(step, ctx)
    plain = {
        contract.MASTER_ADDR: f"{name}-0.{name}.{ctx.namespace}.svc",
        contract.MASTER_PORT: str(RENDEZVOUS_PORT),
        contract.WORLD_SIZE: str(step.compute.num_workers),
    }
    refs = [{"name": contract.NODE_RANK, "valueFrom": {"fieldRef": {
        "fieldPath": f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"}}}]
    return plain, refs


def build_indexed_job(step: StepSpec, ctx: StepContext) -> dict[str, Any]:
    """An Indexed Job running ``num_workers`` pods that find each other through the headless Service."""
    name = job_name(step, ctx)
    plain, refs = rendezvous_env(step, ctx)
    pod_spec = pod_template_spec(step, ctx, extra_env=plain, extra_env_refs=refs)
    pod_spec["subdomain"] = name
    container = pod_spec["containers"][0]
    container["ports"] = [{"name": "rendezvous", "containerPort": RENDEZVOUS_PORT}]
    workers = step.compute.num_workers
    pod_labels = labels(step, ctx)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": ctx.namespace, "labels": pod_labels,
                     "annotations": pod_annotations(step, ctx)},
        "spec": {
            "completionMode": "Indexed",
            "completions": workers,
            "parallelism": workers,
            # A lost worker breaks the collective: fail fast and let Airflow retry from the checkpoint...
            "backoffLimit": 0,
            # ...except for disruptions (spot reclaim, preemption), which the Job replaces in place.
            "podFailurePolicy": {"rules": [
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            ]},
            "activeDeadlineSeconds": step.compute.active_deadline_seconds or step.timeout_seconds,
            "ttlSecondsAfterFinished": 3600,
            "template": {
                "metadata": {"labels": dict(pod_labels), "annotations": pod_annotations(step, ctx)},
                "spec": pod_spec,
            },
        },
    }


def build_headless_service(step: StepSpec, ctx: StepContext) -> dict[str, Any]:
    """Headless Service giving each indexed worker a DNS name; ready or not, so rendezvous can start."""
    name = job_name(step, ctx)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ctx.namespace, "labels": labels(step, ctx)},
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {"batch.kubernetes.io/job-name": name},
            "ports": [{"name": "rendezvous", "port": RENDEZVOUS_PORT, "targetPort": RENDEZVOUS_PORT}],
        },
    }
