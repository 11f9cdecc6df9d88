"""MLflow connection and hook: a configured MlflowClient, plus the env a step needs to log into a run."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from airflow_mlops.core.config import mlops_home
from airflow_mlops.core.step import SecretEnvRef
from airflow_mlops.steps import contract

if TYPE_CHECKING:
    from mlflow import MlflowClient

AUTH_TYPES = ("none", "basic", "bearer")


class MlflowHook(BaseHook):
    """Talks to an MLflow tracking server / registry configured by an ``mlflow`` connection.

    When the connection does not exist, the hook falls back to the embedded laptop stack: a SQLite store
    and a local artifact directory under ``$MLOPS_HOME/mlflow``.

    Connection fields: host = tracking URI; login/password = basic auth; extra: ``auth_type``
    (none | basic | bearer), ``token``, ``registry_uri``, ``ui_url`` (where people open runs),
    ``artifact_location`` (root for new experiments), ``kubernetes_secret`` (Secret with the same
    credentials for pods).

    :param mlflow_conn_id: the connection id.
    """

    conn_name_attr = "mlflow_conn_id"
    default_conn_name = "mlflow_default"
    conn_type = "mlflow"
    hook_name = "MLflow"

    def __init__(self, mlflow_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mlflow_conn_id = mlflow_conn_id

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Relabel the generic connection form for MLflow."""
        return {
            "hidden_fields": ["schema", "port"],
            "relabeling": {"host": "Tracking URI", "login": "Username (basic auth)",
                           "password": "Password (basic auth)"},
            "placeholders": {
                "host": "https://mlflow.example.com or databricks",
                "extra": '{"auth_type": "bearer", "token": "...", "registry_uri": "", "ui_url": "", '
                         '"kubernetes_secret": "mlflow-auth"}',
            },
        }

    @cached_property
    def settings(self) -> dict[str, Any]:
        """Resolved connection settings (the embedded stack when the connection is absent)."""
        from airflow.sdk.exceptions import AirflowNotFoundException

        try:
            conn = self.get_connection(self.mlflow_conn_id)
        except AirflowNotFoundException:
            home = os.path.join(mlops_home(), "mlflow")
            os.makedirs(home, exist_ok=True)
            uri = f"sqlite:///{home}/mlflow.db"
            self.log.info("No connection %r: using the embedded MLflow store %s", self.mlflow_conn_id, uri)
            return {"tracking_uri": uri, "registry_uri": None, "auth_type": "none", "ui_url": "http://127.0.0.1:5000",
                    "artifact_location": os.path.join(home, "artifacts"), "embedded": True}
        extra = conn.extra_dejson
        auth = extra.get("auth_type") or ("basic" if conn.login else "bearer" if extra.get("token") else "none")
        if auth not in AUTH_TYPES:
            raise ValueError(f"connection {self.mlflow_conn_id!r} extra.auth_type must be one of {AUTH_TYPES}, "
                             f"got {auth!r}")
        host = conn.host or ""
        if conn.conn_type == "mlflow" and host and "://" not in host and host != "databricks":
            host = f"{conn.schema or 'http'}://{host}" + (f":{conn.port}" if conn.port else "")
        return {
            "tracking_uri": host, "registry_uri": extra.get("registry_uri") or None, "auth_type": auth,
            "login": conn.login, "password": conn.password, "token": extra.get("token"),
            "ui_url": extra.get("ui_url") or (host if host.startswith("http") else None),
            "artifact_location": extra.get("artifact_location"),
            "kubernetes_secret": extra.get("kubernetes_secret"), "embedded": False,
        }

    @property
    def tracking_uri(self) -> str:
        """The tracking URI (also the registry URI unless the connection sets one)."""
        return str(self.settings["tracking_uri"])

    def process_env(self) -> dict[str, str]:
        """Env for a local step process: URIs and credentials. Credentials are masked in task logs."""
        from airflow.sdk.log import mask_secret

        s = self.settings
        env = {contract.MLFLOW_TRACKING_URI: s["tracking_uri"]}
        if s.get("registry_uri"):
            env[contract.MLFLOW_REGISTRY_URI] = s["registry_uri"]
        if s["auth_type"] == "basic" and s.get("login"):
            env[contract.MLFLOW_TRACKING_USERNAME] = s["login"]
            env[contract.MLFLOW_TRACKING_PASSWORD] = s.get("password") or ""
            mask_secret(s.get("password") or "")
        elif s["auth_type"] == "bearer" and (s.get("token") or s.get("password")):
            env[contract.MLFLOW_TRACKING_TOKEN] = s.get("token") or s["password"]
            mask_secret(env[contract.MLFLOW_TRACKING_TOKEN])
        return env

    def pod_env(self, secret_name: str | None = None) -> tuple[dict[str, str], tuple[SecretEnvRef, ...]]:
        """Env for a pod: URIs as values, credentials only as references to a Kubernetes Secret.

        :param secret_name: Secret holding ``token`` (bearer) or ``username``/``password`` (basic); defaults to
            the connection's ``kubernetes_secret``.
        """
        s = self.settings
        plain = {contract.MLFLOW_TRACKING_URI: s["tracking_uri"]}
        if s.get("registry_uri"):
            plain[contract.MLFLOW_REGISTRY_URI] = s["registry_uri"]
        secret = secret_name or s.get("kubernetes_secret")
        if s["auth_type"] != "none" and not secret:
            raise ValueError(
                f"MLflow connection {self.mlflow_conn_id!r} uses {s['auth_type']} auth, but no Kubernetes Secret is "
                "named for pods: set extra.kubernetes_secret on the connection or the mlops_mlflow_secret Variable. "
                "Credentials are never put into a pod spec as literal values."
            )
        refs: tuple[SecretEnvRef, ...] = ()
        if s["auth_type"] == "bearer" and secret:
            refs = (SecretEnvRef(contract.MLFLOW_TRACKING_TOKEN, secret, "token"),)
        elif s["auth_type"] == "basic" and secret:
            refs = (SecretEnvRef(contract.MLFLOW_TRACKING_USERNAME, secret, "username"),
                    SecretEnvRef(contract.MLFLOW_TRACKING_PASSWORD, secret, "password"))
        return plain, refs

    def get_client(self) -> MlflowClient:
        """An MlflowClient for this connection (credentials through MLflow's own env variables)."""
        from mlflow import MlflowClient

        os.environ.update(self.process_env())
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.settings.get("registry_uri"))

    @contextlib.contextmanager
    def active_tracking_uri(self) -> Iterator[None]:
        """Make this connection's tracking URI MLflow's global one for the block.

        MLflow resolves some URIs (``models:/m-<id>`` sources of logged models) through its process-global
        tracking URI, not the client's; anything else in the worker may have set that global.
        """
        import mlflow
        from mlflow.tracking._tracking_service import utils as tracking_utils  # no public getter for "unset"

        previous = tracking_utils._tracking_uri
        mlflow.set_tracking_uri(self.tracking_uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(previous)  # type: ignore[arg-type]

    def get_or_create_experiment(self, name: str) -> str:
        """The experiment id for ``name``, created if needed (with a local artifact root on the embedded stack)."""
        client = self.get_client()
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return str(experiment.experiment_id)
        location = self.settings.get("artifact_location")
        if location and "://" not in location:
            location = os.path.join(location, name.strip("/").replace("/", "_"))
        try:
            return str(client.create_experiment(name, artifact_location=location))
        except Exception:
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
            return str(experiment.experiment_id)

    def find_or_create_run(self, experiment_id: str, identity: dict[str, str], run_name: str,
                           tags: dict[str, str] | None = None) -> str:
        """Return the run tagged with ``identity`` (created by an earlier try), or create it.

        Creating the run before the step starts, and finding it again on retry, makes every try of a task
        log into one MLflow run.
        """
        client = self.get_client()
        query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in sorted(identity.items()))
        found = client.search_runs([experiment_id], filter_string=query, max_results=1,
                                   order_by=["attributes.start_time DESC"])
        if found:
            return str(found[0].info.run_id)
        run = client.create_run(experiment_id, run_name=run_name, tags={**identity, **(tags or {})})
        return str(run.info.run_id)

    def register_model_version(self, name: str, model_uri: str, run_id: str, tags: dict[str, str],
                               description: str | None = None, ready_timeout: float = 300,
                               poll_interval: float = 2) -> Any:
        """Register ``model_uri`` as a new version of ``name``, or return the version this run already made.

        Idempotent per MLflow run: a retried task finds the version tagged with the same Airflow identity
        instead of creating a second one. Waits until the version is READY.
        """
        import time

        from mlflow.exceptions import MlflowException

        client = self.get_client()
        try:
            client.get_registered_model(name)
        except MlflowException:
            with contextlib.suppress(MlflowException):  # created concurrently by another task: fine
                client.create_registered_model(name)
        identity = {k: v for k, v in tags.items() if k in ("mlops.airflow.dag_id", "mlops.airflow.run_id",
                                                            "mlops.airflow.task_id")}
        version = None
        for existing in client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'"):
            if all(existing.tags.get(k) == v for k, v in identity.items()):
                version = existing
                self.log.info("model %s version %s already registered by this task run: reusing it", name,
                              existing.version)
                break
        if version is None:
            with self.active_tracking_uri():
                version = client.create_model_version(name, model_uri, run_id=run_id, tags=tags,
                                                      description=description)
            self.log.info("registered model %s version %s from %s", name, version.version, model_uri)
        deadline = time.monotonic() + ready_timeout
        while version.status != "READY":
            if version.status == "FAILED_REGISTRATION":
                raise RuntimeError(f"model {name} version {version.version} failed registration: "
                                   f"{version.status_message}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"model {name} version {version.version} not READY after {ready_timeout}s "
                                   f"(status {version.status}: {version.status_message})")
            time.sleep(poll_interval)
            version = client.get_model_version(name, version.version)
        for key, value in tags.items():
            if version.tags.get(key) != value:
                client.set_model_version_tag(name, version.version, key, value)
        return version

    def model_version_url(self, name: str, version: str) -> str | None:
        """Where a person opens the model version in the MLflow UI."""
        base = self.settings.get("ui_url")
        return f"{base.rstrip('/')}/#/models/{name}/versions/{version}" if base else None

    def run_url(self, experiment_id: str, run_id: str) -> str | None:
        """Where a person opens the run in the MLflow UI, if the connection knows a UI URL."""
        base = self.settings.get("ui_url")
        if not base:
            return None
        return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"

    def test_connection(self) -> tuple[bool, str]:
        """Used by the Airflow UI's Test button: list one experiment."""
        try:
            self.get_client().search_experiments(max_results=1)
        except Exception as err:
            return False, str(err)
        return True, f"Connected to MLflow at {self.tracking_uri}"
