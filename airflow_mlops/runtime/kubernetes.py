"""Kubernetes runtime: a step as a pod (KubernetesPodOperator) or N workers as an Indexed Job (KubernetesJobOperator).

Pod lifecycle, log streaming, reattach and deferral are the cncf provider's. What this module adds:
manifests from our specs, failure classification before the pod is cleaned up, a Job pod discovery that
waits for the controller, the headless Service for rendezvous, and the image digest that actually ran.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from airflow.providers.cncf.kubernetes.operators.job import KubernetesJobOperator
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_mlops.core.failures import PodFailure, classify_pod
from airflow_mlops.core.podspec import (
    MAIN_CONTAINER,
    StepContext,
    build_headless_service,
    build_indexed_job,
    build_pod,
    job_name,
)
from airflow_mlops.core.step import StepSpec

if TYPE_CHECKING:
    from airflow.sdk import Context


def to_model(manifest: dict[str, Any], kind: str) -> Any:
    """Turn a manifest dict into the kubernetes client model (``V1Pod``, ``V1Job``)."""
    from kubernetes.client import ApiClient

    # The client's public deserialize() wants an HTTP response; this is the same code path without one.
    return ApiClient()._ApiClient__deserialize(manifest, kind)  # type: ignore[attr-defined]


def to_json(model: Any) -> Any:
    """The API's JSON (camelCase) for a client model, as ``core.failures`` expects it."""
    from kubernetes.client import ApiClient

    return ApiClient().sanitize_for_serialization(model)


def image_id(pod_json: dict[str, Any] | None, container: str = MAIN_CONTAINER) -> str | None:
    """The image the container actually ran (``repo@sha256:...``), from the container status."""
    for status in ((pod_json or {}).get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == container and status.get("imageID"):
            value = str(status["imageID"])
            return value.split("://", 1)[-1]  # docker-pullable:// and similar runtime prefixes
    return None


def raise_classified(failure: PodFailure, cause: BaseException | None = None) -> None:
    """Raise the Airflow exception matching the failure's retry decision."""
    error: AirflowException = (AirflowFailException(failure.message) if not failure.retryable
                               else AirflowException(failure.message))
    raise error from cause


class _ClassifyingMixin:
    """Reads the pod and its events and classifies a failure before the provider deletes the pod."""

    checkpoint_uri: str | None = None
    observed_pods: list[dict[str, Any]]

    def _observe(self, pod: Any) -> tuple[dict[str, Any] | None, PodFailure | None]:
        manager = self.pod_manager  # type: ignore[attr-defined]
        try:
            remote = to_json(manager.read_pod(pod))
            events = [to_json(e) for e in manager.read_pod_events(pod).items]
        except Exception as err:
            self.log.warning("could not read pod %s for failure analysis: %s", pod.metadata.name, err)  # type: ignore[attr-defined]
            return None, None
        self.observed_pods.append(remote)
        return remote, classify_pod(remote, events, checkpoint_uri=self.checkpoint_uri)


class StepPodOperator(_ClassifyingMixin, KubernetesPodOperator):
    """KubernetesPodOperator that turns a failed pod into a classified, actionable error."""

    def __init__(self, *, checkpoint_uri: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.checkpoint_uri = checkpoint_uri
        self.observed_pods = []
        self.failure: PodFailure | None = None

    def cleanup(self, pod: Any, remote_pod: Any, xcom_result: dict | None = None,
                context: Context | None = None) -> None:
        """Classify first (the provider's cleanup may delete the pod), then let the provider clean up."""
        if pod is not None and not self._killed:
            _, self.failure = self._observe(pod)
        try:
            super().cleanup(pod, remote_pod, xcom_result=xcom_result, context=context)
        except AirflowException as err:
            if self.failure is None:
                raise
            raise_classified(self.failure, err)
        if self.failure is not None:
            # The provider judged from a stale snapshot (e.g. a startup timeout): the fresh read says it failed.
            raise_classified(self.failure)


class StepJobOperator(_ClassifyingMixin, KubernetesJobOperator):
    """KubernetesJobOperator for Indexed Jobs: waits for the controller to create the pods, classifies failures."""

    def __init__(self, *, checkpoint_uri: str | None = None, pod_discovery_timeout: float = 120,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.checkpoint_uri = checkpoint_uri
        self.pod_discovery_timeout = pod_discovery_timeout
        self.observed_pods = []

    def get_pods(self, pod_request_obj: Any, context: Context, *, exclude_checked: bool = True) -> Any:
        """The provider lists once without waiting; a real Job controller needs a moment to create N pods."""
        job = self.job
        assert job is not None, "get_pods runs after the Job is created"
        deadline = time.monotonic() + self.pod_discovery_timeout
        while True:
            try:
                pods = super().get_pods(pod_request_obj, context, exclude_checked=exclude_checked)
            except AirflowException:
                pods = []
            if len(pods) >= (self.parallelism or 1) or time.monotonic() > deadline:
                if not pods:
                    raise AirflowException(
                        f"Job {job.metadata.name}: no worker pods appeared within "
                        f"{self.pod_discovery_timeout}s (check the Job's events: quota, admission, Kueue)."
                    )
                return pods
            time.sleep(1)

    def inspect_job_pods(self) -> PodFailure | None:
        """Read every worker pod of this Job (image digests); classify the first failed one."""
        job = self.job
        assert job is not None, "inspected only after the Job exists"
        selector = f"batch.kubernetes.io/job-name={job.metadata.name}"
        pods = self.client.list_namespaced_pod(job.metadata.namespace, label_selector=selector).items
        failures = [self._observe(pod)[1] for pod in sorted(pods, key=lambda p: p.metadata.name)]
        return next((f for f in failures if f is not None), None)


def run_unguarded(operator: Any, method: str, *args: Any) -> Any:
    """Call an inner operator's ``execute`` without Airflow's nested-operator warning.

    The inner operator is an implementation detail of our task, not a task of its own; the provider's
    ``execute`` is wrapped by ExecutorSafeguard, so we call the function it wraps.
    """
    func = getattr(type(operator), method)
    return getattr(func, "__wrapped__", func)(operator, *args)


class KubernetesStepRunner:
    """Runs a step on Kubernetes through the provider's operators, for one task try.

    :param task_id: the outer task's id (names the inner operator in logs).
    :param step: the step.
    :param ctx: identity, namespace and injected env.
    :param kubernetes_conn_id: Kubernetes connection.
    :param deferrable: defer to the triggerer while the pod/job runs.
    :param checkpoint_uri: quoted in eviction messages.
    :param startup_timeout_seconds: how long a pod may stay unscheduled/unstarted before failing.
    :param poll_interval: trigger poll interval.
    :param on_finish_action: what to do with finished pods (default keeps failed pods for inspection).
    :param execution_timeout: the outer task's execution timeout (bounds deferral).
    """

    def __init__(self, *, task_id: str, step: StepSpec, ctx: StepContext, kubernetes_conn_id: str,
                 deferrable: bool, checkpoint_uri: str | None = None, startup_timeout_seconds: int = 600,
                 poll_interval: float = 10, on_finish_action: str = "delete_succeeded_pod",
                 execution_timeout: Any = None, log: Callable[[str], None] = print) -> None:
        self.task_id, self.step, self.ctx = task_id, step, ctx
        self.conn_id, self.deferrable = kubernetes_conn_id, deferrable
        self.checkpoint_uri = checkpoint_uri
        self.startup_timeout_seconds = startup_timeout_seconds
        self.poll_interval = poll_interval
        self.on_finish_action = on_finish_action
        self.execution_timeout = execution_timeout
        self.log = log
        self.operator: StepPodOperator | StepJobOperator | None = None

    @property
    def distributed(self) -> bool:
        return self.step.compute.distributed

    def manifest(self) -> dict[str, Any]:
        """The Pod or Job manifest this runner submits."""
        return build_indexed_job(self.step, self.ctx) if self.distributed else build_pod(self.step, self.ctx)

    def _common(self) -> dict[str, Any]:
        return {
            "task_id": f"{self.task_id}__{'job' if self.distributed else 'pod'}",
            "kubernetes_conn_id": self.conn_id,
            "namespace": self.ctx.namespace,
            "deferrable": self.deferrable,
            "checkpoint_uri": self.checkpoint_uri,
            "startup_timeout_seconds": self.startup_timeout_seconds,
            "poll_interval": self.poll_interval,
            "startup_check_interval_seconds": max(1, min(5, int(self.poll_interval))),
            "on_finish_action": self.on_finish_action,
            "log_events_on_failure": True,
            "get_logs": True,
            "execution_timeout": self.execution_timeout,
        }

    def build_operator(self) -> StepPodOperator | StepJobOperator:
        """The provider operator configured from our manifest (nothing in it is re-templated)."""
        manifest = self.manifest()
        if self.distributed:
            workers = self.step.compute.num_workers
            self.operator = StepJobOperator(
                # The provider prepends "job-" to the name; our manifest's name already carries it.
                full_job_spec=to_model(manifest, "V1Job"), name=manifest["metadata"]["name"].removeprefix("job-"),
                random_name_suffix=False, completion_mode="Indexed", completions=workers, parallelism=workers,
                backoff_limit=0, wait_until_job_complete=True, job_poll_interval=self.poll_interval,
                pod_discovery_timeout=self.startup_timeout_seconds, **self._common(),
            )
        else:
            self.operator = StepPodOperator(
                full_pod_spec=to_model(manifest, "V1Pod"), name=manifest["metadata"]["name"],
                random_name_suffix=True, **self._common(),
            )
        return self.operator

    def ensure_service(self) -> None:
        """Create the headless Service workers rendezvous through (idempotent)."""
        from kubernetes.client.exceptions import ApiException

        op = self.operator
        assert isinstance(op, StepJobOperator)
        service = build_headless_service(self.step, self.ctx)
        try:
            op.client.create_namespaced_service(self.ctx.namespace, to_model(service, "V1Service"))
            self.log(f"created headless Service {service['metadata']['name']} for {self.step.compute.num_workers} "
                     "workers")
        except ApiException as err:
            if err.status != 409:  # already there from an earlier try: fine
                raise

    def delete_service(self) -> None:
        """Remove the rendezvous Service once the Job is done."""
        from kubernetes.client.exceptions import ApiException

        op = self.operator
        if not isinstance(op, StepJobOperator):
            return
        try:
            op.client.delete_namespaced_service(job_name(self.step, self.ctx), self.ctx.namespace)
        except ApiException as err:
            if err.status != 404:
                self.log(f"could not delete the rendezvous Service: {err.reason}")

    def start(self, context: Context) -> None:
        """Run to completion (sync) or defer (raises TaskDeferred, resumed via ``resume``)."""
        op = self.build_operator()
        if isinstance(op, StepJobOperator):
            self.ensure_service()
            self._run_job(lambda: run_unguarded(op, "execute", context))
        else:
            run_unguarded(op, "execute", context)

    def resume(self, context: Context, method: str, event: dict[str, Any]) -> None:
        """Continue after deferral: ``trigger_reentry`` (pod) or ``execute_complete`` (job)."""
        op = self.build_operator()
        if isinstance(op, StepJobOperator):
            # The Job the first half created; the event carries only a snake_case dump of it, so read it back.
            meta = (event.get("job") or {}).get("metadata") or {}
            name = meta.get("name") or job_name(self.step, self.ctx)
            op.job = op.hook.get_job(job_name=name, namespace=meta.get("namespace") or self.ctx.namespace)
            self._run_job(lambda: op.execute_complete(context, event))
        else:
            getattr(op, method)(context, event)

    def _run_job(self, call: Callable[[], Any]) -> None:
        op = self.operator
        assert isinstance(op, StepJobOperator)
        try:
            call()
        except AirflowException as err:
            self.delete_service()
            failure = op.inspect_job_pods() if getattr(op, "job", None) is not None else None
            if failure is None:
                raise
            raise_classified(failure, err)
        # TaskDeferred (a BaseException) passes through: the Service must outlive the deferral.
        op.inspect_job_pods()
        self.delete_service()

    def image_digest(self) -> str | None:
        """The digest the (first) pod ran, once it has finished."""
        op = self.operator
        if op is None:
            return None
        for pod in op.observed_pods:
            found = image_id(pod)
            if found:
                return found
        remote = getattr(op, "remote_pod", None)
        return image_id(to_json(remote)) if remote is not None else None
