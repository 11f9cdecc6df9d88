"""MLflow connection and hook: a configured MlflowClient, plus the env a step needs to log into a run."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Any, cast

from airflow.sdk import BaseHook

from airflow_mlops.core.config import mlops_home
from airflow_mlops.core.promotion import (
    MAX_TAG_VALUE,
    AliasConflictError,
    AliasMove,
    UnknownAliasError,
    UnknownModelError,
    UnknownVersionError,
    VersionNotReadyError,
    default_rollback_alias,
)
from airflow_mlops.core.step import SecretEnvRef
from airflow_mlops.steps import contract

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = ["AliasConflictError", "AliasMove", "MlflowHook", "http_status", "is_retryable"]

AUTH_TYPES = ("none", "basic", "bearer")
#: Defaults of the connection's retry extras (``max_retries``, ``backoff_factor`` seconds, ``timeout`` seconds).
DEFAULT_MAX_RETRIES = 3
DEFAULT_BACKOFF_FACTOR = 1.0
DEFAULT_TIMEOUT = 120
MAX_BACKOFF = 30.0
#: Calls that create something: retrying one after a lost response could create it twice. Our callers make them
#: idempotent one level up instead (register finds its version by tags; copy finds its copy).
NOT_RETRIED = frozenset({"create_model_version", "create_run", "copy_model_version", "create_registered_model"})
HISTORY_PREFIX = "mlops.alias_history"
LOCK_SUFFIX = "__mlops_alias_lock__"
_STATUS_PATTERNS = (re.compile(r"too many (\d{3}) error responses"), re.compile(r"error code (\d{3}) != 200"))
#: Credential variables MLflow reads from the environment on every request (``get_default_host_creds``).
CREDENTIAL_ENV = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
#: Serialises every hook's MLflow calls in this process while their env is in force (see :func:`_scoped_env`).
_ENV_LOCK = threading.RLock()


def _status_of(err: BaseException) -> int | None:
    """The HTTP status behind an MLflow client error, if any (from the error code or the transport message)."""
    for pattern in _STATUS_PATTERNS:
        match = pattern.search(str(err))
        if match:
            return int(match.group(1))
    if type(err).__name__ == "RestException":
        getter = getattr(err, "get_http_status_code", None)
        return int(getter()) if getter else None
    return None


def _causes(err: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        yield cause
        cause = cause.__cause__ or cause.__context__


def http_status(err: BaseException) -> int | None:
    """The HTTP status behind a failed MLflow call (its error or any error it was raised from), if any."""
    for cause in _causes(err):
        status = _status_of(cause)
        if status is not None:
            return status
    return None


def is_retryable(err: BaseException) -> tuple[bool, str]:
    """Whether a failed MLflow call is worth retrying, and why: 5xx and timeouts/connection errors yes, 4xx never.

    MLflow's own client retries 408, 429, 500, 502, 503 and 504 (``_TRANSIENT_FAILURE_RESPONSE_CODES``) and
    network errors, ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` times (default 7, backoff factor 2): a 429 or 408 would be
    retried there. The hook turns MLflow's transport retries off and applies this rule instead, so the behaviour
    is ours, logged and tested.
    """
    import requests

    for cause in _causes(err):
        status = _status_of(cause)
        if status is not None:
            return (500 <= status < 600, f"HTTP {status}")
        if isinstance(cause, (requests.exceptions.Timeout, TimeoutError)):
            return True, f"timeout ({type(cause).__name__})"
        if isinstance(cause, requests.exceptions.ConnectionError) and not isinstance(
                cause, requests.exceptions.SSLError):
            return True, f"connection error ({type(cause).__name__})"
    return False, type(err).__name__


class RetryingClient:
    """An MlflowClient whose calls are retried with exponential backoff and jitter when :func:`is_retryable`.

    :param client: the MlflowClient.
    :param max_retries: retries after the first attempt.
    :param backoff_factor: first wait in seconds; doubles per retry, capped at 30s.
    :param log: where retries are reported.
    :param env: MLflow settings and credentials (environment variables; None: unset) in force during each call
        only, so that step processes started from this worker keep MLflow's defaults and no other connection's
        calls see these credentials.
    """

    def __init__(self, client: Any, max_retries: int, backoff_factor: float, log: Any,
                 env: Mapping[str, str | None] | None = None) -> None:
        self._client = client
        self._max_retries = max_retries
        self._backoff = backoff_factor
        self._log = log
        self._env = dict(env or {})

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr) or name.startswith("_"):
            return attr
        return self._retrying(name, attr, 0 if name in NOT_RETRIED else self._max_retries)

    def _retrying(self, name: str, call: Callable[..., Any], max_retries: int) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            attempt = 0
            while True:
                try:
                    with _scoped_env(self._env):
                        return call(*args, **kwargs)
                except Exception as err:
                    retry, why = is_retryable(err)
                    if not retry or attempt >= max_retries:
                        if retry:
                            self._log.warning("MLflow %s failed (%s) after %d retries: giving up", name, why, attempt)
                        raise
                    wait = min(self._backoff * 2**attempt, MAX_BACKOFF) * (0.5 + random.random() / 2)
                    attempt += 1
                    self._log.warning("MLflow %s failed (%s): retry %d/%d in %.2fs", name, why, attempt,
                                      max_retries, wait)
                    time.sleep(wait)
        return wrapped


@contextlib.contextmanager
def _scoped_env(env: Mapping[str, str | None]) -> Iterator[None]:
    """Set (a None value: unset) environment variables for the block, then restore them.

    MLflow reads credentials (``MLFLOW_TRACKING_USERNAME`` / ``_PASSWORD`` / ``_TOKEN``, ``DATABRICKS_*``) and its
    HTTP settings from ``os.environ`` on every request, for its REST stores and its artifact repositories alike;
    its stores are cached per URI and shared by every client in the process, so there is no per-client place to
    put them. The environment is one per process: the block holds a process-wide re-entrant lock, so two hooks
    with different connections in one process (a triggerer, a threaded test) never run a call under each other's
    credentials. The price: MLflow calls made through hooks in one process run one at a time.
    """
    with _ENV_LOCK:
        saved = {k: os.environ.get(k) for k in env}
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        try:
            yield
        finally:
            for key, previous in saved.items():
                if previous is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = previous


def _extra(extra: Mapping[str, Any], key: str) -> Any:
    """A connection extra, under its plain name or the UI's ``extra__mlflow__`` prefix."""
    value = extra.get(key)
    return value if value not in (None, "") else extra.get(f"extra__mlflow__{key}")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class MlflowHook(BaseHook):
    """Talks to an MLflow tracking server / registry configured by an ``mlflow`` connection.

    When the connection does not exist, the hook falls back to the embedded laptop stack: a SQLite store
    and a local artifact directory under ``$MLOPS_HOME/mlflow``.

    Connection fields: host = tracking URI; login/password = basic auth; extra: ``auth_type``
    (none | basic | bearer), ``token``, ``registry_uri``, ``ui_url`` (where people open runs),
    ``artifact_location`` (root for new experiments), ``kubernetes_secret`` (Secret with the same
    credentials for pods), ``databricks_host`` / ``databricks_token`` (tracking URI becomes ``databricks``),
    ``max_retries`` (3), ``backoff_factor`` (1s), ``timeout`` (120s per request). The form fields are declared in
    ``get_provider_info`` (``conn-fields``; Airflow 3.2+ deprecates ``get_connection_form_widgets``).

    Secrets (password, token, Databricks token) are masked in task logs. 5xx answers, timeouts and connection
    errors are retried with exponential backoff; 4xx answers never are (see :func:`is_retryable`).

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
                         '"kubernetes_secret": "mlflow-auth", "max_retries": 3, "backoff_factor": 1}',
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
                    "artifact_location": os.path.join(home, "artifacts"), "embedded": True,
                    "max_retries": DEFAULT_MAX_RETRIES, "backoff_factor": DEFAULT_BACKOFF_FACTOR,
                    "timeout": DEFAULT_TIMEOUT}
        extra = conn.extra_dejson
        token = _extra(extra, "token")
        auth = _extra(extra, "auth_type") or ("basic" if conn.login else "bearer" if token else "none")
        if auth not in AUTH_TYPES:
            raise ValueError(f"connection {self.mlflow_conn_id!r} extra.auth_type must be one of {AUTH_TYPES}, "
                             f"got {auth!r}")
        if auth == "basic" and not conn.login:
            raise ValueError(f"connection {self.mlflow_conn_id!r}: auth_type basic needs a login (username)")
        if auth == "bearer" and not (token or conn.password):
            raise ValueError(f"connection {self.mlflow_conn_id!r}: auth_type bearer needs extra.token (or password)")
        numbers: dict[str, Any] = {}
        for key, default, kind in (("max_retries", DEFAULT_MAX_RETRIES, int),
                                   ("backoff_factor", DEFAULT_BACKOFF_FACTOR, float),
                                   ("timeout", DEFAULT_TIMEOUT, int)):
            raw = _extra(extra, key)
            try:
                numbers[key] = kind(raw) if raw not in (None, "") else default
            except (TypeError, ValueError):
                raise ValueError(f"connection {self.mlflow_conn_id!r} extra.{key} must be a number >= 0, "
                                 f"got {raw!r}") from None
            if numbers[key] < 0 or (key == "timeout" and numbers[key] == 0):
                raise ValueError(f"connection {self.mlflow_conn_id!r} extra.{key} must be a number "
                                 f"{'> 0' if key == 'timeout' else '>= 0'}, got {raw!r}")
        host = conn.host or ""
        databricks_host = _extra(extra, "databricks_host")
        if databricks_host and not host:
            host = "databricks"
        if conn.conn_type == "mlflow" and host and "://" not in host and host != "databricks":
            host = f"{conn.schema or 'http'}://{host}" + (f":{conn.port}" if conn.port else "")
        return {
            "tracking_uri": host, "registry_uri": _extra(extra, "registry_uri") or None, "auth_type": auth,
            "login": conn.login, "password": conn.password, "token": token,
            "ui_url": _extra(extra, "ui_url") or (host if host.startswith("http") else databricks_host or None),
            "artifact_location": _extra(extra, "artifact_location"),
            "kubernetes_secret": _extra(extra, "kubernetes_secret"), "embedded": False,
            "databricks_host": databricks_host, "databricks_token": _extra(extra, "databricks_token"), **numbers,
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
        if s.get("databricks_host"):
            env["DATABRICKS_HOST"] = s["databricks_host"]
        if s.get("databricks_token"):
            env["DATABRICKS_TOKEN"] = s["databricks_token"]
            mask_secret(s["databricks_token"])
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

    def call_env(self) -> dict[str, str | None]:
        """The env in force during each of this hook's MLflow calls (None: unset for the call), never longer.

        URIs and credentials of the connection (:meth:`process_env`), with the other auth type's variables unset
        (MLflow prefers basic auth over a token when both are set); MLflow's transport retries off; the timeout.
        A connection without auth leaves whatever credentials the process environment has (a deployment may
        provide them that way).
        """
        s = self.settings
        env: dict[str, str | None] = dict(self.process_env())
        if s["auth_type"] != "none":
            for key in CREDENTIAL_ENV:
                env.setdefault(key, None)
        env.update({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
                    "MLFLOW_HTTP_REQUEST_TIMEOUT": str(s.get("timeout", DEFAULT_TIMEOUT))})
        return env

    def get_client(self) -> MlflowClient:
        """An MlflowClient for this connection; its credentials are in force only during its own calls.

        Its calls are retried by :class:`RetryingClient`: MLflow's own transport retries are switched off during
        each call (``MLFLOW_HTTP_REQUEST_MAX_RETRIES=0``) so that a 429/408 is not retried and each retry is logged.
        Credentials go through MLflow's env variables, set for each call under a process-wide lock and restored
        after it (:func:`_scoped_env`); nothing is left in ``os.environ``.
        """
        from mlflow import MlflowClient

        s = self.settings
        client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=s.get("registry_uri"))
        env = self.call_env()
        return cast("MlflowClient", RetryingClient(client, int(s.get("max_retries", DEFAULT_MAX_RETRIES)),
                                                   float(s.get("backoff_factor", DEFAULT_BACKOFF_FACTOR)), self.log,
                                                   env))

    @contextlib.contextmanager
    def active_tracking_uri(self) -> Iterator[None]:
        """Make this connection's tracking URI MLflow's global one for the block.

        MLflow resolves some URIs (``models:/m-<id>`` sources of logged models) through its process-global
        tracking URI, not the client's; anything else in the worker may have set that global. The block holds
        the same process-wide lock as each call's env, so another hook's call cannot run under this URI.
        """
        import mlflow
        from mlflow.tracking._tracking_service import utils as tracking_utils  # no public getter for "unset"

        with _ENV_LOCK:
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
        version = self.wait_until_ready(name, str(version.version), ready_timeout, poll_interval, version)
        for key, value in tags.items():
            if version.tags.get(key) != value:
                client.set_model_version_tag(name, version.version, key, value)
        return version

    # ------------------------------------------------------------------ registry reads with clear errors

    def get_registered_model(self, name: str) -> Any:
        """The registered model, or UnknownModelError naming it and the registry."""
        from mlflow.exceptions import MlflowException

        try:
            return self.get_client().get_registered_model(name)
        except MlflowException as err:
            if getattr(err, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
                raise UnknownModelError(f"registered model {name!r} does not exist in the registry at "
                                        f"{self.settings.get('registry_uri') or self.tracking_uri}") from err
            raise

    def get_model_version(self, name: str, version: str) -> Any:
        """The model version, or UnknownModelError / UnknownVersionError."""
        from mlflow.exceptions import MlflowException

        self.get_registered_model(name)
        try:
            return self.get_client().get_model_version(name, str(version))
        except MlflowException as err:
            if getattr(err, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
                raise UnknownVersionError(f"model {name!r} has no version {version!r}") from err
            raise

    def get_alias_version(self, name: str, alias: str) -> str | None:
        """The version ``alias`` points to, None when the alias is unset; UnknownModelError if the model is absent."""
        model = self.get_registered_model(name)
        aliases = getattr(model, "aliases", None) or {}
        version = aliases.get(alias)
        return str(version) if version is not None else None

    def require_alias_version(self, name: str, alias: str) -> str:
        """The version ``alias`` points to, or UnknownAliasError listing the aliases the model has."""
        model = self.get_registered_model(name)
        aliases = dict(getattr(model, "aliases", None) or {})
        if alias not in aliases:
            listed = ", ".join(f"{a}->v{v}" for a, v in sorted(aliases.items())) or "none"
            raise UnknownAliasError(f"model {name!r} has no alias {alias!r}; its aliases: {listed}")
        return str(aliases[alias])

    def run_metrics(self, run_id: str) -> dict[str, float]:
        """The latest value of every metric logged in the run."""
        return dict(self.get_client().get_run(run_id).data.metrics)

    def wait_until_ready(self, name: str, version: str, timeout: float = 300, poll_interval: float = 2,
                         current: Any = None) -> Any:
        """Poll until the version is READY; VersionNotReadyError on FAILED_REGISTRATION or after ``timeout`` s."""
        client = self.get_client()
        found = current if current is not None else client.get_model_version(name, version)
        deadline = time.monotonic() + timeout
        while found.status != "READY":
            if found.status == "FAILED_REGISTRATION":
                raise VersionNotReadyError(f"model {name} version {version} failed registration: "
                                           f"{found.status_message}")
            if time.monotonic() > deadline:
                raise VersionNotReadyError(f"model {name} version {version} not READY after {timeout}s "
                                           f"(status {found.status}: {found.status_message or 'no message'})")
            self.log.info("model %s version %s is %s; waiting for READY (%.0fs left)", name, version, found.status,
                          deadline - time.monotonic())
            time.sleep(poll_interval)
            found = client.get_model_version(name, version)
        return found

    # ------------------------------------------------------------------ alias moves (compare-and-swap)

    @staticmethod
    def lock_model_name(name: str, alias: str) -> str:
        """The transient registered model that serialises moves of ``name@alias`` (same catalog/schema on UC)."""
        return f"{name}{LOCK_SUFFIX}{alias}"

    @contextlib.contextmanager
    def _alias_lock(self, name: str, alias: str, timeout: float, ttl: float) -> Iterator[None]:
        """Hold the move lock for ``name@alias``: creating a registered model is atomic in MLflow (unique name).

        A lock older than ``ttl`` seconds (a worker that died mid-move) is broken; waiting longer than
        ``timeout`` raises AliasConflictError.
        """
        from mlflow.exceptions import MlflowException

        client = self.get_client()
        lock = self.lock_model_name(name, alias)
        owner = uuid.uuid4().hex
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.create_registered_model(lock, tags={"mlops.lock.owner": owner,
                                                           "mlops.lock.expires_at": str(time.time() + ttl)},
                                               description=f"transient lock: airflow-mlops is moving {name}@{alias}")
                break
            except MlflowException as err:
                if getattr(err, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                    raise
            with contextlib.suppress(MlflowException):
                held = client.get_registered_model(lock)
                if float(held.tags.get("mlops.lock.expires_at", "inf")) < time.time():
                    self.log.warning("breaking stale alias lock %s (owner %s)", lock, held.tags.get("mlops.lock.owner"))
                    client.delete_registered_model(lock)
                    continue
            if time.monotonic() > deadline:
                current = self.get_alias_version(name, alias)
                raise AliasConflictError(name, alias, None, current, f" (another move held the lock {lock} for more "
                                         f"than {timeout:.0f}s)")
            time.sleep(0.05 + random.random() * 0.1)
        try:
            yield
        finally:
            with contextlib.suppress(MlflowException):
                client.delete_registered_model(lock)

    def alias_history(self, name: str, alias: str) -> list[dict[str, Any]]:
        """The audit history of ``name@alias`` moves, oldest first (from ``mlops.alias_history.<alias>.<n>`` tags)."""
        tags = self.get_registered_model(name).tags or {}
        prefix = f"{HISTORY_PREFIX}.{alias}."
        entries = [(int(k[len(prefix):]), json.loads(v)) for k, v in tags.items()
                   if k.startswith(prefix) and k[len(prefix):].isdigit()]
        return [entry for _, entry in sorted(entries, key=lambda e: e[0])]

    def move_alias(self, name: str, alias: str, version: str, *, expected_version: str | None,
                   rollback_alias: str | None = None, audit_tags: Mapping[str, str] | None = None,
                   actor: str = "", reason: str = "", lock_timeout: float = 60, lock_ttl: float = 300,
                   kind: str = "move") -> AliasMove:
        """Point ``name@alias`` at ``version`` if, and only if, it still points at ``expected_version``.

        MLflow has no server-side compare-and-swap for aliases. The guarantee given here:

        * Movers that go through this method are serialised by a lock (a transient registered model named
          :meth:`lock_model_name`, whose creation MLflow makes atomic through the unique model name). Under the
          lock the alias is re-read, compared with ``expected_version`` (None: must be unset) and set, so of two
          concurrent promotions from the same expected state exactly one wins; the other raises
          AliasConflictError and moves nothing.
        * A writer that bypasses this method (the MLflow UI, another tool) can still interleave; the window is the
          time between the re-read and the single ``set_registered_model_alias`` call, a few milliseconds.

        Order, so that nothing is half-done: audit tags on the version and a ``moving`` history entry on the model
        are written first; then the previous holder moves to ``rollback_alias`` (one call; default
        ``<alias>_previous``); then the alias moves (one call) and the history entry is marked ``done``.

        **Retries are idempotent per actor.** When the last history entry is this ``actor``'s move of the alias
        to ``version`` from ``expected_version``, the call is the retry of that move (a task that died, or whose
        later steps failed, after it moved the alias or while it did): a ``done`` entry is returned as it is, a
        ``moving`` one is finished (or, if the alias had not moved yet, redone under the same entry), instead of
        failing with "someone moved it". ``expected_version`` may also be ``version`` itself (a retry that
        re-read the alias after its own move). Any other caller still gets AliasConflictError. An empty actor
        never matches: anonymous callers have no identity to claim a move by.

        :param name: registered model name.
        :param alias: alias to move, e.g. ``challenger`` or ``champion``.
        :param version: version to point it at.
        :param expected_version: the version the caller read (None: the alias must be unset).
        :param rollback_alias: alias that keeps the previous holder (default ``<alias>_previous``).
        :param audit_tags: more tags for the version, written before the alias moves.
        :param actor: who moves it (dag run and task, approver); the identity a retry is recognised by.
        :param reason: why.
        :param kind: recorded in the history entry: ``move`` or ``rollback`` (see :meth:`rollback_alias`).
        """
        version = str(version)
        expected = str(expected_version) if expected_version is not None else None
        rollback_alias = rollback_alias or default_rollback_alias(alias)
        if rollback_alias == alias:
            raise ValueError(f"rollback_alias must differ from alias {alias!r}")
        target = self.get_model_version(name, version)
        if target.status != "READY":
            raise VersionNotReadyError(f"model {name} version {version} is {target.status}, not READY: "
                                       f"refusing to point {alias} at it")
        client = self.get_client()
        with self._alias_lock(name, alias, lock_timeout, lock_ttl):
            current = self.get_alias_version(name, alias)
            history = self.alias_history(name, alias)
            own = self._own_last_move(history, version, expected, actor)
            resume_key = None
            if own is not None:
                if current == version:
                    return self._finish_own_move(name, alias, history, own)
                if current == own.get("from") and own.get("state") == "moving":
                    # This caller's move stopped before the alias moved: redo it under the same history entry.
                    resume_key = f"{HISTORY_PREFIX}.{alias}.{len(history):06d}"
                    expected = current
            if current != expected:
                raise AliasConflictError(name, alias, expected, current)
            moved_at = _now()
            if current == version:
                self.log.info("%s@%s already points to version %s: nothing to move", name, alias, version)
                return AliasMove(name, alias, version, current, None, moved_at, actor, reason)
            entry_key = resume_key or f"{HISTORY_PREFIX}.{alias}.{len(history) + 1:06d}"
            entry = {"from": current, "to": version, "by": actor, "at": moved_at, "why": reason[:500],
                     "rollback_alias": rollback_alias if current else None, "kind": kind, "state": "moving"}
            tags = {f"mlops.alias.{alias}.set_at": moved_at, f"mlops.alias.{alias}.set_by": actor,
                    f"mlops.alias.{alias}.reason": reason[:MAX_TAG_VALUE],
                    f"mlops.alias.{alias}.previous_version": current or "none", **(audit_tags or {})}
            for key, value in tags.items():
                client.set_model_version_tag(name, version, key, str(value)[:MAX_TAG_VALUE])
            client.set_registered_model_tag(name, entry_key, json.dumps(entry))
            # The compare-and-swap proper: re-read right before the single set call.
            latest = self.get_alias_version(name, alias)
            if latest != expected:
                entry["state"] = f"aborted: alias moved to {latest} by a writer outside this hook"
                client.set_registered_model_tag(name, entry_key, json.dumps(entry))
                raise AliasConflictError(name, alias, expected, latest, " (outside the lock, e.g. in the MLflow UI)")
            # The previous holder is kept first: if the move below fails, a retry finds the alias unmoved and
            # repeats both; the alias never points at the new version without its rollback alias in place.
            if current is not None:
                client.set_registered_model_alias(name, rollback_alias, current)
            client.set_registered_model_alias(name, alias, version)
            entry["state"] = "done"
            client.set_registered_model_tag(name, entry_key, json.dumps(entry))
        self.log.info("moved %s@%s: version %s -> %s%s (by %s: %s)", name, alias, current or "(unset)", version,
                      f"; previous kept as @{rollback_alias}" if current else "", actor or "?", reason or "-")
        return AliasMove(name, alias, version, current, rollback_alias if current else None, moved_at, actor, reason)

    @staticmethod
    def _own_last_move(history: list[dict[str, Any]], version: str, expected: str | None,
                       actor: str) -> dict[str, Any] | None:
        """The last history entry if it is ``actor``'s move to ``version`` from ``expected`` (begun or done)."""
        if not actor or not history:
            return None
        last = history[-1]
        if last.get("by") != actor or last.get("to") != version or last.get("state") not in ("moving", "done"):
            return None
        if expected != last.get("from") and expected != version:
            return None
        return last

    @staticmethod
    def _recorded_move(name: str, alias: str, entry: Mapping[str, Any]) -> AliasMove:
        """The AliasMove a history entry records."""
        previous = entry.get("from")
        return AliasMove(name, alias, str(entry["to"]), previous, entry.get("rollback_alias") if previous else None,
                         str(entry.get("at") or _now()), str(entry.get("by") or ""), str(entry.get("why") or ""))

    def _finish_own_move(self, name: str, alias: str, history: list[dict[str, Any]],
                         entry: dict[str, Any]) -> AliasMove:
        """The alias already points where this caller's last move put it: mark a ``moving`` entry done; return it.

        Without this, the retry of a task that died right after moving the alias (or whose later steps failed)
        would see "someone else moved it" and fail for good.
        """
        move = self._recorded_move(name, alias, entry)
        if entry.get("state") == "done":
            self.log.info("%s@%s already points to version %s by this caller's completed %s (%s): nothing to do",
                          name, alias, move.version, entry.get("kind") or "move", move.actor)
            return move
        client = self.get_client()
        if move.previous_version is not None and move.rollback_alias:
            client.set_registered_model_alias(name, move.rollback_alias, move.previous_version)
        entry_key = f"{HISTORY_PREFIX}.{alias}.{len(history):06d}"
        client.set_registered_model_tag(name, entry_key, json.dumps({**entry, "state": "done"}))
        self.log.info("%s@%s already points to version %s by this caller's interrupted move: finished it", name,
                      alias, move.version)
        return move

    def rollback_alias(self, name: str, alias: str, rollback_alias: str | None = None, *, actor: str = "",
                       reason: str = "rollback", expected_version: str | None = None) -> AliasMove:
        """Point ``alias`` back at the version held by ``rollback_alias`` (default ``<alias>_previous``).

        The two aliases swap, with the same compare-and-swap as :meth:`move_alias`, so a rollback can itself be
        rolled back. UnknownAliasError when there is nothing to roll back to.

        **One rollback per actor.** If the alias history holds a rollback by this ``actor`` (the same
        dag_id/run_id/task_id: a retry of the task, or the task cleared and run again in the same DAG run), that
        rollback is the result: a ``done`` one is returned as it is, without swapping again (a second swap would
        put the bad version back); a ``moving`` one (the worker died during it) is finished towards the version it
        recorded, never re-read from ``rollback_alias``, which may already hold the bad version. If other moves
        followed an unfinished rollback of this actor, AliasConflictError: nothing moves.

        A rollback by a *different* actor is a new rollback: it swaps again, i.e. undoes the previous rollback.
        Pass ``expected_version`` (the version being rolled back from, e.g. the bad candidate) to make it
        conditional: the alias moves only if it still points there, so two independent rollbacks of the same bad
        version cannot undo each other; the second gets AliasConflictError and moves nothing.

        :param expected_version: roll back only if ``alias`` points to this version (None: whatever it points to).
        """
        rollback_alias = rollback_alias or default_rollback_alias(alias)
        if actor:
            history = self.alias_history(name, alias)
            for index in range(len(history) - 1, -1, -1):
                entry = history[index]
                if entry.get("kind") == "rollback" and entry.get("by") == actor \
                        and entry.get("state") in ("moving", "done"):
                    return self._resume_rollback(name, alias, entry, superseded=index < len(history) - 1)
        previous = self.require_alias_version(name, rollback_alias)
        current = self.get_alias_version(name, alias)
        expected = str(expected_version) if expected_version is not None else current
        return self.move_alias(name, alias, previous, expected_version=expected, rollback_alias=rollback_alias,
                               audit_tags={f"mlops.alias.{alias}.rolled_back_from": expected or "none"},
                               actor=actor, reason=reason, kind="rollback")

    def _resume_rollback(self, name: str, alias: str, entry: Mapping[str, Any], superseded: bool) -> AliasMove:
        """This actor's earlier rollback of ``alias``: return it if done, finish it if interrupted."""
        move = self._recorded_move(name, alias, entry)
        current = self.get_alias_version(name, alias)
        if entry.get("state") == "done":
            if current != move.version:
                self.log.warning("%s@%s was rolled back to version %s by this caller (%s) at %s and has moved since "
                                 "(now %s): not rolling back again", name, alias, move.version, move.actor,
                                 move.moved_at, current or "unset")
            else:
                self.log.info("%s@%s already rolled back to version %s by this caller (%s): not swapping again",
                              name, alias, move.version, move.actor)
            return move
        if superseded:
            raise AliasConflictError(name, alias, move.previous_version, current,
                                     f" (this caller's rollback to version {move.version} at {move.moved_at} was "
                                     "interrupted and other moves followed it; not rolling back again)")
        self.log.info("finishing this caller's interrupted rollback of %s@%s: version %s -> %s", name, alias,
                      move.previous_version or "(unset)", move.version)
        return self.move_alias(name, alias, move.version, expected_version=move.previous_version,
                               rollback_alias=entry.get("rollback_alias") or None,
                               audit_tags={f"mlops.alias.{alias}.rolled_back_from": move.previous_version or "none"},
                               actor=move.actor, reason=move.reason, kind="rollback")

    def copy_model_version(self, name: str, version: str, dst_name: str) -> Any:
        """Copy ``name`` version ``version`` to the registered model ``dst_name`` (e.g. dev -> prod), once.

        A retry finds the copy it made (tag ``mlops.copied_from``) instead of making another.
        """
        source = f"{name}/{version}"
        self.get_model_version(name, version)
        client = self.get_client()
        with contextlib.suppress(Exception):
            for existing in client.search_model_versions(f"name = '{dst_name}'"):
                if existing.tags.get("mlops.copied_from") == source:
                    self.log.info("%s already copied to %s version %s", source, dst_name, existing.version)
                    return existing
        with self.active_tracking_uri():
            copied = client.copy_model_version(f"models:/{name}/{version}", dst_name)
        client.set_model_version_tag(dst_name, copied.version, "mlops.copied_from", source)
        self.log.info("copied %s to %s version %s", source, dst_name, copied.version)
        return self.wait_until_ready(dst_name, str(copied.version))

    def registry_state(self, name: str, alias: str | None = None) -> dict[str, Any]:
        """What a registry sensor looks at: does the model exist, its latest version, the alias and its tags."""
        try:
            model = self.get_registered_model(name)
        except UnknownModelError:
            return {"exists": False}
        client = self.get_client()
        numbers = [int(v.version) for v in client.search_model_versions(f"name = '{name}'")]
        state: dict[str, Any] = {"exists": True, "latest_version": str(max(numbers)) if numbers else None}
        if alias is not None:
            version = (getattr(model, "aliases", None) or {}).get(alias)
            state["alias_version"] = str(version) if version is not None else None
            state["alias_tags"] = dict(client.get_model_version(name, str(version)).tags) if version else {}
        return state

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
