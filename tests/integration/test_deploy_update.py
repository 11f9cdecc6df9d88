"""Request and error shapes of the MWAA calls, checked against the service model with botocore's Stubber.

Only shapes and our own guards live here: the wait loop's timeout, refusals before any call, and how the smoke run
reads InvokeRestApi's modelled errors (RestApiClientException/ServerException fields). What MWAA *does* with an
update (installs at object versions, UPDATE_FAILED with LastUpdate.Error, rollback) is tested against the stateful
stand-in: tests/integration/test_deploy_e2e.py (deploy.yml end to end) and tests/mwaa/test_standin.py.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_mlops.deploy import DeployError
from airflow_mlops.deploy.update import Artifact, smoke_run, update_environment

BUCKET = "mwaa-env-bucket"
ENV = "mlops-prod"
T0 = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
T1 = dt.datetime(2026, 11, 25, tzinfo=dt.timezone.utc)


@pytest.fixture
def s3(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    client = boto3.client("s3", region_name="us-east-1", endpoint_url=moto_url)
    client.create_bucket(Bucket=BUCKET)
    client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    yield client
    for page in client.get_paginator("list_object_versions").paginate(Bucket=BUCKET):
        for v in page.get("Versions", []) + page.get("DeleteMarkers", []):
            client.delete_object(Bucket=BUCKET, Key=v["Key"], VersionId=v["VersionId"])
    client.delete_bucket(Bucket=BUCKET)


@pytest.fixture
def mwaa() -> Iterator[Any]:
    import boto3
    from botocore.stub import Stubber

    client = boto3.client("mwaa", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stub:
        client.stub = stub  # type: ignore[attr-defined]
        yield client
        stub.assert_no_pending_responses()


def _env(status: str, *, req: str | None = None, plugins: str | None = None, last: dict[str, Any] | None = None):
    env: dict[str, Any] = {
        "Name": ENV,
        "Status": status,
        "AirflowVersion": "3.3.1",
        "SourceBucketArn": f"arn:aws:s3:::{BUCKET}",
        "DagS3Path": "dags",
        "LastUpdate": last or {"Status": "SUCCESS", "CreatedAt": T0},
    }
    if req:
        env.update(RequirementsS3Path="requirements.txt", RequirementsS3ObjectVersion=req)
    if plugins:
        env.update(PluginsS3Path="plugins.zip", PluginsS3ObjectVersion=plugins)
    return {"Environment": env}


def _artifacts(tmp_path: Path, req: str = "apache-airflow-providers-amazon==9.39.0\n") -> list[Artifact]:
    (tmp_path / "requirements.txt").write_text(req)
    (tmp_path / "plugins.zip").write_bytes(b"PK\x05\x06" + b"\x00" * 18)
    return [Artifact("requirements", tmp_path / "requirements.txt", "requirements.txt"),
            Artifact("plugins", tmp_path / "plugins.zip", "plugins.zip")]


class FakeClock:
    """Deterministic time for the wait loop: sleep advances it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s

    def __call__(self) -> float:
        return self.now


def test_wait_times_out(mwaa: Any, s3: Any, tmp_path: Path) -> None:
    arts = _artifacts(tmp_path)
    stub = mwaa.stub
    stub.add_response("get_environment", _env("AVAILABLE"), {"Name": ENV})
    stub.add_response("update_environment", {"Arn": "arn:aws:airflow:us-east-1:123456789012:environment/x"})
    for _ in range(3):
        stub.add_response("get_environment", _env("UPDATING", last={"Status": "PENDING", "CreatedAt": T1}))
    clock = FakeClock()
    with pytest.raises(DeployError, match="still UPDATING after 60s"):
        update_environment(mwaa, s3, name=ENV, bucket=BUCKET, artifacts=arts, poll_s=30, timeout_s=60,
                           sleep=clock.sleep, clock=clock, log=lambda _: None)


def test_refuses_busy_environment_and_wrong_bucket(mwaa: Any, s3: Any, tmp_path: Path) -> None:
    arts = _artifacts(tmp_path)
    mwaa.stub.add_response("get_environment", _env("UPDATING"), {"Name": ENV})
    with pytest.raises(DeployError, match="is UPDATING; wait until it is AVAILABLE"):
        update_environment(mwaa, s3, name=ENV, bucket=BUCKET, artifacts=arts, log=lambda _: None)
    mwaa.stub.add_response("get_environment", _env("AVAILABLE"), {"Name": ENV})
    with pytest.raises(DeployError, match="not environment mlops-prod's source bucket"):
        update_environment(mwaa, s3, name=ENV, bucket="other-bucket", artifacts=arts, log=lambda _: None)


def test_unversioned_bucket_is_refused(mwaa: Any, s3: Any, tmp_path: Path) -> None:
    s3.create_bucket(Bucket="plain-bucket")
    try:
        env = _env("AVAILABLE")
        env["Environment"]["SourceBucketArn"] = "arn:aws:s3:::plain-bucket"
        mwaa.stub.add_response("get_environment", env, {"Name": ENV})
        with pytest.raises(DeployError, match="versioning is off"):
            update_environment(mwaa, s3, name=ENV, bucket="plain-bucket", artifacts=_artifacts(tmp_path),
                               log=lambda _: None)
    finally:
        for obj in s3.list_objects_v2(Bucket="plain-bucket").get("Contents", []):
            s3.delete_object(Bucket="plain-bucket", Key=obj["Key"])
        s3.delete_bucket(Bucket="plain-bucket")


def _rest_error(stub: Any, status: int, response: dict[str, Any], *, server: bool = False) -> None:
    """What the real InvokeRestApi does when Airflow answers 4xx/5xx: a modeled ClientError, not a response."""
    code = "RestApiServerException" if server else "RestApiClientException"
    stub.add_client_error("invoke_rest_api", service_error_code=code, service_message=f"Airflow answered {status}",
                          http_status_code=400, modeled_fields={"RestApiStatusCode": status,
                                                                "RestApiResponse": response})


def test_smoke_run_waits_for_the_dag_to_be_parsed(mwaa: Any) -> None:
    stub = mwaa.stub
    # Right after an update the DAG processor has not parsed the smoke DAG yet: unpausing it is a 404.
    for _ in range(2):
        _rest_error(stub, 404, {"title": "DAG not found", "detail": "The DAG with dag_id: `mlops_smoke` was not found"})
    stub.add_response("invoke_rest_api", {"RestApiStatusCode": 200, "RestApiResponse": {"is_paused": False}},
                      {"Name": ENV, "Method": "PATCH", "Path": "/dags/mlops_smoke", "Body": {"is_paused": False}})
    stub.add_response("invoke_rest_api", {"RestApiStatusCode": 200, "RestApiResponse": {"state": "queued"}})
    stub.add_response("invoke_rest_api", {"RestApiStatusCode": 200, "RestApiResponse": {"state": "success"}})
    clock, lines = FakeClock(), list[str]()
    assert smoke_run(mwaa, name=ENV, dag_id="mlops_smoke", run_id="smoke-1", poll_s=15, timeout_s=60,
                     sleep=clock.sleep, clock=clock, log=lines.append) == "success"
    assert clock.sleeps == [15, 15]
    assert sum("not parsed yet (HTTP 404)" in line for line in lines) == 2


def test_smoke_run_gives_up_on_a_dag_that_never_appears(mwaa: Any) -> None:
    for _ in range(3):  # at 0 s, 30 s and 60 s (the timeout)
        _rest_error(mwaa.stub, 404, {"title": "DAG not found"})
    clock = FakeClock()
    with pytest.raises(DeployError, match=r"DAG nope on mlops-prod: still not found \(HTTP 404\) after 60s"):
        smoke_run(mwaa, name=ENV, dag_id="nope", run_id="smoke-1", poll_s=30, timeout_s=60, sleep=clock.sleep,
                  clock=clock, log=lambda _: None)
    assert clock.sleeps == [30, 30]


def test_smoke_run_reports_a_server_error_clearly(mwaa: Any) -> None:
    stub = mwaa.stub
    stub.add_response("invoke_rest_api", {"RestApiStatusCode": 200, "RestApiResponse": {}})
    _rest_error(stub, 503, {"title": "Service Unavailable", "detail": "scheduler is restarting"}, server=True)
    clock = FakeClock()
    with pytest.raises(DeployError) as info:
        smoke_run(mwaa, name=ENV, dag_id="mlops_smoke", run_id="smoke-2", sleep=clock.sleep, clock=clock,
                  log=lambda _: None)
    assert str(info.value) == ("smoke: DAG mlops_smoke on mlops-prod: POST /dags/mlops_smoke/dagRuns -> HTTP 503 "
                               "(RestApiServerException): scheduler is restarting")
    assert clock.sleeps == []  # not a "not parsed yet": no retry


def test_smoke_run_reports_mwaa_refusals_and_other_client_errors(mwaa: Any) -> None:
    stub = mwaa.stub
    stub.add_client_error("invoke_rest_api", service_error_code="AccessDeniedException",
                          service_message="not authorized to perform: airflow:InvokeRestApi", http_status_code=403)
    with pytest.raises(DeployError, match=r"DAG mlops_smoke on mlops-prod: PATCH /dags/mlops_smoke refused by MWAA "
                                          r"\(AccessDeniedException\): not authorized"):
        smoke_run(mwaa, name=ENV, dag_id="mlops_smoke", run_id="smoke-3", sleep=lambda _: None, log=lambda _: None)
    _rest_error(stub, 403, {"title": "Forbidden", "detail": "role User may not edit DAG mlops_smoke"})
    with pytest.raises(DeployError, match=r"HTTP 403 \(RestApiClientException\): role User may not edit"):
        smoke_run(mwaa, name=ENV, dag_id="mlops_smoke", run_id="smoke-3", sleep=lambda _: None, log=lambda _: None)


def test_smoke_run_failure_and_path_limit(mwaa: Any) -> None:
    stub = mwaa.stub
    stub.add_response("invoke_rest_api", {"RestApiStatusCode": 200, "RestApiResponse": {}})
    stub.add_response("invoke_rest_api", {"RestApiStatusCode": 200, "RestApiResponse": {}})
    stub.add_response("invoke_rest_api", {"RestApiStatusCode": 200, "RestApiResponse": {"state": "failed"}})
    with pytest.raises(DeployError, match="failed"):
        smoke_run(mwaa, name=ENV, dag_id="mlops_smoke", run_id="smoke-2", sleep=lambda _: None, log=lambda _: None)
    with pytest.raises(DeployError, match="64-character"):
        smoke_run(mwaa, name=ENV, dag_id="d" * 40, run_id="r" * 20, log=lambda _: None)


def test_cli_update_gives_the_smoke_run_its_timeout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only the CLI's argument wiring: ``update_environment`` and ``smoke_run`` themselves run against the MWAA
    stand-in (test_deploy_e2e.py) and, for error shapes, botocore's Stubber above. Here they and the boto clients are
    replaced because the point is which timeout reaches which call; the bundle is a real (empty) one on disk."""
    import json

    from airflow_mlops.deploy import cli, update

    (tmp_path / "manifest.json").write_text(json.dumps(
        {"constraints_name": "c.txt", "hashes": {}, "requirements": [], "airflow_version": "3.3.1"}))
    calls: dict[str, dict[str, Any]] = {}
    monkeypatch.setattr(cli, "_client", lambda service: service)
    monkeypatch.setattr(update, "update_environment", lambda *a, **kw: calls.setdefault("update", kw))
    monkeypatch.setattr(update, "smoke_run", lambda *a, **kw: calls.setdefault("smoke", kw))
    assert cli.main(["deploy", "update", "--bundle", str(tmp_path), "--environment", ENV, "--bucket", BUCKET,
                     "--timeout", "900", "--poll", "10", "--smoke-dag", "mlops_smoke", "--smoke-run-id",
                     "smoke-9"]) == 0
    assert calls["update"]["airflow_version"] == "3.3.1" and calls["update"]["artifacts"][0].kind == "requirements"
    assert calls["update"]["timeout_s"] == 900
    assert calls["smoke"] == {"name": ENV, "dag_id": "mlops_smoke", "run_id": "smoke-9", "poll_s": 10,
                              "timeout_s": 900, "log": cli._log}
