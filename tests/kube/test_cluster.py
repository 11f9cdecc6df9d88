"""The fake cluster works with the real ``kubernetes`` / ``kubernetes_asyncio`` clients and the cncf provider.

Everything goes over real HTTP to the kmock server; nothing in the clients or the provider is patched.
The operators run with a minimal hand-made task context (no Airflow metadata DB needed).
"""

from __future__ import annotations

import asyncio
import datetime
import re
import time
import types
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, watch

from .cluster import (
    EVICTED,
    FAIL,
    IMAGE_PULL,
    OOM,
    PREEMPTED,
    RUN,
    UNSCHEDULABLE,
    FakeCluster,
    matches_field_selector,
    matches_label_selector,
)

PY_IMAGE = "python:3.11-slim"


def _pod(
    name: str,
    command: list[str],
    *,
    labels: dict[str, str] | None = None,
    image: str = PY_IMAGE,
    **container: Any,
) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels=labels or {"app": name}),
        spec=client.V1PodSpec(
            restart_policy="Never",
            containers=[client.V1Container(name="base", image=image, command=command, **container)],
        ),
    )


def _state(pod: dict[str, Any], container: str = "base") -> dict[str, Any]:
    statuses = pod["status"].get("containerStatuses") or []
    return next(s for s in statuses if s["name"] == container)["state"]


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in obj["status"].get("conditions") or [] if c["type"] == kind)


def _has_condition(obj: dict[str, Any], kind: str) -> bool:
    return any(c["type"] == kind and c["status"] == "True" for c in obj["status"].get("conditions") or [])


def _current(cluster: FakeCluster, name: str) -> dict[str, Any]:
    pod = cluster.get("pods", name)
    assert pod is not None, f"pod {name} does not exist"
    return pod


class _TaskInstance:
    """The few TaskInstance attributes KubernetesPodOperator/KubernetesJobOperator read, plus XCom capture."""

    def __init__(self, task_id: str) -> None:
        self.dag_id, self.task_id, self.run_id = "fake_dag", task_id, "manual__fake"
        self.map_index, self.try_number = -1, 1
        self.start_date = datetime.datetime.now(datetime.timezone.utc)
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any, **_: Any) -> None:
        self.xcoms[key] = value


def _context(task_id: str) -> Any:
    """A stand-in for the task Context: what the operators read (``ti``, ``run_id``, ``dag``)."""
    ti = _TaskInstance(task_id)
    return {
        "ti": ti,
        "task_instance": ti,
        "run_id": ti.run_id,
        "dag": types.SimpleNamespace(dag_id=ti.dag_id),
    }


def _run_trigger(trigger: Any) -> dict[str, Any]:
    """Run a trigger to its first event, as the triggerer would (on a fresh event loop)."""

    async def first_event() -> dict[str, Any]:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("The trigger ended without an event")

    return asyncio.run(first_event())


# ---- selectors (pure functions) ----


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("", True),
        ("app=a", True),
        ("app==a,tier=gpu", True),
        ("app!=a", False),
        ("already_checked!=True,!airflow-worker", True),
        ("app in (a, b),tier notin (cpu)", True),
        ("app in (b,c)", False),
        ("tier", True),
        ("!tier", False),
    ],
)
def test_label_selector(selector: str, expected: bool) -> None:
    assert matches_label_selector({"app": "a", "tier": "gpu"}, selector) is expected


def test_field_selector() -> None:
    event = {"involvedObject": {"name": "p1", "kind": "Pod"}, "type": "Warning"}
    assert matches_field_selector(event, "involvedObject.name=p1,type!=Normal")
    assert not matches_field_selector(event, "involvedObject.name=p2")
    assert matches_field_selector(event, "metadata.name=")  # a missing field compares as ""


# ---- (a) the kubernetes client: a pod runs, with a Secret in its env, and serves its logs ----


@pytest.mark.slow
def test_pod_runs_with_secret_env_and_serves_logs(
    fake_cluster: FakeCluster, kube_api: client.ApiClient
) -> None:
    v1 = client.CoreV1Api(kube_api)
    v1.create_namespaced_secret(
        "default", client.V1Secret(metadata=client.V1ObjectMeta(name="creds"), string_data={"X": "s3cr3t"})
    )
    secret_env = client.V1EnvVarSource(secret_key_ref=client.V1SecretKeySelector(name="creds", key="X"))
    pod = _pod(
        "hello",
        ["python", "-c", "print('hello'); import os; print(os.environ['X'])"],
        env=[client.V1EnvVar(name="X", value_from=secret_env)],
    )
    created = v1.create_namespaced_pod("default", pod)
    assert created.metadata.uid and created.status.phase == "Pending"

    phases = []
    stream = watch.Watch().stream(
        v1.list_namespaced_pod, "default", label_selector="app=hello", timeout_seconds=10
    )
    for event in stream:
        phases.append(event["object"].status.phase)
        if phases[-1] in ("Succeeded", "Failed"):
            break
    assert phases[0] == "Pending" and "Running" in phases and phases[-1] == "Succeeded"

    # The sync client's read_namespaced_pod_log() turns bytes into "b'...'" (a client bug), hence raw reads.
    plain = v1.read_namespaced_pod_log("hello", "default", container="base", _preload_content=False)
    assert plain.data == b"hello\ns3cr3t\n"
    stamped = v1.read_namespaced_pod_log(
        "hello", "default", timestamps=True, tail_lines=1, _preload_content=False
    )
    assert re.fullmatch(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z s3cr3t\n", stamped.data)

    remote = _current(fake_cluster, "hello")
    terminated = _state(remote)["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed")
    status = remote["status"]["containerStatuses"][0]
    assert status["image"] == "docker.io/library/python:3.11-slim"
    assert re.fullmatch(r"docker\.io/library/python@sha256:[0-9a-f]{64}", status["imageID"])
    assert _has_condition(remote, "PodScheduled")

    [ran] = fake_cluster.ran_commands
    assert ran.env == {"X": "s3cr3t"} and ran.exit_code == 0 and ran.output == "hello\ns3cr3t\n"
    assert fake_cluster.logs("hello") == "hello\ns3cr3t\n"
    assert [e["reason"] for e in fake_cluster.events("hello")] == [
        "Scheduled",
        "Pulled",
        "Created",
        "Started",
    ]
    assert fake_cluster.pods_created[0]["metadata"]["name"] == "hello"


@pytest.mark.slow
def test_follow_streams_lines_as_they_come(fake_cluster: FakeCluster, kube_api: client.ApiClient) -> None:
    v1 = client.CoreV1Api(kube_api)
    code = "import time; print('first'); time.sleep(0.6); print('second')"
    v1.create_namespaced_pod("default", _pod("slow", ["python", "-c", code]))
    fake_cluster.wait_for_pod_phase("slow", "Running")

    response = v1.read_namespaced_pod_log("slow", "default", follow=True, _preload_content=False)
    chunks = response.stream(amt=None, decode_content=True)
    first = b""
    while b"first" not in first:
        first += next(chunks)
    assert _current(fake_cluster, "slow")["status"]["phase"] == "Running"
    rest = b"".join(chunks)  # ends by itself when the container terminates
    assert first + rest == b"first\nsecond\n"
    assert _current(fake_cluster, "slow")["status"]["phase"] == "Succeeded"


@pytest.mark.slow
def test_deleting_a_running_pod_kills_its_process(
    fake_cluster: FakeCluster, kube_api: client.ApiClient
) -> None:
    v1 = client.CoreV1Api(kube_api)
    v1.create_namespaced_pod("default", _pod("sleeper", ["sleep", "30"]))
    fake_cluster.wait_for_pod_phase("sleeper", "Running")
    time.sleep(0.1)  # let the process start
    started = time.monotonic()
    v1.delete_namespaced_pod("sleeper", "default")
    assert fake_cluster.get("pods", "sleeper") is None
    assert fake_cluster.ran_commands[0].exit_code == 137
    assert time.monotonic() - started < 5


@pytest.mark.slow
def test_init_containers_sidecars_and_config_errors(
    fake_cluster: FakeCluster, kube_api: client.ApiClient
) -> None:
    v1 = client.CoreV1Api(kube_api)
    v1.create_namespaced_config_map(
        "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cfg"), data={"LR": "0.1"})
    )
    spec = client.V1PodSpec(
        restart_policy="Never",
        init_containers=[
            client.V1Container(name="fetch", image=PY_IMAGE, command=["python", "-c", "print('init')"])
        ],
        containers=[
            client.V1Container(
                name="base",
                image=PY_IMAGE,
                command=["sh", "-c", "echo lr=$LR rank=$(RANK)"],
                env=[client.V1EnvVar(name="RANK", value="7")],
                env_from=[client.V1EnvFromSource(config_map_ref=client.V1ConfigMapEnvSource(name="cfg"))],
            ),
            client.V1Container(name="sidecar", image="busybox", command=["echo", "side"]),
        ],
    )
    v1.create_namespaced_pod("default", client.V1Pod(metadata=client.V1ObjectMeta(name="multi"), spec=spec))
    done = fake_cluster.wait_for_pod_phase("multi")
    assert done["status"]["phase"] == "Succeeded"
    assert done["status"]["initContainerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"

    def read(container: str) -> bytes:
        return v1.read_namespaced_pod_log(
            "multi", "default", container=container, _preload_content=False
        ).data

    assert (read("fetch"), read("base"), read("sidecar")) == (b"init\n", b"lr=0.1 rank=7\n", b"side\n")
    assert [r.container for r in fake_cluster.ran_commands] == ["fetch", "base", "sidecar"]
    assert fake_cluster.ran_commands[1].argv == ["sh", "-c", "echo lr=$LR rank=7"]  # $(VAR) expanded

    missing = client.V1EnvVarSource(secret_key_ref=client.V1SecretKeySelector(name="nope", key="K"))
    v1.create_namespaced_pod(
        "default", _pod("nosecret", ["true"], env=[client.V1EnvVar(name="K", value_from=missing)])
    )

    def config_error(pod: dict[str, Any]) -> bool:
        statuses = pod["status"].get("containerStatuses") or [{"state": {}}]
        return (statuses[0]["state"].get("waiting") or {}).get("reason") == "CreateContainerConfigError"

    pending = fake_cluster.wait_for("pods", "nosecret", config_error)
    assert _state(pending)["waiting"] == {
        "reason": "CreateContainerConfigError",
        "message": 'secret "nope" not found',
    }


# ---- (b) failure behaviours ----


@pytest.mark.slow
def test_failure_behaviours(fake_cluster: FakeCluster, kube_api: client.ApiClient) -> None:
    from airflow.providers.cncf.kubernetes.utils.pod_manager import detect_pod_terminate_early_issues

    v1 = client.CoreV1Api(kube_api)
    gpu_message = "0/5 nodes are available: 5 Insufficient nvidia.com/gpu."
    fake_cluster.queue_behaviours(
        [OOM, EVICTED, IMAGE_PULL, UNSCHEDULABLE(gpu_message), FAIL(3), PREEMPTED, RUN]
    )
    missing_image = "ghcr.io/acme/missing:v1"
    for name in ["oom", "evicted", "pull", "unsched", "fail", "preempted"]:
        image = missing_image if name == "pull" else PY_IMAGE
        v1.create_namespaced_pod("default", _pod(name, ["python", "-c", "print('never runs')"], image=image))
    crash = "import sys; print('bad input'); sys.exit(4)"
    v1.create_namespaced_pod("default", _pod("crash", ["python", "-c", crash]))
    for name in ("oom", "evicted", "fail", "preempted", "crash"):
        assert fake_cluster.wait_for_pod_phase(name)["status"]["phase"] == "Failed"
    time.sleep(0.5)  # the Pending ones have settled by now

    oom = _current(fake_cluster, "oom")
    assert _state(oom)["terminated"]["reason"] == "OOMKilled"
    assert _state(oom)["terminated"]["exitCode"] == 137
    assert "Allocating" in fake_cluster.logs("oom")

    evicted = _current(fake_cluster, "evicted")
    assert evicted["status"]["reason"] == "Evicted"
    assert "The node was low on resource: memory." in evicted["status"]["message"]
    assert _state(evicted)["terminated"]["exitCode"] == 137
    assert _condition(evicted, "DisruptionTarget")["reason"] == "TerminationByKubelet"

    preempted = _current(fake_cluster, "preempted")
    assert preempted["status"]["reason"] == "Terminated"

    pull = _current(fake_cluster, "pull")
    assert pull["status"]["phase"] == "Pending"
    waiting = _state(pull)["waiting"]
    assert waiting == {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{missing_image}"'}
    failed_pull = fake_cluster.events("pull", reason="Failed")[0]
    assert failed_pull["message"].startswith(f'Failed to pull image "{missing_image}": rpc error')
    assert failed_pull["message"].endswith("not found") and failed_pull["type"] == "Warning"
    assert "ImagePullBackOff" in str(
        detect_pod_terminate_early_issues(v1.read_namespaced_pod("pull", "default"))
    )
    with pytest.raises(client.ApiException) as not_started:
        v1.read_namespaced_pod_log("pull", "default")
    assert not_started.value.status == 400 and "waiting to start: ImagePullBackOff" in not_started.value.body

    unsched = _current(fake_cluster, "unsched")
    assert unsched["status"]["phase"] == "Pending"
    scheduled = _condition(unsched, "PodScheduled")
    assert (scheduled["status"], scheduled["reason"], scheduled["message"]) == (
        "False",
        "Unschedulable",
        gpu_message,
    )
    [event] = v1.list_namespaced_event("default", field_selector="involvedObject.name=unsched").items
    assert (event.type, event.reason, event.message) == ("Warning", "FailedScheduling", gpu_message)
    assert (event.involved_object.kind, event.involved_object.uid) == ("Pod", unsched["metadata"]["uid"])

    fail = _current(fake_cluster, "fail")
    assert _state(fail)["terminated"]["reason"] == "Error"
    assert _state(fail)["terminated"]["exitCode"] == 3
    assert "simulated failure" in fake_cluster.logs("fail")

    crashed = _current(fake_cluster, "crash")
    assert _state(crashed)["terminated"]["exitCode"] == 4
    assert _state(crashed)["terminated"]["reason"] == "Error"
    assert fake_cluster.logs("crash") == "bad input\n"
    assert [r.pod for r in fake_cluster.ran_commands] == ["crash"]  # nothing else executed


@pytest.mark.slow
def test_behaviour_policy_callable(fake_cluster: FakeCluster, kube_api: client.ApiClient) -> None:
    fake_cluster.behaviour = lambda pod: OOM if pod["metadata"]["labels"].get("gpu") else RUN
    v1 = client.CoreV1Api(kube_api)
    v1.create_namespaced_pod("default", _pod("big", ["python", "-c", "1"], labels={"gpu": "yes"}))
    v1.create_namespaced_pod("default", _pod("small", ["python", "-c", "1"]))
    assert _state(fake_cluster.wait_for_pod_phase("big"))["terminated"]["reason"] == "OOMKilled"
    assert fake_cluster.wait_for_pod_phase("small")["status"]["phase"] == "Succeeded"


# ---- (c) Jobs ----


@pytest.mark.slow
def test_indexed_job_runs_one_pod_per_index(fake_cluster: FakeCluster, kube_api: client.ApiClient) -> None:
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

    index_ref = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    container = client.V1Container(
        name="base",
        image=PY_IMAGE,
        command=[
            "python",
            "-c",
            "import os; print('rank', os.environ['RANK'], os.environ['JOB_COMPLETION_INDEX'])",
        ],
        env=[
            client.V1EnvVar(
                name="RANK",
                value_from=client.V1EnvVarSource(
                    field_ref=client.V1ObjectFieldSelector(field_path=index_ref)
                ),
            )
        ],
    )
    job = client.V1Job(
        metadata=client.V1ObjectMeta(name="train"),
        spec=client.V1JobSpec(
            completion_mode="Indexed",
            completions=2,
            parallelism=2,
            backoff_limit=0,
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": "train"}),
                spec=client.V1PodSpec(restart_policy="Never", subdomain="train-svc", containers=[container]),
            ),
        ),
    )
    batch = client.BatchV1Api(kube_api)
    created = batch.create_namespaced_job("default", job)
    pods = client.CoreV1Api(kube_api).list_namespaced_pod("default", label_selector="job-name=train").items
    assert len(pods) == 2  # created before the create call returned, as KubernetesJobOperator expects

    done = fake_cluster.wait_for_job("train")
    assert done["status"]["succeeded"] == 2 and done["status"]["completedIndexes"] == "0-1"
    assert [c["type"] for c in done["status"]["conditions"]] == ["SuccessCriteriaMet", "Complete"]
    remote_job = batch.read_namespaced_job_status("train", "default")
    assert KubernetesHook().is_job_complete(remote_job) and KubernetesHook.is_job_successful(remote_job)
    assert not KubernetesHook.is_job_failed(remote_job)

    uid = created.metadata.uid
    for index, pod in enumerate(sorted(fake_cluster.pods_created, key=lambda p: p["metadata"]["name"])):
        meta = pod["metadata"]
        assert re.fullmatch(rf"train-{index}-[a-z0-9]{{5}}", meta["name"])
        assert meta["labels"] == {
            "app": "train",
            "batch.kubernetes.io/controller-uid": uid,
            "batch.kubernetes.io/job-name": "train",
            "controller-uid": uid,
            "job-name": "train",
            "batch.kubernetes.io/job-completion-index": str(index),
        }
        assert meta["annotations"] == {"batch.kubernetes.io/job-completion-index": str(index)}
        assert meta["ownerReferences"][0] == {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": "train",
            "uid": uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
        assert (pod["spec"]["hostname"], pod["spec"]["subdomain"]) == (f"train-{index}", "train-svc")
    assert sorted(r.output for r in fake_cluster.ran_commands) == ["rank 0 0\n", "rank 1 1\n"]
    assert fake_cluster.jobs_created[0]["spec"]["selector"] == {
        "matchLabels": {"batch.kubernetes.io/controller-uid": uid}
    }


@pytest.mark.slow
def test_job_retries_then_fails_beyond_backoff_limit(
    fake_cluster: FakeCluster, kube_api: client.ApiClient
) -> None:
    batch = client.BatchV1Api(kube_api)

    def job(name: str, backoff_limit: int, **spec: Any) -> client.V1Job:
        pod_spec = client.V1PodSpec(
            restart_policy="Never",
            containers=[
                client.V1Container(name="base", image=PY_IMAGE, command=["python", "-c", "print('ok')"])
            ],
        )
        return client.V1Job(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1JobSpec(
                backoff_limit=backoff_limit, template=client.V1PodTemplateSpec(spec=pod_spec), **spec
            ),
        )

    fake_cluster.queue_behaviours([EVICTED, RUN])
    batch.create_namespaced_job("default", job("retried", backoff_limit=1))
    retried = fake_cluster.wait_for_job("retried")
    assert _has_condition(retried, "Complete")
    assert (retried["status"]["succeeded"], retried["status"]["failed"]) == (1, 1)

    ignore_disruptions = client.V1PodFailurePolicy(
        rules=[
            client.V1PodFailurePolicyRule(
                action="Ignore",
                on_pod_conditions=[
                    client.V1PodFailurePolicyOnPodConditionsPattern(type="DisruptionTarget", status="True")
                ],
            )
        ]
    )
    fake_cluster.queue_behaviours([PREEMPTED, RUN])
    batch.create_namespaced_job(
        "default", job("preemptible", backoff_limit=0, pod_failure_policy=ignore_disruptions)
    )
    preemptible = fake_cluster.wait_for_job("preemptible")
    assert _has_condition(preemptible, "Complete") and "failed" not in preemptible["status"]

    fake_cluster.queue_behaviours([FAIL(2), FAIL(2)])
    batch.create_namespaced_job("default", job("doomed", backoff_limit=1))
    doomed = fake_cluster.wait_for_job("doomed")
    assert _condition(doomed, "Failed")["reason"] == "BackoffLimitExceeded"
    assert doomed["status"]["failed"] == 2
    assert [e["reason"] for e in fake_cluster.events("doomed")][-1] == "BackoffLimitExceeded"


# ---- (d) the cncf provider: PodManager, AsyncKubernetesHook, KubernetesPod/JobOperator ----


@pytest.mark.slow
def test_pod_manager_and_async_hook(airflow_kubernetes_conn: FakeCluster) -> None:
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import AsyncKubernetesHook, KubernetesHook
    from airflow.providers.cncf.kubernetes.utils.pod_manager import PodManager

    hook = KubernetesHook()
    assert hook.get_namespace() == "default"
    code = "import time\nfor i in range(3):\n    print('step', i); time.sleep(0.2)"
    pod = _pod("pm", ["python", "-c", code])
    pod.metadata.namespace = "default"
    manager = PodManager(kube_client=hook.core_v1_client)

    manager.create_pod(pod)
    asyncio.run(manager.await_pod_start(pod, check_interval=0.1))  # type: ignore[arg-type]  # annotated int
    assert manager.read_pod(pod).status.phase == "Running"
    logging_status = manager.fetch_container_logs(pod, "base", follow=True)
    assert logging_status.running is False and logging_status.last_log_time is not None
    assert manager.await_pod_completion(pod).status.phase == "Succeeded"
    # PodLogsConsumer yields a trailing b"" after the last newline (with a real API server too).
    consumer = manager.read_pod_logs(pod, "base", timestamps=True, follow=False)
    assert [line.split(b" ", 1)[1] for line in consumer if line] == [b"step 0\n", b"step 1\n", b"step 2\n"]
    assert manager.read_pod_events(pod).items[0].reason == "Scheduled"

    async def use_async_hook() -> tuple[str, list[str], list[str]]:
        async_hook = AsyncKubernetesHook()
        remote = await async_hook.get_pod("pm", "default")
        lines = await async_hook.read_logs("pm", "default", container_name="base")
        events = await async_hook.get_pod_events("pm", "default")
        return remote.status.phase, lines, [e.reason for e in events.items]

    phase, lines, reasons = asyncio.run(use_async_hook())
    assert phase == "Succeeded" and reasons[0] == "Scheduled"
    assert [line.split(" ", 1)[1] for line in lines] == ["step 0", "step 1", "step 2"]


@pytest.mark.slow
def test_kubernetes_pod_operator_sync_deferrable_and_failing(airflow_kubernetes_conn: FakeCluster) -> None:
    from airflow.exceptions import AirflowException
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from airflow.providers.common.compat.sdk import TaskDeferred

    cluster = airflow_kubernetes_conn
    fast: dict[str, Any] = {
        "startup_check_interval_seconds": 0.1,
        "base_container_status_polling_interval": 0.1,
    }
    sync_op = KubernetesPodOperator(
        task_id="sync",
        name="sync",
        namespace="default",
        image=PY_IMAGE,
        cmds=["python", "-c", "print('synced')"],
        **fast,
    )
    context = _context("sync")
    sync_op.execute(context)
    pod_name = context["ti"].xcoms["pod_name"]
    assert cluster.logs(pod_name) == "synced\n"
    assert cluster.get("pods", pod_name) is None  # on_finish_action="delete_pod"
    assert cluster.pods_created[-1]["metadata"]["labels"]["task_id"] == "sync"

    deferred_op = KubernetesPodOperator(
        task_id="deferred",
        name="deferred",
        namespace="default",
        image=PY_IMAGE,
        cmds=["python", "-c", "import time; print('deferred'); time.sleep(0.4)"],
        deferrable=True,
        poll_interval=0.1,
        **fast,
    )
    context = _context("deferred")
    with pytest.raises(TaskDeferred) as deferral:
        deferred_op.execute(context)
    event = _run_trigger(deferral.value.trigger)  # KubernetesPodTrigger, using kubernetes_asyncio
    assert event["status"] == "success"
    getattr(deferred_op, deferral.value.method_name)(context, event)
    assert cluster.logs(event["name"]) == "deferred\n" and cluster.get("pods", event["name"]) is None

    cluster.queue_behaviours([OOM])
    oom_op = KubernetesPodOperator(
        task_id="oom", name="oom", namespace="default", image=PY_IMAGE, cmds=["python", "-c", "1"], **fast
    )
    with pytest.raises(AirflowException, match="returned a failure"):
        oom_op.execute(_context("oom"))

    cluster.queue_behaviours([IMAGE_PULL])
    pull_op = KubernetesPodOperator(
        task_id="pull", name="pull", namespace="default", image="ghcr.io/acme/nope:1", cmds=["x"], **fast
    )
    with pytest.raises(AirflowException, match="returned a failure") as pull_failure:
        pull_op.execute(_context("pull"))
    # The cleanup's AirflowException replaces the launch failure, which stays chained as the context.
    assert "Image cannot be pulled" in str(pull_failure.value.__context__)


@pytest.mark.slow
def test_kubernetes_job_operator_indexed_and_retried(airflow_kubernetes_conn: FakeCluster) -> None:
    from airflow.providers.cncf.kubernetes.operators.job import KubernetesJobOperator
    from airflow.providers.common.compat.sdk import TaskDeferred
    from kubernetes.client import models as k8s

    cluster = airflow_kubernetes_conn
    index_ref = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    sync_op = KubernetesJobOperator(
        task_id="indexed",
        name="indexed",
        namespace="default",
        image=PY_IMAGE,
        cmds=["python", "-c", "import os; print('rank', os.environ['RANK'])"],
        env_vars=[
            k8s.V1EnvVar(
                name="RANK",
                value_from=k8s.V1EnvVarSource(field_ref=k8s.V1ObjectFieldSelector(field_path=index_ref)),
            )
        ],
        completion_mode="Indexed",
        completions=2,
        parallelism=2,
        backoff_limit=0,
        wait_until_job_complete=True,
        job_poll_interval=0.2,
    )
    context = _context("indexed")
    sync_op.execute(context)
    assert context["ti"].xcoms["job"]["status"]["succeeded"] == 2
    assert sorted(r.output for r in cluster.ran_commands) == ["rank 0\n", "rank 1\n"]

    cluster.queue_behaviours([EVICTED, RUN])  # the first pod is evicted, the Job controller retries
    deferred_op = KubernetesJobOperator(
        task_id="retried",
        name="retried",
        namespace="default",
        image=PY_IMAGE,
        cmds=["python", "-c", "print('second try')"],
        parallelism=1,
        backoff_limit=1,
        wait_until_job_complete=True,
        job_poll_interval=0.2,
        deferrable=True,
    )
    context = _context("retried")
    with pytest.raises(TaskDeferred) as deferral:
        deferred_op.execute(context)
    event = _run_trigger(deferral.value.trigger)  # KubernetesJobTrigger, using kubernetes_asyncio
    assert event["status"] == "success"
    assert (event["job"]["status"]["succeeded"], event["job"]["status"]["failed"]) == (1, 1)
    assert [r.output for r in cluster.ran_commands][-1] == "second try\n"


@pytest.mark.slow
def test_kubeconfig_and_connection(fake_cluster: FakeCluster, tmp_path: Path) -> None:
    import json

    path = fake_cluster.write_kubeconfig(tmp_path / "kc")
    assert json.loads(path.read_text())["clusters"][0]["cluster"]["server"] == fake_cluster.url
    [(name, value)] = fake_cluster.airflow_conn_env(path).items()
    assert name == "AIRFLOW_CONN_KUBERNETES_DEFAULT"
    assert json.loads(value) == {
        "conn_type": "kubernetes",
        "extra": {"kube_config_path": str(path), "namespace": "default"},
    }
