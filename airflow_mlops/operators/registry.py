"""Register a trained model as a new MLflow model version, with lineage tags, idempotently."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops.core.lineage import lineage_tags
from airflow_mlops.links.mlflow import RUN_URL_KEY, MlflowRunLink

if TYPE_CHECKING:
    from airflow.sdk import Context


class RegisterModelVersionOperator(BaseOperator):
    """Register the model a training task produced as a version of ``model_name``.

    A retry of the same task reuses the version it already created. The version carries lineage tags:
    data version, params hash, git sha, image digest, dag/run/task/try, plus any ``extra_tags``.

    :param model_name: registered model name (templated).
    :param training_result: the training task's XCom (templated, e.g. ``{{ ti.xcom_pull('train') }}``) or a
        dict with ``mlflow_run_id`` and ``model_uri``.
    :param extra_tags: more tags for the version (templated), e.g. check verdicts.
    :param description: version description (templated).
    :param mlflow_conn_id: default the ``mlops_mlflow_conn_id`` Variable.
    :param ready_timeout: seconds to wait for the version to become READY.
    """

    template_fields: Sequence[str] = ("model_name", "training_result", "extra_tags", "description")
    template_fields_renderers = {"training_result": "json", "extra_tags": "json"}
    operator_extra_links = (MlflowRunLink(),)
    ui_color = "#e4d7f5"

    def __init__(self, *, model_name: str, training_result: Mapping[str, Any] | str,
                 extra_tags: Mapping[str, str] | None = None, description: str | None = None,
                 mlflow_conn_id: str | None = None, ready_timeout: float = 300, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.training_result = training_result
        self.extra_tags = dict(extra_tags or {})
        self.description = description
        self.mlflow_conn_id = mlflow_conn_id
        self.ready_timeout = ready_timeout

    def execute(self, context: Context) -> dict[str, Any]:
        import ast

        from airflow_mlops.hooks.config import load_config
        from airflow_mlops.hooks.mlflow import MlflowHook

        result = self.training_result
        if isinstance(result, str):  # a rendered template of a dict
            result = ast.literal_eval(result)
        if not isinstance(result, Mapping) or not result.get("mlflow_run_id") or not result.get("model_uri"):
            raise AirflowFailException("training_result must be the training task's result with mlflow_run_id and "
                                       f"model_uri; got {result!r}")
        config = load_config()
        hook = MlflowHook(mlflow_conn_id=self.mlflow_conn_id or config.mlflow_conn_id)
        ti = context["ti"]
        run_id = str(result["mlflow_run_id"])
        client = hook.get_client()
        run = client.get_run(run_id)
        tags = lineage_tags(dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id, try_number=int(ti.try_number or 1),
                            data_version=result.get("data_version") or run.data.tags.get("mlops.data_version"),
                            git_sha=run.data.tags.get("mlops.git_sha"),
                            image_digest=result.get("image_digest") or run.data.tags.get("mlops.image_digest"))
        tags["mlops.params_hash"] = run.data.tags.get("mlops.params_hash", "")
        tags["mlops.training_run_id"] = run_id
        tags.update({k: str(v) for k, v in self.extra_tags.items()})
        tags = {k: v for k, v in tags.items() if v}
        # The Airflow identity that makes a retry find its own version is the training task's, not the try's.
        tags.pop("mlops.airflow.try_number", None)
        description = self.description or (
            f"Trained by {ti.dag_id}.{run.data.tags.get('mlops.airflow.task_id', '?')} in run {ti.run_id}; "
            f"data {tags.get('mlops.data_version', 'unknown')}")
        version = hook.register_model_version(self.model_name, str(result["model_uri"]), run_id, tags,
                                              description=description, ready_timeout=self.ready_timeout)
        url = hook.run_url(run.info.experiment_id, run_id)
        if url:
            ti.xcom_push(key=RUN_URL_KEY, value=url)
        metrics = {k: v for k, v in run.data.metrics.items() if k.startswith("test_")}
        self.log.info("model %s version %s (%s) metrics: %s", self.model_name, version.version, version.status,
                      ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())))
        return {"model_name": self.model_name, "version": str(version.version), "run_id": run_id,
                "model_uri": f"models:/{self.model_name}/{version.version}", "source": str(result["model_uri"]),
                "metrics": metrics, "tags": tags, "model_version_url": hook.model_version_url(self.model_name,
                                                                                                 str(version.version))}
