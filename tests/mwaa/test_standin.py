"""The MWAA stand-in, driven by the real boto3 ``mwaa`` client over HTTP against a real moto S3 server.

Nothing is mocked here: MWAA cannot run on this machine, so ``tests/mwaa/standin.py`` models it (see its docstring
for what it models and what not); the requests and answers go through botocore's serializers and parsers, and pip's
real resolver decides whether a requirement set installs. The fast tests resolve without ``apache-airflow`` (the
stand-in's ``with_airflow=False``: tiny ``six`` sets, about half a second each); the one test that resolves on top
of Airflow 3.3.1, as MWAA does, takes about 22 s and is marked slow.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.mwaa.conftest import Bucket, wait_status, zip_bytes
from tests.mwaa.standin import INSTALL_ERROR_CODE, MwaaStandIn, dag_bag_files, parse_dag_file

ROLE = "arn:aws:iam::123456789012:role/mwaa-exec"
NETWORK = {"SubnetIds": ["subnet-a", "subnet-b"], "SecurityGroupIds": ["sg-1"]}
CONSTRAINT_LINE = '--constraint "/usr/local/airflow/dags/c.txt"\n'
GOOD_REQS = CONSTRAINT_LINE + "six==1.16.0\n"
DONE = {"AVAILABLE", "CREATE_FAILED", "UPDATE_FAILED"}
SMOKE_DAG = '''from airflow.sdk import DAG

with DAG(dag_id="smoke", schedule=None, tags=["smoke"], description="deploy smoke test"):
    pass
'''


def _create(mwaa: Any, bucket: Bucket, name: str = "env1", **extra: Any) -> dict[str, Any]:
    mwaa.create_environment(Name=name, ExecutionRoleArn=ROLE, SourceBucketArn=bucket.arn, DagS3Path="dags",
                            NetworkConfiguration=NETWORK, **extra)
    seen, env = wait_status(mwaa, name, DONE)
    assert seen[0] == "CREATING"
    return env


def _good_env(mwaa: Any, bucket: Bucket, name: str = "env1") -> tuple[dict[str, Any], str]:
    bucket.put("dags/c.txt", "six==1.16.0\n")
    version = bucket.put("requirements.txt", GOOD_REQS)
    env = _create(mwaa, bucket, name, RequirementsS3Path="requirements.txt", RequirementsS3ObjectVersion=version)
    assert env["Status"] == "AVAILABLE", env.get("LastUpdate")
    return env, version


def _rest(mwaa: Any, method: str, path: str, body: dict[str, Any] | None = None, name: str = "env1") -> Any:
    kwargs: dict[str, Any] = {"Name": name, "Method": method, "Path": path}
    if body is not None:
        kwargs["Body"] = body
    return mwaa.invoke_rest_api(**kwargs)


def _rest_error(mwaa: Any, method: str, path: str, body: dict[str, Any] | None = None) -> ClientError:
    with pytest.raises(ClientError) as info:
        _rest(mwaa, method, path, body)
    return info.value


# ------------------------------------------------------------------------------------------- lifecycle


def test_create_walks_creating_to_available_and_installs_the_requested_versions(
    standin: MwaaStandIn, mwaa: Any, bucket: Bucket
) -> None:
    env, version = _good_env(mwaa, bucket)
    assert env["RequirementsS3ObjectVersion"] == version and env["AirflowVersion"] == "3.3.1"
    assert env["LastUpdate"]["Status"] == "SUCCESS" and env["LastUpdate"]["CreatedAt"] == env["CreatedAt"]
    assert env["SourceBucketArn"] == bucket.arn and env["NetworkConfiguration"] == NETWORK
    (install,) = standin.installs("env1")
    assert install.ok and install.trigger == "create"
    assert install.artifacts == {"requirements": ("requirements.txt", version)}
    assert install.dags_keys == ("dags/c.txt",)
    assert install.referenced.keys() == {"/usr/local/airflow/dags/c.txt"}
    assert install.resolved == {"six": "1.16.0"}, "pip's resolver ran and picked the pinned version"
    assert install.localized_requirements == '--constraint "<layout>/dags/c.txt"\nsix==1.16.0\n'
    assert mwaa.list_environments()["Environments"] == ["env1"]
    assert [op for op, _ in standin.calls][:2] == ["CreateEnvironment", "GetEnvironment"]
    assert standin.calls[0][1]["RequirementsS3ObjectVersion"] == version


def test_constraint_missing_from_the_dags_folder_fails_the_update_and_rolls_back(
    standin: MwaaStandIn, mwaa: Any, bucket: Bucket
) -> None:
    _, good = _good_env(mwaa, bucket)
    bad = bucket.put("requirements.txt", '--constraint "/usr/local/airflow/dags/c2.txt"\nsix==1.16.0\n')
    before = mwaa.get_environment(Name="env1")["Environment"]["LastUpdate"]["CreatedAt"]
    mwaa.update_environment(Name="env1", RequirementsS3Path="requirements.txt", RequirementsS3ObjectVersion=bad)
    during = mwaa.get_environment(Name="env1")["Environment"]
    assert during["Status"] == "UPDATING" and during["LastUpdate"]["Status"] == "PENDING"
    assert during["RequirementsS3ObjectVersion"] == bad and during["LastUpdate"]["CreatedAt"] > before
    seen, env = wait_status(mwaa, "env1", DONE)
    assert seen[0] == "UPDATING" and seen[-2:] == ["ROLLING_BACK", "UPDATE_FAILED"]
    assert env["LastUpdate"]["Status"] == "FAILED"
    error = env["LastUpdate"]["Error"]
    assert error["ErrorCode"] == INSTALL_ERROR_CODE
    assert "/usr/local/airflow/dags/c2.txt" in error["ErrorMessage"]
    assert "Could not open requirements file" in error["ErrorMessage"]
    assert env["RequirementsS3ObjectVersion"] == good, "MWAA rolled back to the previous version"
    assert standin.installs("env1")[-1].stage == "requirements"
    # UPDATE_FAILED is ready to use and to update again; the good set comes back.
    mwaa.update_environment(Name="env1", RequirementsS3Path="requirements.txt", RequirementsS3ObjectVersion=good)
    _, env = wait_status(mwaa, "env1", DONE)
    assert env["Status"] == "AVAILABLE" and env["LastUpdate"]["Status"] == "SUCCESS"
    assert "Error" not in env["LastUpdate"]


def test_a_pin_conflicting_with_the_constraint_fails_with_pips_conflict(
    standin: MwaaStandIn, mwaa: Any, bucket: Bucket
) -> None:
    _, good = _good_env(mwaa, bucket)
    bad = bucket.put("requirements.txt", CONSTRAINT_LINE + "six==1.17.0\n")
    mwaa.update_environment(Name="env1", RequirementsS3Path="requirements.txt", RequirementsS3ObjectVersion=bad)
    _, env = wait_status(mwaa, "env1", DONE)
    assert env["Status"] == "UPDATE_FAILED"
    message = env["LastUpdate"]["Error"]["ErrorMessage"]
    assert "Cannot install six==1.17.0" in message and "conflicting dependencies" in message
    assert "WARNING:" not in message
    assert env["RequirementsS3ObjectVersion"] == good
    install = standin.installs("env1")[-1]
    assert install.stage == "resolve" and install.pip_seconds is not None


def test_update_is_refused_while_updating(standin: MwaaStandIn, mwaa: Any, bucket: Bucket) -> None:
    _, good = _good_env(mwaa, bucket)
    mwaa.update_environment(Name="env1", MaxWorkers=5, WorkerReplacementStrategy="GRACEFUL")
    with pytest.raises(ClientError) as info:
        mwaa.update_environment(Name="env1", RequirementsS3Path="requirements.txt", RequirementsS3ObjectVersion=good)
    assert info.value.response["Error"]["Code"] == "ValidationException"
    assert "UPDATING" in info.value.response["Error"]["Message"]
    _, env = wait_status(mwaa, "env1", DONE)
    assert env["Status"] == "AVAILABLE" and env["MaxWorkers"] == 5
    assert env["LastUpdate"]["WorkerReplacementStrategy"] == "GRACEFUL"
    assert env["RequirementsS3ObjectVersion"] == good, "fields not given keep their values"


def test_airflow_version_must_be_supported_and_changes_minor_versions_in_place(
    make_standin: Callable[..., MwaaStandIn], bucket: Bucket
) -> None:
    standin = make_standin(supported_versions=("2.10.3", "3.2.0", "3.3.1"))
    mwaa = standin.client()
    env = _create(mwaa, bucket, AirflowVersion="3.2.0")
    assert env["Status"] == "AVAILABLE" and env["AirflowVersion"] == "3.2.0"
    for version, reason in (("3.4.0", "not supported"), ("2.10.3", "only between 2.11.x and 3.x")):
        with pytest.raises(ClientError) as info:
            mwaa.update_environment(Name="env1", AirflowVersion=version)
        assert info.value.response["Error"]["Code"] == "ValidationException"
        assert reason in info.value.response["Error"]["Message"]
    # A failed upgrade rolls the version back too.
    missing = bucket.put("requirements.txt", "six==1.16.0\n")
    bucket.s3.delete_object(Bucket=bucket.name, Key="requirements.txt", VersionId=missing)
    mwaa.update_environment(Name="env1", AirflowVersion="3.3.1", RequirementsS3Path="requirements.txt",
                            RequirementsS3ObjectVersion=missing)
    _, env = wait_status(mwaa, "env1", DONE)
    assert env["Status"] == "UPDATE_FAILED" and env["AirflowVersion"] == "3.2.0"
    assert "RequirementsS3Path" not in env
    assert missing in env["LastUpdate"]["Error"]["ErrorMessage"]
    mwaa.update_environment(Name="env1", AirflowVersion="3.3.1")
    _, env = wait_status(mwaa, "env1", DONE)
    assert env["Status"] == "AVAILABLE" and env["AirflowVersion"] == "3.3.1"
    # Minor versions change in place both ways (MWAA's "Changing the Apache Airflow version").
    mwaa.update_environment(Name="env1", AirflowVersion="3.2.0")
    _, env = wait_status(mwaa, "env1", DONE)
    assert env["Status"] == "AVAILABLE" and env["AirflowVersion"] == "3.2.0"


def test_a_path_without_a_version_means_the_latest_version_at_that_moment(
    standin: MwaaStandIn, mwaa: Any, bucket: Bucket
) -> None:
    _good_env(mwaa, bucket)
    latest = bucket.put("requirements.txt", GOOD_REQS + "# touched\n")
    mwaa.update_environment(Name="env1", RequirementsS3Path="requirements.txt")
    bucket.put("requirements.txt", CONSTRAINT_LINE + "six==1.17.0\n")  # after the call: not what installs
    _, env = wait_status(mwaa, "env1", DONE)
    assert env["Status"] == "AVAILABLE" and env["RequirementsS3ObjectVersion"] == latest
    assert standin.installs("env1")[-1].artifacts["requirements"] == ("requirements.txt", latest)


def test_bad_plugins_zip_and_startup_script_fail_the_install(standin: MwaaStandIn, mwaa: Any, bucket: Bucket) -> None:
    _good_env(mwaa, bucket)
    bad_zip = bucket.put("plugins.zip", b"not a zip")
    mwaa.update_environment(Name="env1", PluginsS3Path="plugins.zip", PluginsS3ObjectVersion=bad_zip)
    _, env = wait_status(mwaa, "env1", DONE)
    assert env["Status"] == "UPDATE_FAILED" and "PluginsS3Path" not in env
    assert "not a valid zip" in env["LastUpdate"]["Error"]["ErrorMessage"]
    script = bucket.put("startup.sh", "#!/bin/bash\nif true; then\n  echo missing fi\n")
    mwaa.update_environment(Name="env1", StartupScriptS3Path="startup.sh", StartupScriptS3ObjectVersion=script)
    _, env = wait_status(mwaa, "env1", DONE)
    assert env["Status"] == "UPDATE_FAILED"
    assert "syntax error" in env["LastUpdate"]["Error"]["ErrorMessage"]
    assert [i.stage for i in standin.installs("env1")] == [None, "plugins", "startup_script"]


def test_requirements_may_reference_plugins_zip_content(standin: MwaaStandIn, mwaa: Any, bucket: Bucket) -> None:
    plugins = bucket.put("plugins.zip", zip_bytes({"c.txt": "six==1.16.0\n", "nested.txt": "six==1.16.0\n"}))
    reqs = bucket.put("requirements.txt", "-c /usr/local/airflow/plugins/c.txt\n-r /usr/local/airflow/plugins/"
                                          "nested.txt\n--find-links /usr/local/airflow/plugins\nsix\n")
    env = _create(mwaa, bucket, PluginsS3Path="plugins.zip", PluginsS3ObjectVersion=plugins,
                  RequirementsS3Path="requirements.txt", RequirementsS3ObjectVersion=reqs)
    assert env["Status"] == "AVAILABLE", env.get("LastUpdate")
    install = standin.installs("env1")[-1]
    assert set(install.referenced) == {"/usr/local/airflow/plugins/c.txt", "/usr/local/airflow/plugins/nested.txt",
                                       "/usr/local/airflow/plugins"}
    assert install.resolved == {"six": "1.16.0"}


def test_a_host_path_in_requirements_does_not_exist_on_a_worker(
    standin: MwaaStandIn, mwaa: Any, bucket: Bucket, tmp_path: Any
) -> None:
    local = tmp_path / "c.txt"
    local.write_text("six==1.16.0\n")  # exists here, not on MWAA
    reqs = bucket.put("requirements.txt", f"-c {local}\nsix\n")
    env = _create(mwaa, bucket, RequirementsS3Path="requirements.txt", RequirementsS3ObjectVersion=reqs)
    assert env["Status"] == "CREATE_FAILED"
    assert str(local) in env["LastUpdate"]["Error"]["ErrorMessage"]
    with pytest.raises(ClientError) as info:
        mwaa.update_environment(Name="env1", MaxWorkers=2)
    assert "CREATE_FAILED" in info.value.response["Error"]["Message"]


def test_the_same_resolver_input_is_resolved_once(standin: MwaaStandIn, mwaa: Any, bucket: Bucket) -> None:
    _good_env(mwaa, bucket)
    bucket.put("dags/unrelated.py", "# not referenced by requirements.txt\n")
    worker = standin.start_worker("env1")
    assert worker.ok and worker.memo_hit, "same requirements and referenced files: pip's verdict is reused"
    bucket.put("dags/c.txt", "six==1.16.0\n# edited\n")
    assert not standin.start_worker("env1").memo_hit, "a referenced file changed: pip runs again"


def test_a_worker_started_later_drifts_with_a_dags_referenced_constraint(
    standin: MwaaStandIn, mwaa: Any, bucket: Bucket
) -> None:
    """requirements.txt takes its pins from dags/c.txt; dags/ syncs on its own, so a worker that starts after a
    DAG sync installs other packages than the environment was updated with, or none at all."""
    bucket.put("dags/c.txt", "six==1.16.0\n")
    reqs = bucket.put("requirements.txt", CONSTRAINT_LINE + "six\n")
    _create(mwaa, bucket, RequirementsS3Path="requirements.txt", RequirementsS3ObjectVersion=reqs)
    assert standin.installs("env1")[-1].resolved == {"six": "1.16.0"}

    bucket.put("dags/c.txt", "six==1.17.0\n")  # a DAG sync, no MWAA update
    worker = standin.start_worker("env1")
    assert worker.ok and worker.resolved == {"six": "1.17.0"}, "same requirements version, other packages"
    assert worker.artifacts == standin.installs("env1")[0].artifacts

    bucket.delete("dags/c.txt")
    broken = standin.start_worker("env1")
    assert not broken.ok and broken.stage == "requirements"
    assert "/usr/local/airflow/dags/c.txt" in (broken.error or "")
    assert mwaa.get_environment(Name="env1")["Environment"]["Status"] == "AVAILABLE", "MWAA reports nothing"


def test_a_worker_started_later_is_consistent_when_requirements_reference_only_plugins_zip(
    standin: MwaaStandIn, mwaa: Any, bucket: Bucket
) -> None:
    plugins = bucket.put("plugins.zip", zip_bytes({"c.txt": "six==1.16.0\n"}))
    reqs = bucket.put("requirements.txt", '--constraint "/usr/local/airflow/plugins/c.txt"\nsix\n')
    bucket.put("dags/c.txt", "six==1.16.0\n")
    _create(mwaa, bucket, PluginsS3Path="plugins.zip", PluginsS3ObjectVersion=plugins,
            RequirementsS3Path="requirements.txt", RequirementsS3ObjectVersion=reqs)
    first = standin.installs("env1")[-1]
    bucket.put("dags/c.txt", "six==1.17.0\n")
    bucket.put("plugins.zip", zip_bytes({"c.txt": "six==1.17.0\n"}))  # a new version, not deployed
    worker = standin.start_worker("env1")
    assert worker.ok and worker.resolved == first.resolved == {"six": "1.16.0"}
    assert worker.referenced == first.referenced
    assert worker.dags_keys == first.dags_keys


# ------------------------------------------------------------------------------------------- API surface


def test_unknown_environments_and_model_violations(standin: MwaaStandIn, mwaa: Any, bucket: Bucket) -> None:
    for call in (
        lambda: mwaa.get_environment(Name="nope"),
        lambda: mwaa.update_environment(Name="nope", MaxWorkers=2),
        lambda: mwaa.delete_environment(Name="nope"),
        lambda: mwaa.invoke_rest_api(Name="nope", Method="GET", Path="/dags"),
    ):
        with pytest.raises(ClientError) as info:
            call()
        assert info.value.response["Error"]["Code"] == "ResourceNotFoundException"
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    _good_env(mwaa, bucket)
    with pytest.raises(ClientError) as info:
        mwaa.invoke_rest_api(Name="env1", Method="GET", Path="/dags/" + "x" * 64)
    assert "64" in info.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as info:
        _create(mwaa, bucket)
    assert "already exists" in info.value.response["Error"]["Message"]
    bucket.s3.create_bucket(Bucket=bucket.name + "-plain")
    try:
        with pytest.raises(ClientError) as info:
            mwaa.create_environment(Name="env2", ExecutionRoleArn=ROLE, SourceBucketArn=bucket.arn + "-plain",
                                    DagS3Path="dags", NetworkConfiguration=NETWORK)
        assert "versioning" in info.value.response["Error"]["Message"]
    finally:
        bucket.s3.delete_bucket(Bucket=bucket.name + "-plain")
    with pytest.raises(ClientError) as info:
        mwaa.update_environment(Name="env1", PluginsS3ObjectVersion="abc")
    assert "PluginsS3Path" in info.value.response["Error"]["Message"]


def test_delete_and_list_pagination(standin: MwaaStandIn, mwaa: Any, bucket: Bucket) -> None:
    for name in ("a1", "a2", "a3"):
        mwaa.create_environment(Name=name, ExecutionRoleArn=ROLE, SourceBucketArn=bucket.arn, DagS3Path="dags",
                                NetworkConfiguration=NETWORK)
    first = mwaa.list_environments(MaxResults=2)
    assert first["Environments"] == ["a1", "a2"]
    assert mwaa.list_environments(NextToken=first["NextToken"])["Environments"] == ["a3"]
    with pytest.raises(ClientError):
        mwaa.delete_environment(Name="a1")  # still CREATING
    wait_status(mwaa, "a1", DONE)
    mwaa.delete_environment(Name="a1")
    assert mwaa.get_environment(Name="a1")["Environment"]["Status"] == "DELETING"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            mwaa.get_environment(Name="a1")
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "ResourceNotFoundException"
            break
        time.sleep(0.05)
    else:
        raise AssertionError("a1 never went away")
    assert [p["Environments"] for p in mwaa.get_paginator("list_environments").paginate()] == [["a2", "a3"]]


# ------------------------------------------------------------------------------------------- InvokeRestApi


def test_rest_api_needs_a_completed_install(standin: MwaaStandIn, mwaa: Any, bucket: Bucket) -> None:
    mwaa.create_environment(Name="env1", ExecutionRoleArn=ROLE, SourceBucketArn=bucket.arn, DagS3Path="dags",
                            NetworkConfiguration=NETWORK)
    error = _rest_error(mwaa, "GET", "/dags")
    assert error.response["Error"]["Code"] == "ValidationException" and "CREATING" in str(error)
    wait_status(mwaa, "env1", DONE)
    assert _rest(mwaa, "GET", "/dags")["RestApiResponse"] == {"dags": [], "total_entries": 0}
    assert _rest(mwaa, "GET", "/version")["RestApiResponse"]["version"] == "3.3.1"
    for path, status in (("/api/v2/dags", 404), ("/nothing", 404)):
        error = _rest_error(mwaa, "GET", path)
        assert error.response["RestApiStatusCode"] == status and error.response["RestApiResponse"] == {
            "detail": "Not Found"}
    assert _rest_error(mwaa, "PUT", "/dags").response["RestApiStatusCode"] == 405


def test_smoke_flow_404_until_the_dag_exists_then_trigger_and_watch(
    standin: MwaaStandIn, mwaa: Any, bucket: Bucket
) -> None:
    _good_env(mwaa, bucket)
    error = _rest_error(mwaa, "PATCH", "/dags/smoke", {"is_paused": False})
    assert error.response["Error"]["Code"] == "RestApiClientException"
    assert error.response["RestApiStatusCode"] == 404 and "smoke" in error.response["RestApiResponse"]["detail"]

    bucket.put("dags/smoke.py", SMOKE_DAG)
    dag = _rest(mwaa, "GET", "/dags/smoke")["RestApiResponse"]
    assert dag["is_paused"] is True and dag["fileloc"] == "/usr/local/airflow/dags/smoke.py"
    assert [t["name"] for t in dag["tags"]] == ["smoke"]

    # Triggered while paused: the run waits in the queue.
    run = _rest(mwaa, "POST", "/dags/smoke/dagRuns", {"dag_run_id": "r1", "logical_date": None})
    assert run["RestApiStatusCode"] == 200 and run["RestApiResponse"]["state"] == "queued"
    time.sleep(standin.run_seconds * 1.5)
    assert _rest(mwaa, "GET", "/dags/smoke/dagRuns/r1")["RestApiResponse"]["state"] == "queued"
    assert _rest(mwaa, "PATCH", "/dags/smoke", {"is_paused": False})["RestApiResponse"]["is_paused"] is False

    states: list[str] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        state = _rest(mwaa, "GET", "/dags/smoke/dagRuns/r1")["RestApiResponse"]["state"]
        if not states or states[-1] != state:
            states.append(state)
        if state in {"success", "failed"}:
            break
        time.sleep(0.02)
    assert states == ["queued", "running", "success"]

    duplicate = _rest_error(mwaa, "POST", "/dags/smoke/dagRuns", {"dag_run_id": "r1", "logical_date": None})
    assert duplicate.response["RestApiStatusCode"] == 409
    missing_field = _rest_error(mwaa, "POST", "/dags/smoke/dagRuns", {"dag_run_id": "r2"})
    assert missing_field.response["RestApiStatusCode"] == 422
    assert missing_field.response["RestApiResponse"]["detail"][0]["loc"] == ["body", "logical_date"]
    unknown_run = _rest_error(mwaa, "GET", "/dags/smoke/dagRuns/zzz")
    assert unknown_run.response["RestApiStatusCode"] == 404

    standin.fail_dag_runs("smoke")
    _rest(mwaa, "POST", "/dags/smoke/dagRuns", {"dag_run_id": "r2", "logical_date": None})
    time.sleep(standin.run_seconds * 1.2)
    assert _rest(mwaa, "GET", "/dags/smoke/dagRuns/r2")["RestApiResponse"]["state"] == "failed"
    assert [r["state"] for r in standin.dag_runs("env1")] == ["success", "failed"]

    bucket.delete("dags/smoke.py")
    assert _rest(mwaa, "GET", "/dags/smoke")["RestApiResponse"]["is_stale"] is True
    gone = _rest_error(mwaa, "POST", "/dags/smoke/dagRuns", {"dag_run_id": "r3", "logical_date": None})
    assert gone.response["RestApiStatusCode"] == 404


def test_dag_bag_follows_airflowignore_and_finds_dags_by_ast(standin: MwaaStandIn, mwaa: Any, bucket: Bucket) -> None:
    _good_env(mwaa, bucket)
    bucket.put("dags/a.py", 'from airflow.sdk import DAG\nDAG("a_dag", is_paused_upon_creation=False)\n')
    bucket.put("dags/b.py", "from airflow.sdk import dag\n\n@dag(schedule=None)\ndef b_dag():\n    pass\n\nb_dag()\n")
    bucket.put("dags/uncalled.py", "from airflow.sdk import dag\n\n@dag\ndef never():\n    pass\n")
    bucket.put("dags/helpers.py", "VALUE = 1  # mentions neither word\n")
    bucket.put("dags/broken.py", "from airflow.sdk import DAG\nDAG(\n")
    bucket.put("dags/ignored/x.py", 'from airflow.sdk import DAG\nDAG(dag_id="ignored_dag")\n')
    bucket.put("dags/tmp_scratch.py", 'from airflow.sdk import DAG\nDAG(dag_id="scratch")\n')
    bucket.put("dags/.airflowignore", "ignored/\ntmp_*.py  # scratch files\n")
    dags = _rest(mwaa, "GET", "/dags")["RestApiResponse"]["dags"]
    assert {d["dag_id"]: d["is_paused"] for d in dags} == {"a_dag": False, "b_dag": True}
    errors = _rest(mwaa, "GET", "/importErrors")["RestApiResponse"]["import_errors"]
    assert [e["filename"] for e in errors] == ["/usr/local/airflow/dags/broken.py"]
    assert "SyntaxError" in errors[0]["stack_trace"]


def test_dag_files_become_visible_after_parse_seconds(make_standin: Callable[..., MwaaStandIn],
                                                      bucket: Bucket) -> None:
    standin = make_standin(parse_seconds=1.5)
    mwaa = standin.client()
    _good_env(mwaa, bucket)
    bucket.put("dags/smoke.py", SMOKE_DAG)
    assert _rest_error(mwaa, "GET", "/dags/smoke").response["RestApiStatusCode"] == 404
    time.sleep(2.6)  # S3 LastModified has one-second resolution
    assert _rest(mwaa, "GET", "/dags/smoke")["RestApiResponse"]["dag_id"] == "smoke"


def test_variables_crud(standin: MwaaStandIn, mwaa: Any, bucket: Bucket) -> None:
    _good_env(mwaa, bucket)
    assert _rest_error(mwaa, "GET", "/variables/mlops_runtime").response["RestApiStatusCode"] == 404
    created = _rest(mwaa, "POST", "/variables", {"key": "mlops_runtime", "value": "kubernetes", "description": "rt"})
    assert created["RestApiStatusCode"] == 201
    assert created["RestApiResponse"] == {"key": "mlops_runtime", "value": "kubernetes", "description": "rt",
                                          "is_encrypted": True, "team_name": None}
    again = _rest_error(mwaa, "POST", "/variables", {"key": "mlops_runtime", "value": "local"})
    assert again.response["RestApiStatusCode"] == 409 and "already exists" in again.response["RestApiResponse"][
        "detail"]
    patched = _rest(mwaa, "PATCH", "/variables/mlops_runtime", {"key": "mlops_runtime", "value": {"kind": "k8s"}})
    assert patched["RestApiResponse"]["value"] == '{\n  "kind": "k8s"\n}' and patched["RestApiResponse"][
        "description"] == "rt"
    mismatch = _rest_error(mwaa, "PATCH", "/variables/mlops_runtime", {"key": "other", "value": "x"})
    assert mismatch.response["RestApiStatusCode"] == 400
    assert _rest_error(mwaa, "PATCH", "/variables/none", {"key": "none", "value": "x"}).response[
        "RestApiStatusCode"] == 404
    assert _rest_error(mwaa, "POST", "/variables", {"key": "k"}).response["RestApiStatusCode"] == 422
    _rest(mwaa, "POST", "/variables", {"key": "db_password", "value": "hunter2"})
    assert _rest(mwaa, "GET", "/variables/db_password")["RestApiResponse"]["value"] == "***"
    assert standin.variables("env1") == {"mlops_runtime": '{\n  "kind": "k8s"\n}', "db_password": "hunter2"}
    assert _rest(mwaa, "DELETE", "/variables/db_password")["RestApiStatusCode"] == 204
    assert standin.variables("env1").keys() == {"mlops_runtime"}


def test_the_deploy_module_drives_the_stand_in(standin: MwaaStandIn, mwaa: Any, bucket: Bucket,
                                               tmp_path: Any) -> None:
    """airflow_mlops.deploy.update, unchanged, against the stand-in: a good update, a failing one, a smoke run."""
    from airflow_mlops.deploy import DeployError
    from airflow_mlops.deploy.update import Artifact, smoke_run, update_environment

    _good_env(mwaa, bucket)
    (tmp_path / "requirements.txt").write_text(GOOD_REQS + "# v2\n")
    arts = [Artifact("requirements", tmp_path / "requirements.txt", "requirements.txt")]
    result = update_environment(mwaa, bucket.s3, name="env1", bucket=bucket.name, artifacts=arts, poll_s=0.05,
                                timeout_s=60, log=lambda _: None)
    assert result.updated and result.status == "AVAILABLE"
    (tmp_path / "requirements.txt").write_text(CONSTRAINT_LINE + "six==1.17.0\n")
    with pytest.raises(DeployError, match=r"Cannot install six==1\.17\.0"):
        update_environment(mwaa, bucket.s3, name="env1", bucket=bucket.name, artifacts=arts, poll_s=0.05,
                           timeout_s=60, log=lambda _: None)
    bucket.put("dags/smoke.py", SMOKE_DAG)
    assert smoke_run(mwaa, name="env1", dag_id="smoke", run_id="s1", poll_s=0.05, timeout_s=30,
                     log=lambda _: None) == "success"
    standin.fail_dag_runs("smoke")
    with pytest.raises(DeployError, match="failed"):
        smoke_run(mwaa, name="env1", dag_id="smoke", run_id="s2", poll_s=0.05, timeout_s=30, log=lambda _: None)


# ------------------------------------------------------------------------------------------- pieces


def test_parse_dag_file_by_ast() -> None:
    source = '''
import airflow
from airflow.sdk import DAG, dag

with DAG("ctx", tags=["t1", "t2"]) as d:
    pass
DAG(dag_id=f"dyn_{1}")  # not a literal: invisible

@dag(dag_id="named")
def factory():
    pass

@dag
def plain():
    pass

factory()
x = plain()

@dag
def only_in_main():
    pass

if __name__ == "__main__":
    only_in_main()
'''
    dags, error = parse_dag_file(source, "f.py")
    assert error is None
    assert {d.dag_id for d in dags} == {"ctx", "named", "plain"}
    assert next(d for d in dags if d.dag_id == "ctx").tags == ("t1", "t2")
    assert parse_dag_file("def (:\n", "bad.py")[1] is not None


def test_airflowignore_rules_follow_airflow() -> None:
    keys = ["a.py", "sub/b.py", "sub/deep/c.py", "sub/.airflowignore", "skip/d.py", "x_test.py", "sub/x_test.py",
            ".airflowignore"]
    ignores = {".airflowignore": "skip/\n*_test.py\n", "sub/.airflowignore": "/deep\n"}
    assert dag_bag_files(keys, ignores) == ["a.py", "sub/b.py"]


