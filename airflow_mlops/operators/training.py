"""GpuTrainingOperator: train on the declared GPU spec, wired into one MLflow run across every retry."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_mlops.core.lineage import lineage_tags
from airflow_mlops.core.step import SecretEnvRef
from airflow_mlops.links.mlflow import RUN_URL_KEY, MlflowRunLink
from airflow_mlops.operators.step import MlopsStepOperator, StepPlan
from airflow_mlops.steps import contract

if TYPE_CHECKING:
    from airflow.sdk import Context

TRAINER_MODULE = "airflow_mlops.steps.train"


class GpuTrainingOperator(MlopsStepOperator):
    """Train a model on a Kubernetes GPU pod (or a local process), tracked in MLflow.

    Before the step starts, the operator finds or creates the MLflow run for this (dag, task, logical run),
    so every retry continues the same run and resumes from the same checkpoint URI. The pod gets the
    tracking URI, the run id, the checkpoint/data URIs and Airflow lineage as env; MLflow credentials only
    as Secret references. After the step, the image digest that actually ran is tagged on the run.

    :param experiment_name: MLflow experiment (templated); default: the DAG id.
    :param train_data_uri: training Parquet (templated).
    :param test_data_uri: held-out Parquet (templated).
    :param label_column: label column in both datasets.
    :param hyperparams: hyperparameters (templated), passed as ``$MLOPS_PARAMS`` JSON.
    :param data_version: data version recorded on the run (templated).
    :param mlflow_conn_id: default the ``mlops_mlflow_conn_id`` Variable.
    :param module: trainer module; default the reference trainer ``airflow_mlops.steps.train``.

    Other parameters as MlopsStepOperator (compute, image, runtime, deferrable, ...).
    """

    template_fields: Sequence[str] = (*MlopsStepOperator.template_fields, "experiment_name", "train_data_uri",
                                      "test_data_uri", "hyperparams", "data_version", "label_column")
    template_fields_renderers = {**MlopsStepOperator.template_fields_renderers, "hyperparams": "json"}
    operator_extra_links = (MlflowRunLink(),)
    ui_color = "#fde2c2"

    def __init__(self, *, experiment_name: str | None = None, train_data_uri: str, test_data_uri: str,
                 label_column: str = "target", hyperparams: Mapping[str, Any] | None = None,
                 data_version: str | None = None, mlflow_conn_id: str | None = None,
                 module: str | None = None, command: Sequence[str] | None = None, step_name: str = "train",
                 **kwargs: Any) -> None:
        super().__init__(module=module or (None if command else TRAINER_MODULE), command=command,
                         step_name=step_name, **kwargs)
        self.experiment_name = experiment_name
        self.train_data_uri = train_data_uri
        self.test_data_uri = test_data_uri
        self.label_column = label_column
        self.hyperparams = dict(hyperparams or {})
        self.data_version = data_version
        self.mlflow_conn_id = mlflow_conn_id

    def _mlflow(self, plan: StepPlan) -> Any:
        from airflow_mlops.hooks.mlflow import MlflowHook

        return MlflowHook(mlflow_conn_id=self.mlflow_conn_id or plan.config.mlflow_conn_id)

    def _git_sha(self, plan: StepPlan) -> str | None:
        from airflow_mlops.hooks.config import detect_git_sha

        return plan.config.git_sha or detect_git_sha(self.dag.fileloc if self.has_dag() else __file__)

    def step_env(self, context: Context, plan: StepPlan,
                 runtime: str) -> tuple[dict[str, str], tuple[SecretEnvRef, ...]]:
        env, refs = super().step_env(context, plan, runtime)
        hook = self._mlflow(plan)
        experiment = self.experiment_name or plan.ctx.dag_id
        experiment_id = hook.get_or_create_experiment(experiment)
        identity = {"mlops.airflow.dag_id": plan.ctx.dag_id, "mlops.airflow.task_id": plan.ctx.task_id,
                    "mlops.airflow.run_id": plan.ctx.run_id}
        run_id = hook.find_or_create_run(experiment_id, identity, run_name=f"{plan.ctx.task_id} {plan.ctx.run_id}")
        git_sha = self._git_sha(plan)  # a git subprocess on laptops: resolve once per try
        plan.extra.update(experiment_id=experiment_id, run_id=run_id, hook=hook, git_sha=git_sha)
        from airflow_mlops.notifiers.channels import remember

        # A training run that fails from here on is alerted (AlertOnFailure) with its MLflow run.
        remember(context, model=self.experiment_name, links={"mlflow_run": hook.run_url(experiment_id, run_id)})
        if runtime == "kubernetes":
            mlflow_env, mlflow_refs = hook.pod_env(plan.config.mlflow_secret)
        else:
            mlflow_env, mlflow_refs = hook.process_env(), ()
        env.update(mlflow_env)
        env.update({
            contract.MLFLOW_RUN_ID: run_id,
            contract.MLFLOW_EXPERIMENT_ID: experiment_id,
            contract.CHECKPOINT_URI: plan.checkpoint_uri,
            contract.TRAIN_DATA_URI: self.train_data_uri,
            contract.TEST_DATA_URI: self.test_data_uri,
            contract.LABEL_COLUMN: self.label_column,
            contract.PARAMS: json.dumps(self.hyperparams, sort_keys=True),
        })
        if self.data_version:
            env[contract.DATA_VERSION] = self.data_version
        if git_sha:
            env[contract.GIT_SHA] = git_sha
        return env, (*refs, *mlflow_refs)

    def on_step_success(self, context: Context, plan: StepPlan, result: dict[str, Any],
                        image_digest: str | None) -> dict[str, Any]:
        hook = plan.extra["hook"]
        run_id = result.get("mlflow_run_id") or plan.extra["run_id"]
        tags = lineage_tags(dag_id=plan.ctx.dag_id, run_id=plan.ctx.run_id, task_id=plan.ctx.task_id,
                            try_number=plan.ctx.try_number, data_version=self.data_version,
                            git_sha=plan.extra["git_sha"], image_digest=image_digest, params=self.hyperparams)
        # Where the predictions live, so a drift monitor can find the reference for a registered version.
        for split, uri in (result.get("predictions") or {}).items():
            tags[f"mlops.predictions.{split}"] = str(uri)
        client = hook.get_client()
        for key, value in tags.items():
            client.set_tag(run_id, key, value)
        url = hook.run_url(plan.extra["experiment_id"], run_id)
        if url:
            context["ti"].xcom_push(key=RUN_URL_KEY, value=url)
            self.log.info("MLflow run: %s", url)
        self.log.info("trained %s on %s: %s", result.get("framework"), result.get("device"),
                      ", ".join(f"{k}={v:.4f}" for k, v in sorted((result.get("metrics") or {}).items())))
        return {**result, "mlflow_run_url": url, "data_version": self.data_version,
                "mlflow_tracking_uri": hook.tracking_uri}
