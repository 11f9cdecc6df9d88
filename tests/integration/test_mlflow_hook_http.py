"""MlflowHook over HTTP: a real ``mlflow server`` process with basic auth, retries on 5xx/timeouts, none on 4xx.

The fault injection is a small HTTP forwarder in front of the real server (MLflow cannot be told to answer 503);
every request still goes through the real MlflowClient and, when forwarded, the real server.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_mlops.core.promotion import AliasConflictError
from airflow_mlops.hooks.mlflow import MlflowHook
from tests.integration.mlflow_server import ADMIN, FaultProxy, MlflowServer, start_mlflow_server
from tests.integration.registry_support import make_versions

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def proxy(mlflow_server: MlflowServer) -> Iterator[FaultProxy]:
    fault_proxy = FaultProxy(mlflow_server.url).start()
    try:
        yield fault_proxy
    finally:
        fault_proxy.stop()


def connect(monkeypatch: pytest.MonkeyPatch, conn_id: str, url: str, login: str | None = ADMIN[0],
            password: str | None = ADMIN[1], **extra: object) -> MlflowHook:
    """An Airflow connection (environment variable) of type mlflow, and a hook on it."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(
        {"conn_type": "mlflow", "host": url, "login": login, "password": password,
         "extra": {"backoff_factor": 0.05, **extra}}))
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                 "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.setenv(name, "")
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    return MlflowHook(conn_id)


def test_basic_auth_registry_round_trip_and_cas_race(mlflow_server: MlflowServer, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    hook = connect(monkeypatch, "mlflow_http", mlflow_server.url)
    assert hook.test_connection()[0]
    versions = make_versions(hook.get_client(), tmp_path, "http_model", [{"acc": 0.7}, {"acc": 0.8}, {"acc": 0.9}])
    hook.move_alias("http_model", "champion", versions[0], expected_version=None, actor="t")
    outcomes: dict[str, object] = {}
    barrier = threading.Barrier(2)

    def race(version: str) -> None:
        contender = MlflowHook("mlflow_http")
        barrier.wait()
        try:
            outcomes[version] = contender.move_alias("http_model", "champion", version, expected_version=versions[0])
        except Exception as err:
            outcomes[version] = err

    threads = [threading.Thread(target=race, args=(v,)) for v in versions[1:]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    wins = [v for v, o in outcomes.items() if not isinstance(o, Exception)]
    losses = [o for o in outcomes.values() if isinstance(o, Exception)]
    assert len(wins) == 1 and len(losses) == 1 and isinstance(losses[0], AliasConflictError), outcomes
    assert hook.get_alias_version("http_model", "champion") == wins[0]
    assert [(h["from"], h["to"]) for h in hook.alias_history("http_model", "champion") if h["state"] == "done"] == \
        [(None, versions[0]), (versions[0], wins[0])]


def test_wrong_password_is_refused_once(mlflow_server: MlflowServer, proxy: FaultProxy,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    hook = connect(monkeypatch, "mlflow_bad", proxy.url, password="wrong")
    ok, message = hook.test_connection()
    assert not ok
    assert "401" in message or "unauthorized" in message.lower(), message
    assert sum(proxy.hits.values()) == 1, proxy.hits


def test_503_then_ok_is_retried(mlflow_server: MlflowServer, proxy: FaultProxy,
                                monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    hook = connect(monkeypatch, "mlflow_flaky", proxy.url, max_retries=3)
    proxy.faults["experiments/search"] = [503, 503]
    ok, message = hook.test_connection()
    assert ok, message
    assert proxy.hits["/api/2.0/mlflow/experiments/search"] == 3
    # MLflow's own retry switch is scoped to the hook's calls: steps started later keep MLflow's defaults.
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ
    logs = "".join(capfd.readouterr())
    assert "MLflow search_experiments failed (HTTP 503): retry 1/3" in logs
    assert "retry 2/3" in logs


def test_503_beyond_max_retries_gives_up(mlflow_server: MlflowServer, proxy: FaultProxy,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    hook = connect(monkeypatch, "mlflow_down", proxy.url, max_retries=2)
    proxy.faults["experiments/search"] = [503, 502, 500, 503]
    assert not hook.test_connection()[0]
    assert proxy.hits["/api/2.0/mlflow/experiments/search"] == 3  # first try + 2 retries


def test_timeout_is_retried(mlflow_server: MlflowServer, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    hook = connect(monkeypatch, "mlflow_slow", proxy.url, max_retries=2, timeout=1)
    proxy.faults["experiments/search"] = ["sleep:2.5"]
    ok, message = hook.test_connection()
    assert ok, message
    assert proxy.hits["/api/2.0/mlflow/experiments/search"] == 2


def test_403_is_not_retried(mlflow_server: MlflowServer, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real 403 from the auth app: a user with the default READ permission may not move an alias."""
    from mlflow.server.auth.client import AuthServiceClient

    admin = connect(monkeypatch, "mlflow_admin", mlflow_server.url)
    admin.get_client().create_registered_model("perm_model")  # also exports admin credentials for AuthServiceClient
    AuthServiceClient(mlflow_server.url).create_user("viewer", "viewer-password-123")
    hook = connect(monkeypatch, "mlflow_viewer", proxy.url, login="viewer", password="viewer-password-123",
                   max_retries=3)
    with pytest.raises(Exception, match=r"PERMISSION_DENIED|403|Permission denied"):
        hook.get_client().set_registered_model_alias("perm_model", "champion", "1")
    assert proxy.hits["/api/2.0/mlflow/registered-models/alias"] == 1


def test_429_is_not_retried_unlike_mlflow_default(mlflow_server: MlflowServer, proxy: FaultProxy,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's own client would retry 429 (its _TRANSIENT_FAILURE_RESPONSE_CODES); the hook's rule is no 4xx."""
    hook = connect(monkeypatch, "mlflow_throttled", proxy.url, max_retries=3)
    proxy.faults["experiments/search"] = [429]
    assert not hook.test_connection()[0]
    assert proxy.hits["/api/2.0/mlflow/experiments/search"] == 1


def test_secrets_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk.execution_time.secrets_masker import _secrets_masker

    hook = connect(monkeypatch, "mlflow_masked", "http://127.0.0.1:1", login="u", password="s3cret-pw",
                   databricks_host="https://dbc.example.com", databricks_token="dapi-secret-token")
    env = hook.process_env()
    assert env["DATABRICKS_TOKEN"] == "dapi-secret-token"
    masker = _secrets_masker()
    assert "s3cret-pw" not in str(masker.redact("password s3cret-pw token dapi-secret-token"))
    assert "dapi-secret-token" not in str(masker.redact("token dapi-secret-token"))
