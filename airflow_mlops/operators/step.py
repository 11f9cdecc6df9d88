"""MlopsStepOperator: run a containerized step on the configured runtime (local process or Kubernetes)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_mlops.core.config import MlopsConfig
from airflow_mlops.core.errors import SpecError
from airflow_mlops.core.gpu import GpuSpec
from airflow_mlops.core.lineage import checkpoint_uri, output_uri, result_uri
from airflow_mlops.core.podspec import StepContext
from airflow_mlops.core.step import SecretEnvRef, StepSpec, check_runtime
from airflow_mlops.steps import contract

if TYPE_CHECKING:
    from airflow.sdk import Context


@dataclass
class StepPlan:
    """Everything one try of a step needs, derived deterministically from (task, context, config)."""

    config: MlopsConfig
    step: StepSpec
    ctx: StepContext
    result_uri: str
    output_uri: str
    checkpoint_uri: str
    extra: dict[str, Any] = field(default_factory=dict)


def _templated(value: Any) -> bool:
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, Mapping):
        return any(_templated(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_templated(v) for v in value)
    return False


def _as_compute(value: GpuSpec | Mapping[str, Any] | str | None) -> GpuSpec:
    if value is None:
        return GpuSpec()
    if isinstance(value, GpuSpec):
        return value
    if isinstance(value, str):  # a rendered template of a JSON object
        value = json.loads(value)
    if not isinstance(value, Mapping):
        raise SpecError("compute", "a GpuSpec or a dict of its fields", value)
    return GpuSpec.from_dict(value)


class MlopsStepOperator(BaseOperator):
    """Run a step (image, module or command, args, env, compute, timeout) locally or on Kubernetes.

    The runtime comes from the ``mlops_runtime`` Variable unless ``runtime`` is given: the DAG file is the
    same on a laptop and on MWAA + EKS. The step writes a result JSON to ``$MLOPS_RESULT_URI``; its content
    is this task's XCom return value.

    :param step_name: short name for pods and logs (DNS label); default: the task id.
    :param module: Python module to run (``python -m``); exclusive with ``command``.
    :param command: argv prefix; exclusive with ``module``.
    :param args: arguments (templated).
    :param env: plain env vars (templated); never secrets.
    :param secret_env: env vars from Kubernetes Secrets (locally: from the worker's env).
    :param image: image on Kubernetes; default the ``mlops_image`` Variable.
    :param compute: GpuSpec, or a dict of its fields (templated, validated at task start).
    :param timeout_seconds: wall-clock limit of the step.
    :param python: interpreter for the local runtime (e.g. a checks venv).
    :param runtime: ``local`` or ``kubernetes``; default the ``mlops_runtime`` Variable.
    :param deferrable: defer while the pod runs; default the ``mlops_deferrable`` Variable (true).
    :param kubernetes_conn_id: default the ``mlops_kubernetes_conn_id`` Variable.
    :param namespace: default the ``mlops_namespace`` Variable, then the connection's.
    :param startup_timeout_seconds: how long a pod may stay unscheduled before the task fails.
    :param poll_interval: seconds between status polls on Kubernetes.
    :param result_required: fail when the step writes no result JSON.
    """

    template_fields: Sequence[str] = ("args", "env", "image", "compute", "namespace")
    template_fields_renderers = {"env": "json", "compute": "json"}
    ui_color = "#d5e8f7"

    def __init__(self, *, step_name: str | None = None, module: str | None = None,
                 command: Sequence[str] | None = None, args: Sequence[str] = (),
                 env: Mapping[str, str] | None = None, secret_env: Sequence[SecretEnvRef] = (),
                 image: str | None = None, compute: GpuSpec | Mapping[str, Any] | None = None,
                 timeout_seconds: int = 6 * 3600, python: str | None = None, runtime: str | None = None,
                 deferrable: bool | None = None, kubernetes_conn_id: str | None = None,
                 namespace: str | None = None, startup_timeout_seconds: int = 600, poll_interval: float = 10,
                 result_required: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.step_name = step_name or self.task_id.replace("_", "-").lower()
        self.module = module
        self.command = list(command) if command is not None else None
        self.args = list(args)
        self.env = dict(env or {})
        self.secret_env = tuple(secret_env)
        self.image = image
        self.compute = compute
        self.timeout_seconds = timeout_seconds
        self.python = python
        self.runtime = check_runtime(runtime) if runtime is not None else None
        self.deferrable = deferrable
        self.kubernetes_conn_id = kubernetes_conn_id
        self.namespace = namespace
        self.startup_timeout_seconds = startup_timeout_seconds
        self.poll_interval = poll_interval
        self.result_required = result_required
        self._local_process: Any = None
        self._runner: Any = None
        # Fail at parse time for everything that is not templated.
        if not _templated(compute):
            self.compute = parse_compute = _as_compute(compute)
        else:
            # Validate the literal part now; the templated fields are checked once rendered, at task start.
            literal = {k: v for k, v in compute.items() if not _templated(v)} if isinstance(compute, Mapping) else {}
            parse_compute = _as_compute(literal)
        if not (_templated(self.args) or _templated(self.env) or _templated(image)):
            self.build_step(image or "parse-time-check", dict(self.env), list(self.args), parse_compute)

    # -- pieces subclasses extend -------------------------------------------------------------------

    def build_step(self, image: str, env: dict[str, str], args: list[str],
                   compute: GpuSpec | None = None) -> StepSpec:
        """The StepSpec for this task (validated: raises SpecError naming the field)."""
        return StepSpec(
            name=self.step_name, image=image, module=self.module,
            command=tuple(self.command) if self.command is not None else None, args=tuple(args), env=env,
            secret_env=self.secret_env, compute=compute or _as_compute(self.compute),
            timeout_seconds=self.timeout_seconds, python=self.python,
        )

    def step_env(self, context: Context, plan: StepPlan,
                 runtime: str) -> tuple[dict[str, str], tuple[SecretEnvRef, ...]]:
        """Env the orchestrator injects (plain, secret refs). Subclasses add MLflow wiring and data URIs."""
        return {
            contract.ARTIFACT_ROOT: plan.config.artifact_root,
            contract.RESULT_URI: plan.result_uri,
            contract.OUTPUT_URI: plan.output_uri,
        }, ()

    def on_step_success(self, context: Context, plan: StepPlan, result: dict[str, Any],
                        image_digest: str | None) -> dict[str, Any]:
        """Post-process the step's result before it becomes the XCom return value."""
        return result

    # -- execution ----------------------------------------------------------------------------------

    def plan(self, context: Context, runtime: str) -> StepPlan:
        """Derive this try's plan; called again on resume after deferral, so it must be deterministic."""
        from airflow_mlops.hooks.config import load_config

        config = load_config()
        ti = context["ti"]
        dag_id, task_id, run_id = ti.dag_id, ti.task_id, ti.run_id
        map_index = getattr(ti, "map_index", -1)
        if map_index is not None and map_index >= 0:
            # Mapped instances (a hyperparameter fan-out) each get their own checkpoints, result, MLflow run and Job.
            task_id = f"{task_id}.{map_index}"
        try_number = int(ti.try_number or 1)
        root = config.artifact_root
        connection_namespace = self._connection_namespace(config) if runtime == "kubernetes" else None
        namespace = self.namespace or config.namespace or connection_namespace or "default"
        image = self.image or config.image
        step = self.build_step(image, dict(self.env), list(self.args))
        plan = StepPlan(
            config=config, step=step,
            ctx=StepContext(dag_id=dag_id, task_id=task_id, run_id=run_id, try_number=try_number,
                            namespace=namespace),
            result_uri=result_uri(root, dag_id, task_id, run_id, try_number),
            output_uri=output_uri(root, dag_id, task_id, run_id),
            checkpoint_uri=checkpoint_uri(root, dag_id, task_id, run_id),
        )
        env, refs = self.step_env(context, plan, runtime)
        plan.ctx = StepContext(dag_id=dag_id, task_id=task_id, run_id=run_id, try_number=try_number,
                               namespace=namespace, env=env, secret_env=refs)
        return plan

    def _connection_namespace(self, config: MlopsConfig) -> str | None:
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

        return KubernetesHook(conn_id=self.kubernetes_conn_id or config.kubernetes_conn_id).get_namespace()

    def _runtime(self) -> str:
        from airflow_mlops.hooks.config import load_config

        return self.runtime or load_config().runtime

    def execute(self, context: Context) -> Any:
        runtime = self._runtime()
        plan = self.plan(context, runtime)
        self.log.info("step %s on %s runtime: %s", plan.step.name, runtime, plan.step.compute.describe())
        self.log.info("result: %s", plan.result_uri)
        if runtime == "local":
            return self._run_local(context, plan)
        runner = self._kubernetes_runner(plan)
        runner.start(context)  # raises TaskDeferred in deferrable mode
        return self._finish(context, plan, runner.image_digest())

    def trigger_reentry(self, context: Context, event: dict[str, Any]) -> Any:
        """Resume after the pod trigger fired (KubernetesPodOperator's resume method)."""
        plan = self.plan(context, "kubernetes")
        runner = self._kubernetes_runner(plan)
        runner.resume(context, "trigger_reentry", event)
        return self._finish(context, plan, runner.image_digest())

    def execute_complete(self, context: Context, event: dict[str, Any], **kwargs: Any) -> Any:
        """Resume after the Job trigger fired (KubernetesJobOperator's resume method)."""
        plan = self.plan(context, "kubernetes")
        runner = self._kubernetes_runner(plan)
        runner.resume(context, "execute_complete", event)
        return self._finish(context, plan, runner.image_digest())

    def _kubernetes_runner(self, plan: StepPlan) -> Any:
        from airflow_mlops.runtime.kubernetes import KubernetesStepRunner

        deferrable = plan.config.deferrable if self.deferrable is None else self.deferrable
        self._runner = KubernetesStepRunner(
            task_id=self.task_id, step=plan.step, ctx=plan.ctx,
            kubernetes_conn_id=self.kubernetes_conn_id or plan.config.kubernetes_conn_id, deferrable=deferrable,
            checkpoint_uri=plan.checkpoint_uri, startup_timeout_seconds=self.startup_timeout_seconds,
            poll_interval=self.poll_interval, execution_timeout=self.execution_timeout, log=self.log.info,
        )
        return self._runner

    def _run_local(self, context: Context, plan: StepPlan) -> Any:
        from airflow_mlops.hooks.artifacts import ArtifactStoreHook
        from airflow_mlops.runtime.local import LocalProcess

        ArtifactStoreHook().ensure_root(plan.config.artifact_root)
        if plan.step.compute.gpus:
            self.log.info("GPU spec (%s) applies on Kubernetes; the local runtime uses this machine as it is",
                          plan.step.compute.describe())
        self._local_process = LocalProcess(plan.step, plan.ctx, log=self.log.info)
        outcome = self._local_process.run()
        if outcome.timed_out:
            raise AirflowException(f"step {plan.step.name} timed out after {plan.step.timeout_seconds}s; raise "
                                   "timeout_seconds or checkpoint more often (the next try resumes)")
        if outcome.exit_code == contract.EXIT_BAD_INPUT:
            raise AirflowFailException(f"step {plan.step.name} rejected its input (exit {outcome.exit_code}): "
                                       f"{outcome.tail[-1] if outcome.tail else 'see the log'}. Not retried.")
        if outcome.exit_code < 0:
            raise AirflowException(f"step {plan.step.name} was killed by signal {-outcome.exit_code} (out of memory "
                                   "or stopped from outside); retried per the task's retries")
        if outcome.exit_code != 0:
            raise AirflowFailException(f"step {plan.step.name} exited with code {outcome.exit_code} (error in the "
                                       "step's code or input, see the log above). Not retried.")
        self.log.info("step %s finished in %.1fs", plan.step.name, outcome.seconds)
        return self._finish(context, plan, None)

    def _finish(self, context: Context, plan: StepPlan, image_digest: str | None) -> Any:
        from airflow_mlops.hooks.artifacts import ArtifactStoreHook

        store = ArtifactStoreHook()
        if not store.exists(plan.result_uri):
            if self.result_required:
                raise AirflowFailException(f"step {plan.step.name} succeeded but wrote no result JSON to "
                                           f"{plan.result_uri} (${contract.RESULT_URI})")
            return {"image_digest": image_digest} if image_digest else None
        result = store.read_json(plan.result_uri)
        if image_digest:
            result["image_digest"] = image_digest
        return self.on_step_success(context, plan, result, image_digest)

    def on_kill(self) -> None:
        if self._local_process is not None:
            self._local_process.kill()
        if self._runner is not None and self._runner.operator is not None:
            self._runner.operator.on_kill()
