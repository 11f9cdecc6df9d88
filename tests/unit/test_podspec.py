"""GpuSpec + StepSpec + StepContext -> Kubernetes manifests.

Every manifest is validated against the Kubernetes OpenAPI schema (kubernetes-validate, strict: unknown fields
fail), and the scheduling semantics (GPU resources, tolerations, node affinity, shm, security context, env,
labels, rendezvous) are asserted on top, for many generated combinations.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import kubernetes_validate
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes_validate.utils import all_versions, major_minor

from airflow_mlops.core.gpu import GpuSpec
from airflow_mlops.core.podspec import (
    DEFAULT_CONTAINER_SECURITY_CONTEXT,
    DEFAULT_POD_SECURITY_CONTEXT,
    MAIN_CONTAINER,
    RENDEZVOUS_PORT,
    StepContext,
    build_headless_service,
    build_indexed_job,
    build_pod,
    dns_name,
    job_name,
    label_value,
)
from airflow_mlops.core.quantity import parse_quantity
from airflow_mlops.core.step import SecretEnvRef, StepSpec
from tests.unit.test_gpu_spec import gpu_spec_kwargs

# The newest 1.3x schema the installed kubernetes-validate ships (1.37 with kubernetes-validate 1.37).
K8S_VERSION = max((v for v in all_versions() if v.startswith("1.3")), key=major_minor).rsplit(".", 1)[0]

LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
GPU = "nvidia.com/gpu"
RENDEZVOUS_ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "NODE_RANK")
# profile -> (label, {capacity type -> label value}), written out rather than read from the profile
CAPACITY = {
    "karpenter": ("karpenter.sh/capacity-type", {"spot": "spot", "on-demand": "on-demand"}),
    "gpu-feature-discovery": ("eks.amazonaws.com/capacityType", {"spot": "SPOT", "on-demand": "ON_DEMAND"}),
}

UGLY_RUN_IDS = [
    "manual__2026-11-23T00:00:00+00:00",
    "scheduled__2026-11-23T00:00:00+00:00",
    "asset_triggered__2026-11-23T12:34:56.789012+00:00",
    "backfill__2026-11-23T00:00:00+00:00",
    "r" * 400,
    "::++::",
    "ünïcødé run / with spaces",
    "-._-",
]


def validate(manifest: dict[str, Any]) -> None:
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def is_label_value(value: str) -> bool:
    return isinstance(value, str) and len(value) <= 63 and bool(LABEL_VALUE.match(value))


def is_label_key(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not DNS_SUBDOMAIN.match(prefix)):
        return False
    return len(name) <= 63 and bool(LABEL_NAME.match(name))


def env_of(container: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    entries = container["env"]
    names = [e["name"] for e in entries]
    assert len(names) == len(set(names)), f"duplicate env names: {names}"
    return {e["name"]: e for e in entries}


# --- strategies ---------------------------------------------------------------------------------------------

airflow_ids = st.from_regex(r"\A[A-Za-z0-9_.-]{1,250}\Z", fullmatch=True)
ugly_ids = st.sampled_from(UGLY_RUN_IDS) | st.text(max_size=300)
env_values = st.text(max_size=40)


@st.composite
def secret_refs(draw: st.DrawFn, prefix: str) -> tuple[SecretEnvRef, ...]:
    names = draw(st.lists(st.from_regex(rf"\A{prefix}[A-Z0-9_]{{1,8}}\Z", fullmatch=True), max_size=3,
                          unique=True))
    secret_names = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?\Z", fullmatch=True)
    keys = st.from_regex(r"\A[-._a-zA-Z0-9]{1,20}\Z", fullmatch=True)
    return tuple(SecretEnvRef(n, draw(secret_names), draw(keys)) for n in names)


@st.composite
def steps(draw: st.DrawFn) -> StepSpec:
    compute = GpuSpec(**draw(gpu_spec_kwargs()))
    kwargs: dict[str, Any] = {
        "name": draw(st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?\Z", fullmatch=True)),
        "image": draw(st.sampled_from([
            "ghcr.io/acme/trainer:1.2.3", "trainer",
            "123456789012.dkr.ecr.us-east-1.amazonaws.com/ml/train@sha256:" + "a" * 64])),
        "args": tuple(draw(st.lists(st.text(max_size=20), max_size=4))),
        "env": draw(st.dictionaries(st.from_regex(r"\AAPP_[A-Z0-9_]{1,10}\Z", fullmatch=True), env_values,
                                    max_size=4)),
        "secret_env": draw(secret_refs("STEP_SECRET_")),
        "compute": compute,
        "timeout_seconds": draw(st.integers(1, 7 * 24 * 3600)),
        "image_pull_policy": draw(st.sampled_from(["Always", "IfNotPresent", "Never"])),
    }
    if draw(st.booleans()):
        kwargs["module"] = draw(st.sampled_from(["acme.train", "airflow_mlops.steps.train"]))
    else:
        kwargs["command"] = tuple(draw(st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=3)))
    if draw(st.booleans()):
        kwargs["container_security_context"] = {"runAsUser": 0, "privileged": False}
    if draw(st.booleans()):
        kwargs["pod_security_context"] = {"runAsUser": 2000, "fsGroup": 2000}
    return StepSpec(**kwargs)


@st.composite
def contexts(draw: st.DrawFn) -> StepContext:
    return StepContext(
        dag_id=draw(airflow_ids | ugly_ids),
        task_id=draw(airflow_ids | ugly_ids),
        run_id=draw(ugly_ids),
        try_number=draw(st.integers(1, 100)),
        namespace=draw(st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?\Z", fullmatch=True)),
        env=draw(st.dictionaries(
            st.sampled_from(["MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLOPS_CHECKPOINT_URI",
                             "MLOPS_RESULT_URI"]),
            env_values, max_size=4)),
        secret_env=draw(secret_refs("CTX_SECRET_")),
    )


# --- shared semantic checks ---------------------------------------------------------------------------------

def check_metadata(meta: Mapping[str, Any], step: StepSpec, ctx: StepContext) -> None:
    assert meta["namespace"] == ctx.namespace
    labels = meta["labels"]
    for key, value in labels.items():
        assert is_label_key(key), key
        assert is_label_value(value), (key, value)
    assert labels["app.kubernetes.io/name"] == step.name
    assert labels["app.kubernetes.io/component"] == "ml-step"
    assert labels["app.kubernetes.io/managed-by"] == "airflow-mlops"
    assert labels["app.kubernetes.io/instance"]
    assert labels["app.kubernetes.io/part-of"]
    if step.compute.queue_name:
        assert labels["kueue.x-k8s.io/queue-name"] == step.compute.queue_name
    else:
        assert "kueue.x-k8s.io/queue-name" not in labels
    # Labels are squashed; the annotations keep the exact identity.
    annotations = meta["annotations"]
    assert annotations["mlops.airflow.apache.org/dag-id"] == ctx.dag_id
    assert annotations["mlops.airflow.apache.org/task-id"] == ctx.task_id
    assert annotations["mlops.airflow.apache.org/run-id"] == ctx.run_id
    assert annotations["mlops.airflow.apache.org/try-number"] == str(ctx.try_number)


def check_pod_spec(spec: Mapping[str, Any], step: StepSpec, ctx: StepContext) -> dict[str, dict[str, Any]]:
    """Assert the scheduling and security semantics of a pod spec; return its main container's env by name."""
    compute = step.compute
    (container,) = spec["containers"]
    assert container["name"] == MAIN_CONTAINER
    assert container["image"] == step.image
    assert container["imagePullPolicy"] == step.image_pull_policy
    assert [*container["command"], *container["args"]] == step.argv()
    assert spec["restartPolicy"] == "Never"

    # Resources: GPU request == limit == gpus, and only when GPUs are asked for.
    res = container["resources"]
    if compute.gpus:
        assert res["requests"][GPU] == res["limits"][GPU] == str(compute.gpus)
    else:
        assert GPU not in res["requests"] and GPU not in res["limits"]
    assert parse_quantity(res["requests"]["cpu"], "cpu") == parse_quantity(compute.cpu_request, "cpu")
    assert res["requests"]["memory"] == compute.memory_request
    assert res["limits"]["memory"] == (compute.memory_limit or compute.memory_request)
    if compute.cpu_limit is None:
        assert "cpu" not in res["limits"]
    else:
        assert parse_quantity(res["limits"]["cpu"], "cpu") == parse_quantity(compute.cpu_limit, "cpu")

    # The GPU taint toleration exactly when GPUs are requested; extra tolerations kept.
    gpu_tolerations = [t for t in spec.get("tolerations", []) if t.get("key") == GPU]
    if compute.gpus:
        assert gpu_tolerations == [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}]
    else:
        assert gpu_tolerations == []
    for extra in compute.extra_tolerations:
        assert extra in spec["tolerations"]

    # Node affinity from the profile's label mapping.
    affinity = spec.get("affinity")
    if not compute.gpu_type and not compute.capacity_type:
        assert affinity is None
    else:
        required = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        terms = required["nodeSelectorTerms"]
        assert len(terms) == 1  # one term: all expressions ANDed
        by_key = {e["key"]: e for e in terms[0]["matchExpressions"]}
        profile = compute.profile
        if compute.gpu_type:
            assert by_key.pop(profile.gpu_label) == {"key": profile.gpu_label, "operator": "In",
                                                     "values": list(profile.gpu_values[compute.gpu_type])}
        if compute.capacity_type:
            label, values = CAPACITY[profile.name]
            assert by_key.pop(label) == {"key": label, "operator": "In",
                                         "values": [values[compute.capacity_type.value]]}
        assert by_key == {}

    # /dev/shm as a memory-backed emptyDir with a size limit.
    if compute.shm_size:
        assert spec["volumes"] == [
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": compute.shm_size}}]
        assert container["volumeMounts"] == [{"name": "dshm", "mountPath": "/dev/shm"}]
    else:
        assert "volumes" not in spec and "volumeMounts" not in container

    # Secure defaults, replaced (not merged) by an override.
    if step.container_security_context is None:
        csc = container["securityContext"]
        assert csc["runAsNonRoot"] is True
        assert csc["allowPrivilegeEscalation"] is False
        assert csc["capabilities"] == {"drop": ["ALL"]}
        assert csc["seccompProfile"] == {"type": "RuntimeDefault"}
    else:
        assert container["securityContext"] == dict(step.container_security_context)
    if step.pod_security_context is None:
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    else:
        assert spec["securityContext"] == dict(step.pod_security_context)

    # Scheduling knobs only when set.
    assert spec.get("priorityClassName") == compute.priority_class
    assert spec.get("serviceAccountName") == compute.service_account
    assert spec["activeDeadlineSeconds"] == (compute.active_deadline_seconds or step.timeout_seconds)

    # Env: lineage, orchestrator and step values; secrets only as Secret references.
    env = env_of(container)
    assert env["MLOPS_DAG_ID"]["value"] == ctx.dag_id
    assert env["MLOPS_TASK_ID"]["value"] == ctx.task_id
    assert env["MLOPS_AIRFLOW_RUN_ID"]["value"] == ctx.run_id
    assert env["MLOPS_TRY_NUMBER"]["value"] == str(ctx.try_number)
    for key, value in {**ctx.env, **step.env}.items():
        assert env[key] == {"name": key, "value": value}
    for ref in (*ctx.secret_env, *step.secret_env):
        assert env[ref.env] == {"name": ref.env,
                                "valueFrom": {"secretKeyRef": {"name": ref.secret_name, "key": ref.key}}}
        assert "value" not in env[ref.env]
    for entry in env.values():
        assert ("value" in entry) != ("valueFrom" in entry)
    return env


# Schema validation takes ~10 ms a manifest: 60 examples keep each property test to a few seconds.
MANIFEST_SETTINGS = settings(max_examples=60, deadline=None,
                             suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# --- property tests over many combinations ------------------------------------------------------------------

@MANIFEST_SETTINGS
@given(step=steps(), ctx=contexts())
def test_pod_manifest_is_valid_and_correct(step: StepSpec, ctx: StepContext) -> None:
    pod = build_pod(step, ctx)
    validate(pod)
    assert (pod["apiVersion"], pod["kind"]) == ("v1", "Pod")
    name = pod["metadata"]["name"]
    assert len(name) <= 63 and DNS_LABEL.match(name)
    check_metadata(pod["metadata"], step, ctx)
    env = check_pod_spec(pod["spec"], step, ctx)
    assert not set(RENDEZVOUS_ENV) & set(env)
    assert "subdomain" not in pod["spec"]


@MANIFEST_SETTINGS
@given(step=steps(), ctx=contexts())
def test_indexed_job_and_service_are_valid_and_correct(step: StepSpec, ctx: StepContext) -> None:
    job = build_indexed_job(step, ctx)
    service = build_headless_service(step, ctx)
    validate(job)
    validate(service)

    name = job_name(step, ctx)
    assert len(name) <= 50 and DNS_1035_LABEL.match(name)
    assert job["metadata"]["name"] == service["metadata"]["name"] == name
    check_metadata(job["metadata"], step, ctx)
    check_metadata(job["spec"]["template"]["metadata"] | {"namespace": ctx.namespace}, step, ctx)

    workers = step.compute.num_workers
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == workers
    assert spec["backoffLimit"] == 0
    assert spec["podFailurePolicy"]["rules"] == [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]
    assert spec["activeDeadlineSeconds"] == (step.compute.active_deadline_seconds or step.timeout_seconds)

    pod_spec = spec["template"]["spec"]
    assert pod_spec["subdomain"] == service["metadata"]["name"]
    env = check_pod_spec(pod_spec, step, ctx)
    assert env["MASTER_ADDR"]["value"] == f"{name}-0.{name}.{ctx.namespace}.svc"
    assert env["MASTER_PORT"]["value"] == str(RENDEZVOUS_PORT)
    assert env["WORLD_SIZE"]["value"] == str(workers)
    assert env["NODE_RANK"] == {"name": "NODE_RANK", "valueFrom": {"fieldRef": {
        "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}}
    (container,) = pod_spec["containers"]
    assert {"name": "rendezvous", "containerPort": RENDEZVOUS_PORT} in container["ports"]

    svc = service["spec"]
    assert svc["clusterIP"] == "None"
    assert svc["publishNotReadyAddresses"] is True
    assert svc["selector"] == {"batch.kubernetes.io/job-name": name}
    assert svc["ports"] == [{"name": "rendezvous", "port": RENDEZVOUS_PORT, "targetPort": RENDEZVOUS_PORT}]
    assert service["metadata"]["namespace"] == ctx.namespace


# --- explicit examples --------------------------------------------------------------------------------------

CTX = StepContext(dag_id="train_fraud_model", task_id="train", run_id="manual__2026-11-23T00:00:00+00:00",
                  try_number=2, namespace="ml")


def step_with(**compute: Any) -> StepSpec:
    return StepSpec(name="train", image="ghcr.io/acme/trainer:1.0", module="acme.train",
                    compute=GpuSpec(**compute))


def affinity_expressions(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    return spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"][0]["matchExpressions"]


def test_karpenter_a100_spot() -> None:
    pod = build_pod(step_with(gpus=4, gpu_type="a100", capacity_type="spot"), CTX)
    validate(pod)
    assert affinity_expressions(pod["spec"]) == [
        {"key": "karpenter.k8s.aws/instance-gpu-name", "operator": "In", "values": ["a100"]},
        {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot"]},
    ]
    resources = pod["spec"]["containers"][0]["resources"]
    assert resources["limits"][GPU] == resources["requests"][GPU] == "4"


def test_gpu_feature_discovery_a100_matches_several_products() -> None:
    pod = build_pod(step_with(gpus=1, gpu_type="a100", node_labels="gpu-feature-discovery",
                              capacity_type="on-demand"), CTX)
    validate(pod)
    gpu_expr, capacity_expr = affinity_expressions(pod["spec"])
    assert gpu_expr["key"] == "nvidia.com/gpu.product"
    assert gpu_expr["operator"] == "In"
    products = {"NVIDIA-A100-SXM4-40GB", "NVIDIA-A100-SXM4-80GB", "NVIDIA-A100-PCIE-40GB"}
    assert products <= set(gpu_expr["values"])
    assert len(gpu_expr["values"]) >= 3
    assert capacity_expr == {"key": "eks.amazonaws.com/capacityType", "operator": "In",
                             "values": ["ON_DEMAND"]}


def test_cpu_step_has_no_gpu_scheduling() -> None:
    pod = build_pod(step_with(), CTX)
    validate(pod)
    spec = pod["spec"]
    assert "affinity" not in spec and "tolerations" not in spec
    assert spec["containers"][0]["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"},
                                                  "limits": {"memory": "2Gi"}}


def test_any_gpu_without_type_tolerates_but_has_no_affinity() -> None:
    spec = build_pod(step_with(gpus=1), CTX)["spec"]
    assert "affinity" not in spec
    assert spec["tolerations"] == [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}]


def test_quantities_are_rendered_as_strings() -> None:
    pod = build_pod(step_with(cpu_request=4, cpu_limit=8.0, memory_request="16Gi", memory_limit="20Gi",
                              shm_size="8Gi"), CTX)
    validate(pod)
    resources = pod["spec"]["containers"][0]["resources"]
    assert resources == {"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"memory": "20Gi", "cpu": "8"}}
    assert pod["spec"]["volumes"][0]["emptyDir"] == {"medium": "Memory", "sizeLimit": "8Gi"}


def test_scheduling_fields_set_when_given() -> None:
    step = step_with(gpus=1, queue_name="team-a", priority_class="ml-high", service_account="trainer",
                     active_deadline_seconds=7200)
    pod = build_pod(step, CTX)
    job = build_indexed_job(step, CTX)
    for manifest in (pod, job, build_headless_service(step, CTX)):
        validate(manifest)
    assert pod["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"  # Kueue admits the Job itself
    for spec in (pod["spec"], job["spec"]["template"]["spec"]):
        assert spec["priorityClassName"] == "ml-high"
        assert spec["serviceAccountName"] == "trainer"
        assert spec["activeDeadlineSeconds"] == 7200
    assert job["spec"]["activeDeadlineSeconds"] == 7200


def test_step_timeout_is_the_deadline_when_compute_sets_none() -> None:
    step = StepSpec(name="train", image="i", module="m", timeout_seconds=900)
    assert build_pod(step, CTX)["spec"]["activeDeadlineSeconds"] == 900
    assert build_indexed_job(step, CTX)["spec"]["activeDeadlineSeconds"] == 900


def test_default_security_context_is_restricted() -> None:
    spec = build_pod(step_with(), CTX)["spec"]
    assert spec["containers"][0]["securityContext"] == dict(DEFAULT_CONTAINER_SECURITY_CONTEXT)
    assert spec["securityContext"] == dict(DEFAULT_POD_SECURITY_CONTEXT)
    assert spec["securityContext"]["runAsUser"] != 0


def test_security_context_override_replaces_default() -> None:
    step = StepSpec(name="train", image="i", module="m", container_security_context={"runAsUser": 0},
                    pod_security_context={"fsGroup": 100})
    pod = build_pod(step, CTX)
    validate(pod)
    assert pod["spec"]["containers"][0]["securityContext"] == {"runAsUser": 0}
    assert pod["spec"]["securityContext"] == {"fsGroup": 100}
    # The override does not leak into the module-level defaults.
    assert DEFAULT_CONTAINER_SECURITY_CONTEXT["capabilities"] == {"drop": ["ALL"]}


def test_secret_env_only_as_references() -> None:
    step = StepSpec(name="train", image="i", module="m", env={"EPOCHS": "3"},
                    secret_env=(SecretEnvRef("HF_TOKEN", "hf", "token"),))
    ctx = StepContext(dag_id="d", task_id="t", run_id="r", env={"MLFLOW_TRACKING_URI": "http://mlflow:5000"},
                      secret_env=(SecretEnvRef("MLFLOW_TRACKING_TOKEN", "mlflow-credentials", "token"),))
    env = env_of(build_pod(step, ctx)["spec"]["containers"][0])
    assert env["HF_TOKEN"] == {"name": "HF_TOKEN",
                               "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}
    assert env["MLFLOW_TRACKING_TOKEN"] == {
        "name": "MLFLOW_TRACKING_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "mlflow-credentials", "key": "token"}}}
    assert env["EPOCHS"] == {"name": "EPOCHS", "value": "3"}
    assert env["MLFLOW_TRACKING_URI"]["value"] == "http://mlflow:5000"


def test_step_env_overrides_context_env_and_literal_beats_injected_secret() -> None:
    step = StepSpec(name="train", image="i", module="m",
                    env={"MLFLOW_TRACKING_URI": "http://other", "MLFLOW_TRACKING_TOKEN": "dev-token"})
    ctx = StepContext(dag_id="d", task_id="t", run_id="r", env={"MLFLOW_TRACKING_URI": "http://mlflow"},
                      secret_env=(SecretEnvRef("MLFLOW_TRACKING_TOKEN", "mlflow-credentials", "token"),))
    env = env_of(build_pod(step, ctx)["spec"]["containers"][0])
    assert env["MLFLOW_TRACKING_URI"]["value"] == "http://other"
    assert env["MLFLOW_TRACKING_TOKEN"] == {"name": "MLFLOW_TRACKING_TOKEN", "value": "dev-token"}


def test_module_step_command_and_args() -> None:
    step = StepSpec(name="train", image="i", module="acme.train", args=("--epochs", "3"))
    container = build_pod(step, CTX)["spec"]["containers"][0]
    assert container["command"] == ["python"]
    assert container["args"] == ["-m", "acme.train", "--epochs", "3"]


@pytest.mark.parametrize("run_id", UGLY_RUN_IDS)
def test_labels_valid_for_ugly_ids(run_id: str) -> None:
    ctx = StepContext(dag_id="d" * 200 + ":x", task_id="group.train+eval", run_id=run_id, namespace="ml")
    pod = build_pod(step_with(gpus=1), ctx)
    validate(pod)
    for key, value in pod["metadata"]["labels"].items():
        assert is_label_key(key) and is_label_value(value), (key, value)
    assert pod["metadata"]["annotations"]["mlops.airflow.apache.org/run-id"] == run_id
    env = env_of(pod["spec"]["containers"][0])
    assert env["MLOPS_AIRFLOW_RUN_ID"]["value"] == run_id


@given(st.text(max_size=500))
def test_label_value_always_valid_and_stable(value: str) -> None:
    squashed = label_value(value)
    assert is_label_value(squashed) and squashed
    assert label_value(value) == squashed
    if is_label_value(value) and value:
        assert squashed == value  # already-valid values pass through unchanged


def test_label_value_long_ids_keep_distinct() -> None:
    a, b = "x" * 100 + "a", "x" * 100 + "b"
    assert label_value(a) != label_value(b)
    assert len(label_value(a)) == 63


@given(st.lists(st.text(max_size=80), min_size=1, max_size=4), st.integers(10, 63))
def test_dns_name_always_a_dns_label(parts: list[str], max_len: int) -> None:
    name = dns_name(*parts, max_len=max_len)
    assert len(name) <= max_len
    assert DNS_LABEL.match(name)
    assert dns_name(*parts, max_len=max_len) == name


@given(ctx=contexts(), name=st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?\Z", fullmatch=True))
def test_job_name_deterministic_short_and_per_try(ctx: StepContext, name: str) -> None:
    step = StepSpec(name=name, image="i", module="m", compute=GpuSpec(num_workers=2))
    first = job_name(step, ctx)
    assert job_name(step, StepContext(ctx.dag_id, ctx.task_id, ctx.run_id, ctx.try_number)) == first
    assert len(first) <= 50 and DNS_1035_LABEL.match(first)
    next_try = StepContext(ctx.dag_id, ctx.task_id, ctx.run_id, ctx.try_number + 1, ctx.namespace)
    assert job_name(step, next_try) != first
    other_run = StepContext(ctx.dag_id, ctx.task_id, ctx.run_id + "-2", ctx.try_number, ctx.namespace)
    assert job_name(step, other_run) != first
    # Worker hostnames "<job>-<index>" stay valid DNS labels.
    assert len(f"{first}-{step.compute.num_workers - 1}") <= 63


def test_indexed_job_for_two_a100_workers() -> None:
    step = step_with(gpus=8, gpu_type="h100", num_workers=2, shm_size="64Gi", memory_request="512Gi",
                     capacity_type="on-demand")
    job = build_indexed_job(step, CTX)
    service = build_headless_service(step, CTX)
    validate(job)
    validate(service)
    name = job["metadata"]["name"]
    assert name == job_name(step, CTX)
    env = env_of(job["spec"]["template"]["spec"]["containers"][0])
    assert env["MASTER_ADDR"]["value"] == f"{name}-0.{name}.ml.svc"
    assert env["WORLD_SIZE"]["value"] == "2"
    assert env["MASTER_PORT"]["value"] == "29500"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 2
    assert service["spec"]["selector"] == {"batch.kubernetes.io/job-name": name}


def test_schema_validation_catches_unknown_fields() -> None:
    """Guard: the strict schema really rejects what the API server would."""
    pod = build_pod(step_with(), CTX)
    pod["spec"]["containers"][0]["gpu"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(pod)


def test_validation_targets_a_recent_schema() -> None:
    assert major_minor(K8S_VERSION) >= major_minor("1.33")
    assert kubernetes_validate.validate(build_pod(step_with(), CTX), K8S_VERSION, strict=True) == K8S_VERSION
