"""Wait until a model has a new version, or until an alias points to a version that meets a condition."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout

from airflow_mlops.core.promotion import RegistryWait
from airflow_mlops.links.mlflow import MODEL_VERSION_URL_KEY, MlflowModelVersionLink

if TYPE_CHECKING:
    from airflow.sdk import Context


class MlflowRegistrySensor(BaseSensorOperator):
    """Wait for a registry condition; deferrable by default (a trigger polls, no worker slot is held).

    On timeout the error says what was awaited and what was last seen. Registry errors that waiting cannot fix
    (401/403, a 404 other than an absent model, bad requests) fail the task at once with the reason; 5xx answers,
    timeouts and connection errors (after the hook's own retries) and 408/429 count as "not yet" until the
    timeout (``airflow_mlops.triggers.mlflow.poll_error``), in the trigger and in ``poke`` alike.

    :param model_name: registered model name (templated).
    :param alias: wait for this alias to point at a qualifying version (None: wait for a new version).
    :param newer_than: the version must be greater than this one (templated), e.g. the current champion's.
    :param required_tags: tags the alias's version must carry (templated), e.g. ``{"mlops.decision": "promote"}``.
    :param mlflow_conn_id: default the ``mlops_mlflow_conn_id`` Variable.
    :param deferrable: wait in the triggerer (default True).
    :param missing_model: ``wait`` (default: an absent model is "not yet", for a model whose first version is still
        to come) or ``fail`` (an absent model fails the task at once, e.g. a misspelt name).
    """

    template_fields: Sequence[str] = ("model_name", "newer_than", "required_tags")
    operator_extra_links = (MlflowModelVersionLink(),)
    ui_color = "#e4d7f5"

    def __init__(self, *, model_name: str, alias: str | None = None, newer_than: str | None = None,
                 required_tags: Mapping[str, str] | None = None, mlflow_conn_id: str | None = None,
                 deferrable: bool = True, missing_model: str = "wait", **kwargs: Any) -> None:
        from airflow_mlops.triggers.mlflow import MISSING_MODEL

        super().__init__(**kwargs)
        if missing_model not in MISSING_MODEL:
            raise ValueError(f"{type(self).__name__}.missing_model must be one of {MISSING_MODEL}, "
                             f"got {missing_model!r}")
        self.missing_model = missing_model
        self.model_name = model_name
        self.alias = alias
        self.newer_than = newer_than
        self.required_tags = dict(required_tags or {})
        self.mlflow_conn_id = mlflow_conn_id
        self.deferrable = deferrable
        if "{{" not in model_name and "{{" not in str(newer_than):
            self._wait()  # validate at parse time when nothing is templated
        self._last_seen = "nothing yet"

    def _wait(self) -> RegistryWait:
        newer = None if self.newer_than in (None, "", "None") else str(self.newer_than)
        return RegistryWait(self.model_name, self.alias, newer, self.required_tags)

    def _conn_id(self) -> str:
        from airflow_mlops.hooks.config import load_config

        return self.mlflow_conn_id or load_config().mlflow_conn_id

    def poke(self, context: Context) -> PokeReturnValue:
        from airflow_mlops.triggers.mlflow import poll_error

        wait = self._wait()
        try:
            state = self._state(wait)
        except Exception as err:
            again, why = poll_error(err)
            if not again:
                raise AirflowFailException(f"registry error while waiting for {wait.describe()}: {why}: "
                                           f"{err}") from err
            self._last_seen = f"registry error ({why}): {err}"
            self.log.warning("waiting for %s: %s", wait.describe(), self._last_seen)
            return PokeReturnValue(is_done=False)
        if self.missing_model == "fail" and state.get("exists") is False:
            raise AirflowFailException(f"registered model {wait.model_name!r} does not exist "
                                       "(missing_model='fail')")
        met, self._last_seen = wait.evaluate(state)
        self.log.info("%s: %s", "met" if met else "waiting for " + wait.describe(), self._last_seen)
        return PokeReturnValue(is_done=met, xcom_value=self._done(context, state) if met else None)

    def _done(self, context: Context, state: Mapping[str, Any]) -> dict[str, Any]:
        from airflow_mlops.hooks.mlflow import MlflowHook

        version = state.get("alias_version") if self.alias else state.get("latest_version")
        url = MlflowHook(self._conn_id()).model_version_url(self.model_name, str(version))
        if url:
            context["ti"].xcom_push(key=MODEL_VERSION_URL_KEY, value=url)
        return {"model_name": self.model_name, "alias": self.alias, "version": version}

    def execute(self, context: Context) -> Any:
        wait = self._wait()
        if not self.deferrable:
            try:
                return super().execute(context)
            except AirflowSensorTimeout as err:
                raise AirflowSensorTimeout(f"{err}: waited for {wait.describe()}; "
                                           f"last seen: {self._last_seen}") from err
        first = self.poke(context)
        if first.is_done:
            return first.xcom_value
        from airflow_mlops.triggers.mlflow import MlflowRegistryTrigger

        self.defer(trigger=MlflowRegistryTrigger(
            wait={"model_name": wait.model_name, "alias": wait.alias, "newer_than": wait.newer_than,
                  "required_tags": dict(wait.required_tags)},
            mlflow_conn_id=self._conn_id(), poll_interval=float(self.poke_interval),
            deadline=time.time() + float(self.timeout), missing_model=self.missing_model),
            method_name="execute_complete")

    def _state(self, wait: RegistryWait) -> dict[str, Any]:
        from airflow_mlops.hooks.mlflow import MlflowHook

        return MlflowHook(self._conn_id()).registry_state(wait.model_name, wait.alias)

    def execute_complete(self, context: Context, event: Mapping[str, Any]) -> dict[str, Any]:
        """Resume after the trigger: the version found, an error that waiting cannot fix, or a timeout naming
        what was awaited and seen."""
        if event.get("status") == "error":
            raise AirflowFailException(f"registry error while waiting for {event.get('awaited')}: "
                                       f"{event.get('error')} (after {event.get('polls')} polls)")
        if event.get("status") != "met":
            raise AirflowSensorTimeout(f"timed out after {float(self.timeout):.0f}s waiting for "
                                       f"{event.get('awaited')}; last seen: {event.get('seen')} "
                                       f"({event.get('polls')} polls)")
        self.log.info("met: %s", event.get("seen"))
        return self._done(context, event.get("state") or {})
