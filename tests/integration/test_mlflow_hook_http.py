"""MlflowHook over HTTP: a real ``mlflow server`` process with basic auth, retries on 5xx/timeouts, none on 4xx.

The fault injection is a small HTTP forwarder in front of the real server (MLflow cannot be told to answer 503);
every request still goes through the real MlflowClient and, when forwarded, the real server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
import uuid
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


@contextlib.contextmanager
def _as_admin() -> Iterator[None]:
    """Admin credentials in the env for MLflow's AuthServiceClient (it reads them there; the hook never leaves any)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN[0])
        patch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN[1])
        yield


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
    admin.get_client().create_registered_model("perm_model")
    with _as_admin():
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


def test_two_connections_never_send_each_others_credentials(mlflow_server: MlflowServer,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Two hooks with different basic-auth users, in two threads of one process (a triggerer does this): each
    thread writes only to a model its own user created (others have the server's default READ). A call sent
    with the other user's credentials would be a 403. Afterwards no credentials are left in os.environ."""
    from mlflow.server.auth.client import AuthServiceClient

    suffix = uuid.uuid4().hex[:6]
    users = {f"alice{suffix}": "alice-password-123", f"bob{suffix}": "bob-password-123"}
    with _as_admin():
        for user, password in users.items():
            AuthServiceClient(mlflow_server.url).create_user(user, password)
    hooks = {user: connect(monkeypatch, f"mlflow_{user}", mlflow_server.url, login=user, password=password,
                           max_retries=0) for user, password in users.items()}
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for user, hook in hooks.items():
        hook.get_client().create_registered_model(f"{user}_model")  # the creator may manage it; nobody else
    alice, bob = users
    with pytest.raises(Exception, match=r"PERMISSION_DENIED|403|Permission denied"):  # the premise: others may not
        hooks[bob].get_client().set_registered_model_tag(f"{alice}_model", "written_by", bob)
    barrier = threading.Barrier(2)
    failures: list[str] = []

    def write(user: str) -> None:
        client = MlflowHook(f"mlflow_{user}").get_client()  # a fresh hook per thread, as a trigger makes one
        barrier.wait()
        for i in range(40):
            try:
                client.set_registered_model_tag(f"{user}_model", "written_by", f"{user}-{i}")
                client.get_registered_model(f"{user}_model")
            except Exception as err:
                failures.append(f"{user} call {i}: {err}")

    threads = [threading.Thread(target=write, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert not failures, failures[:3]
    for user, hook in hooks.items():
        assert hook.get_client().get_registered_model(f"{user}_model").tags["written_by"] == f"{user}-39"
    assert not {k for k in os.environ if k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                                                "MLFLOW_TRACKING_TOKEN")}


# ---------------------------------------------------------------------------------------- the registry trigger

def _first_event(trigger) -> dict[str, object]:
    async def first() -> dict[str, object]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("the trigger ended without an event")

    return asyncio.run(first())


def test_trigger_fails_fast_on_auth_and_endpoint_errors(mlflow_server: MlflowServer, proxy: FaultProxy,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A 401 (wrong password) or a 404 that is not an unknown model (a tracking URI that is no MLflow API) ends
    the wait at once with the reason, instead of polling until a deadline days away."""
    from airflow.sdk.exceptions import AirflowFailException

    from airflow_mlops.sensors.mlflow import MlflowRegistrySensor
    from airflow_mlops.triggers.mlflow import MlflowRegistryTrigger

    wait = {"model_name": "http_model", "alias": "champion", "newer_than": None, "required_tags": {}}
    connect(monkeypatch, "mlflow_wrong_pw", proxy.url, password="wrong")
    started = time.monotonic()
    event = _first_event(MlflowRegistryTrigger(wait, "mlflow_wrong_pw", 0.05, time.time() + 86400))
    assert event["status"] == "error" and event["polls"] == 1, event
    assert "HTTP 401: the connection's credentials were refused" in str(event["error"])
    assert time.monotonic() - started < 30
    assert sum(proxy.hits.values()) == 1, proxy.hits  # and the hook did not retry it either

    connect(monkeypatch, "mlflow_wrong_path", f"{proxy.url}/not-mlflow")
    event = _first_event(MlflowRegistryTrigger(wait, "mlflow_wrong_path", 0.05, time.time() + 86400))
    assert event["status"] == "error" and "HTTP 404: no such endpoint" in str(event["error"]), event

    sensor = MlflowRegistrySensor(task_id="wait", model_name="http_model", alias="champion")
    with pytest.raises(AirflowFailException, match=r"registry error while waiting for http_model@champion on a "
                                                   r"version: HTTP 401"):
        sensor.execute_complete({}, event={**event, "error": "HTTP 401: refused"})  # type: ignore[arg-type]


def test_trigger_keeps_polling_through_5xx_and_429(mlflow_server: MlflowServer, proxy: FaultProxy,
                                                  tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_mlops.triggers.mlflow import MlflowRegistryTrigger

    admin = connect(monkeypatch, "mlflow_poll_admin", mlflow_server.url)
    name = f"poll_model_{uuid.uuid4().hex[:6]}"
    make_versions(admin.get_client(), tmp_path, name, [{"acc": 0.5}])
    connect(monkeypatch, "mlflow_poll", proxy.url, max_retries=0)
    proxy.faults["registered-models/get"] = [503, 429, 502]
    wait = {"model_name": name, "alias": None, "newer_than": None, "required_tags": {}}
    event = _first_event(MlflowRegistryTrigger(wait, "mlflow_poll", 0.05, time.time() + 60))
    assert (event["status"], event["polls"], event["seen"]) == ("met", 4, "latest version v1"), event

    # An absent model is "not yet" by default (its first version may still come) and an error with "fail".
    missing = {**wait, "model_name": f"{name}_typo"}
    event = _first_event(MlflowRegistryTrigger(missing, "mlflow_poll", 0.05, time.time() + 0.3))
    assert event["status"] == "timeout" and event["seen"] == f"model {name}_typo does not exist yet", event
    event = _first_event(MlflowRegistryTrigger(missing, "mlflow_poll", 0.05, time.time() + 60, missing_model="fail"))
    assert event["status"] == "error" and event["polls"] == 1 and "does not exist" in str(event["error"]), event
