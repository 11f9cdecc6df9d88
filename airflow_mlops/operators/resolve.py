"""Which version a rollout deploys, and which it replaces: from the trigger, a param, or the registry's aliases."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from airflow_mlops.core.promotion import RegistryError

if TYPE_CHECKING:
    from airflow.sdk import Context


class ResolveRolloutOperator(BaseOperator):
    """Resolve the candidate and stable versions of ``model_name`` for a rollout run.

    The candidate is, in order: ``candidate_version`` when given (a manual run), the version carried by the
    Asset event that scheduled this run (the promotion that moved ``candidate_alias``), or what
    ``candidate_alias`` points to now. The stable version is what ``stable_alias`` points to (None: first
    deployment). A candidate that already is the stable version skips the rollout.

    XCom: ``{model_name, candidate_version, stable_version, source}``.

    :param model_name: registered model (templated).
    :param candidate_version: explicit version (templated); empty: from the event or the alias.
    :param candidate_alias: default ``challenger``.
    :param stable_alias: default ``champion``.
    :param mlflow_conn_id: default the ``mlops_mlflow_conn_id`` Variable.
    """

    template_fields: Sequence[str] = ("model_name", "candidate_version", "candidate_alias", "stable_alias")
    ui_color = "#eadcf5"

    def __init__(self, *, model_name: str, candidate_version: str | None = None, candidate_alias: str = "challenger",
                 stable_alias: str = "champion", mlflow_conn_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.candidate_version = candidate_version
        self.candidate_alias = candidate_alias
        self.stable_alias = stable_alias
        self.mlflow_conn_id = mlflow_conn_id

    def _from_event(self, context: Context) -> str | None:
        events = context.get("triggering_asset_events") or {}
        latest = None
        for asset_events in events.values():
            for event in asset_events:
                extra = getattr(event, "extra", None) or {}
                if extra.get("model_name") == self.model_name and extra.get("version"):
                    stamp = getattr(event, "timestamp", None)
                    if latest is None or (stamp is not None and stamp >= latest[0]):
                        latest = (stamp, str(extra["version"]))
        return latest[1] if latest else None

    def execute(self, context: Context) -> dict[str, Any]:
        try:
            return self._resolve(context)
        except RegistryError as err:
            raise AirflowFailException(str(err)) from err

    def _resolve(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.hooks.config import load_config
        from airflow_mlops.hooks.mlflow import MlflowHook

        hook = MlflowHook(mlflow_conn_id=self.mlflow_conn_id or load_config().mlflow_conn_id)
        candidate, source = (str(self.candidate_version), "param") if self.candidate_version else (None, "")
        if candidate is None:
            candidate, source = self._from_event(context), "asset event"
        if candidate is None:
            candidate, source = hook.get_alias_version(self.model_name, self.candidate_alias), \
                f"alias {self.candidate_alias}"
        if candidate is None:
            raise AirflowFailException(f"nothing to roll out: no candidate_version param, no promotion event, and "
                                       f"{self.model_name}@{self.candidate_alias} is not set")
        status = hook.get_model_version(self.model_name, candidate).status  # raises clearly if it does not exist
        if status != "READY":
            raise AirflowFailException(f"{self.model_name} version {candidate} is {status}, not READY")
        stable = hook.get_alias_version(self.model_name, self.stable_alias)
        self.log.info("rollout of %s: candidate version %s (from %s), stable version %s (@%s)", self.model_name,
                      candidate, source, stable or "none: first deployment", self.stable_alias)
        if stable == candidate:
            raise AirflowSkipException(f"version {candidate} already is @{self.stable_alias}: nothing to roll out")
        return {"model_name": self.model_name, "candidate_version": candidate, "stable_version": stable,
                "source": source}
