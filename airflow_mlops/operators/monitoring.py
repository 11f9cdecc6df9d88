"""Monitoring: find what a served model was trained on, so drift can be measured against it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

if TYPE_CHECKING:
    from airflow.sdk import Context


class ModelReferenceOperator(BaseOperator):
    """Resolve ``models:/<name>@<alias>`` to its version and the training data and predictions behind it.

    Reads the lineage the training pipeline wrote (run tags ``mlops.train_uri``, ``mlops.test_uri``,
    ``mlops.predictions.train|test``, ``mlops.data_version``, ``mlops.label_column``). XCom: ``{model_name, alias,
    version, run_id, train_uri, test_uri, train_predictions_uri, test_predictions_uri, data_version,
    label_column}``.

    :param model_name: registered model (templated).
    :param alias: alias of the served version (templated); default ``champion``.
    :param mlflow_conn_id: default the ``mlops_mlflow_conn_id`` Variable.
    """

    template_fields: Sequence[str] = ("model_name", "alias")
    ui_color = "#eadcf5"

    def __init__(self, *, model_name: str, alias: str = "champion", mlflow_conn_id: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.alias = alias
        self.mlflow_conn_id = mlflow_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from mlflow.exceptions import MlflowException

        from airflow_mlops.hooks.config import load_config
        from airflow_mlops.hooks.mlflow import MlflowHook

        hook = MlflowHook(mlflow_conn_id=self.mlflow_conn_id or load_config().mlflow_conn_id)
        client = hook.get_client()
        try:
            version = client.get_model_version_by_alias(self.model_name, self.alias)
        except MlflowException as err:
            raise AirflowFailException(f"models:/{self.model_name}@{self.alias} does not resolve in "
                                       f"{hook.tracking_uri}: {err.message}") from None
        if not version.run_id:
            raise AirflowFailException(f"{self.model_name} version {version.version} has no training run: "
                                       "no lineage to compare against")
        tags = client.get_run(version.run_id).data.tags
        reference = {
            "model_name": self.model_name, "alias": self.alias, "version": str(version.version),
            "run_id": version.run_id, "train_uri": tags.get("mlops.train_uri"), "test_uri": tags.get("mlops.test_uri"),
            "train_predictions_uri": tags.get("mlops.predictions.train"),
            "test_predictions_uri": tags.get("mlops.predictions.test"),
            "data_version": tags.get("mlops.data_version") or version.tags.get("mlops.data_version"),
            # Runs from before the tag existed were trained on the bundled datasets' "target".
            "label_column": tags.get("mlops.label_column") or "target",
        }
        if not reference["train_uri"]:
            raise AirflowFailException(f"run {version.run_id} of {self.model_name} version {version.version} has no "
                                       "mlops.train_uri tag: it was not trained by an airflow-mlops trainer")
        self.log.info("%s@%s = version %s (run %s), trained on %s (data %s)", self.model_name, self.alias,
                      reference["version"], version.run_id, reference["train_uri"], reference["data_version"])
        return reference
