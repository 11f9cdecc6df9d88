"""End-to-end deploys: deploy.yml's commands, in its order, against the MWAA stand-in and moto, from an empty bucket.

Real parts: the airflow-mlops CLI (in-process), real boto3 for S3, MWAA and Secrets Manager over HTTP, a moto
server (S3 with versioning and conditional writes, Secrets Manager), the MWAA stand-in (tests/mwaa/standin.py),
which installs what each UpdateEnvironment names at those object versions, with dags/ as it is at that moment,
resolves every path requirements.txt names and runs pip's resolver on Python 3.12 over the set, on top of
``apache-airflow==<version>``. The workflow's commands come from .github/workflows/deploy.yml itself
(tests/integration/deploy_workflow.py says which steps are skipped or adjusted, and why).

Slow: pip resolves each distinct set on top of Airflow once per session (about 20 s each).
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_mlops.deploy.variables import SECRETS_BACKEND
from tests.integration.deploy_workflow import DeployRun, expressions_for, run_cli, run_deploy

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
IMAGES = {
    "trainer_image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/airflow-mlops/trainer@sha256:" + "a" * 64,
    "checks_image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/airflow-mlops/checks@sha256:" + "b" * 64,
    "serving_image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/airflow-mlops/serving@sha256:" + "c" * 64,
}
_WRITES = ("PutObject", "DeleteObject", "DeleteObjects", "CopyObject")


@pytest.fixture(scope="module")
def standin(moto_url: str) -> Iterator[Any]:
    from tests.mwaa.standin import MwaaStandIn

    # 3.3.2 stands for the next release MWAA offers, so an in-place upgrade can be exercised.
    with MwaaStandIn(moto_url, supported_versions=("3.3.1", "3.3.2"), update_seconds=0.6) as mwaa:
        yield mwaa


@pytest.fixture(scope="module")
def validated() -> dict[str, int]:
    return {}


class World:
    """One MWAA environment on its own empty, versioned bucket, and a checkout of this repository to deploy."""

    def __init__(self, moto_url: str, standin: Any, tmp: Path, validated: dict[str, int]) -> None:
        import boto3

        self.standin = standin
        self.validated = validated
        suffix = uuid.uuid4().hex[:8]
        self.bucket, self.name = f"mwaa-src-{suffix}", f"mlops-{suffix}"
        self.env = {
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_S3": moto_url, "AWS_ENDPOINT_URL_SECRETS_MANAGER": moto_url,
            "AWS_ENDPOINT_URL_MWAA": standin.endpoint,
        }
        self.s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=moto_url, aws_access_key_id="testing",
                               aws_secret_access_key="testing")
        self.sm = boto3.client("secretsmanager", region_name="us-east-1", endpoint_url=moto_url,
                               aws_access_key_id="testing", aws_secret_access_key="testing")
        self.mwaa = standin.client()
        self.s3.create_bucket(Bucket=self.bucket)
        self.s3.put_bucket_versioning(Bucket=self.bucket, VersioningConfiguration={"Status": "Enabled"})
        # As infra/mwaa-env.sh up creates it on a first deploy: the bucket and dags/ path, no requirements/plugins,
        # Variables and Connections from Secrets Manager.
        self.mwaa.create_environment(
            Name=self.name, AirflowVersion="3.3.1", SourceBucketArn=f"arn:aws:s3:::{self.bucket}", DagS3Path="dags",
            AirflowConfigurationOptions={"secrets.backend": SECRETS_BACKEND, "secrets.backend_kwargs": json.dumps(
                {"connections_prefix": "airflow/connections", "variables_prefix": "airflow/variables"})},
            ExecutionRoleArn="arn:aws:iam::123456789012:role/mwaa-exec",
            NetworkConfiguration={"SubnetIds": ["subnet-a", "subnet-b"], "SecurityGroupIds": ["sg-1"]},
        )
        assert standin.settle(self.name) == "AVAILABLE"
        self.checkout = tmp / "checkout"
        shutil.copytree(ROOT, self.checkout, ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", ".mlops-local", "tests", "node_modules", "__pycache__", "*.egg-info",
            ".mypy_cache", ".ruff_cache", ".pytest_cache"))

    def deploy(self, *, smoke_dag: str = "", edit: Any = None) -> DeployRun:
        """deploy.yml's job, counting S3/Secrets Manager writes and MWAA updates."""
        before = len(self.standin.calls)
        writes: list[str] = []
        import boto3

        session = boto3.DEFAULT_SESSION or boto3.setup_default_session() or boto3.DEFAULT_SESSION
        assert session is not None

        def count(event_name: str, params: dict[str, Any], **_: Any) -> None:
            target = params.get("Key") or params.get("SecretId") or params.get("Name", "")
            writes.append(f"{event_name.rsplit('.', 1)[-1]} {target}")

        events = session._session.get_component("event_emitter")  # the default session the CLI's clients use
        names = [f"provide-client-params.s3.{op}" for op in _WRITES] + [
            "provide-client-params.secrets-manager.PutSecretValue",
            "provide-client-params.secrets-manager.CreateSecret"]
        for n in names:
            events.register(n, count)
        try:
            run = run_deploy(self.checkout, env=self.env, validated=self.validated, edit=edit,
                             expressions=expressions_for(environment=self.name, bucket=self.bucket, images=IMAGES,
                                                         smoke_dag=smoke_dag))
        finally:
            for n in names:
                events.unregister(n, count)
        run.writes = writes  # type: ignore[attr-defined]
        run.updates = [c for op, c in self.standin.calls[before:] if op == "UpdateEnvironment"]  # type: ignore[attr-defined]
        return run

    def environment(self) -> dict[str, Any]:
        return dict(self.mwaa.get_environment(Name=self.name)["Environment"])

    def object_bytes(self) -> dict[str, int]:
        out = {}
        for page in self.s3.get_paginator("list_object_versions").paginate(Bucket=self.bucket):
            out.update({f"{v['Key']}@{v['VersionId']}": int(v["Size"]) for v in page.get("Versions", [])})
        return out

    def ledger(self) -> list[dict[str, Any]]:
        body = self.s3.get_object(Bucket=self.bucket, Key=f".airflow-mlops/releases/{self.name}.json")["Body"]
        return list(json.loads(body.read())["events"])

    def dag_body(self, name: str) -> bytes:
        return bytes(self.s3.get_object(Bucket=self.bucket, Key=f"dags/{name}")["Body"].read())


@pytest.fixture
def world(moto_url: str, standin: Any, tmp_path: Path, validated: dict[str, int]) -> World:
    return World(moto_url, standin, tmp_path, validated)


def _assert_ok(run: DeployRun) -> None:
    assert run.ok, run.log()


def _add_requirement(world: World, name: str) -> None:
    """What a developer does to need a new library: declare it in pyproject.toml (pinned by the constraints)."""
    path = world.checkout / "pyproject.toml"
    text = path.read_text()
    marker = "dependencies = ["
    assert text.count(marker) == 1
    path.write_text(text.replace(marker, f'{marker}\n    "{name}",', 1))


def _bump_airflow(argv: list[str]) -> list[str]:
    """The workflow edit for an Airflow upgrade: the bundle step gets --airflow-version."""
    return [*argv, "--airflow-version", "3.3.2"] if argv[:2] == ["deploy", "bundle"] else argv


def test_first_deploy_from_an_empty_bucket_succeeds(world: World) -> None:
    world.validated.clear()  # this one imports the DAGs whatever ran before
    started = time.perf_counter()
    run = world.deploy(smoke_dag="mlops_training_pipeline")
    wall = time.perf_counter() - started
    _assert_ok(run)
    env = world.environment()
    assert env["Status"] == "AVAILABLE" and env["LastUpdate"]["Status"] == "SUCCESS"
    validate = run.step("validate").output  # the repository's own bundle, every DAG imported in a fresh process
    assert "validation: OK" in validate and all(f"{p.name} " in validate for p in (ROOT / "dags").glob("*.py"))
    install = world.standin.installs(world.name)[-1]
    assert install.ok and install.trigger == "update", install.error
    # The constraints came from plugins.zip at the version the update named; nothing was read from dags/.
    constraint = "/usr/local/airflow/plugins/constraints-3.3.1-py3.12.txt"
    assert install.referenced[constraint] is not None
    assert not [p for p in install.referenced if p.startswith("/usr/local/airflow/dags")]
    assert install.dags == {}  # the update ran before the sync, as deploy.yml orders it, and did not need dags/
    assert install.resolved["airflow-mlops"] == "0.1.0" and install.resolved["apache-airflow"] == "3.3.1"
    assert set(world.standin.variables(world.name)) == set()  # images went to the secrets backend
    assert world.sm.get_secret_value(SecretId="airflow/variables/mlops_image")["SecretString"] == \
        IMAGES["trainer_image"]
    runs = world.standin.dag_runs(world.name)
    assert [(r["dag_id"], r["state"]) for r in runs] == [("mlops_training_pipeline", "success")]
    (release,) = world.ledger()
    assert release["artifacts"]["requirements"][1] == env["RequirementsS3ObjectVersion"]
    uploaded = sum(world.object_bytes().values())
    print(f"\nfirst deploy: {wall:.1f}s wall ({run.seconds:.1f}s in the CLI), {uploaded} bytes uploaded, "
          f"{len(run.writes)} write requests, {len(run.updates)} UpdateEnvironment")  # type: ignore[attr-defined]
    assert len(run.updates) == 1  # type: ignore[attr-defined]

    # A worker that autoscaling starts later installs the same set, whatever dags/ holds by then.
    (world.checkout / "dags" / "mlops_batch_inference.py").unlink()
    _assert_ok(world.deploy())
    late = world.standin.start_worker(world.name)
    assert late.ok and late.resolved == install.resolved and late.referenced == install.referenced


def test_no_op_redeploy_writes_nothing_and_does_not_update(world: World) -> None:
    _assert_ok(world.deploy())
    again = world.deploy()
    _assert_ok(again)
    assert again.writes == [] and again.updates == []  # type: ignore[attr-defined]
    assert "already runs these versions: no update" in again.step("update").output
    assert "up to date: nothing written" in again.step("sync").output
    assert len(world.ledger()) == 1


def test_dag_only_change_ships_the_dag_without_an_update(world: World) -> None:
    _assert_ok(world.deploy())
    dag = world.checkout / "dags" / "mlops_drift_monitor.py"
    dag.write_text(dag.read_text() + "\n# tuned thresholds\n")
    run = world.deploy()
    _assert_ok(run)
    assert run.updates == []  # type: ignore[attr-defined]
    manifest, ledger = "dags/.airflow-mlops-sync.json", f".airflow-mlops/releases/{world.name}.json"
    assert run.writes == [  # type: ignore[attr-defined]
        f"PutObject {manifest}", "PutObject dags/mlops_drift_monitor.py", f"PutObject {manifest}",
        f"PutObject {ledger}"]  # claim, the one DAG, release the claim, record the release
    assert world.dag_body("mlops_drift_monitor.py").endswith(b"# tuned thresholds\n")
    assert [e["artifacts"] for e in world.ledger()] == [world.ledger()[0]["artifacts"]] * 2


def test_requirements_change_updates_requirements_and_plugins_together(world: World) -> None:
    _assert_ok(world.deploy())
    first = world.environment()
    _add_requirement(world, "six")
    run = world.deploy()
    _assert_ok(run)
    (update,) = run.updates  # type: ignore[attr-defined]
    # One update names both versions: the wheel's metadata (in plugins.zip) and requirements.txt move together.
    assert update["RequirementsS3ObjectVersion"] != first["RequirementsS3ObjectVersion"]
    assert update["PluginsS3ObjectVersion"] != first["PluginsS3ObjectVersion"]
    install = world.standin.installs(world.name)[-1]
    assert install.ok and "six==1.17.0" in (install.requirements_text or "").splitlines()
    assert install.resolved["six"] == "1.17.0"  # the constraints' pin


def test_airflow_version_change_in_place_with_matching_constraints_and_back(world: World) -> None:
    _assert_ok(world.deploy())
    run = world.deploy(edit=_bump_airflow)
    _assert_ok(run)
    (update,) = run.updates  # type: ignore[attr-defined]
    assert update["AirflowVersion"] == "3.3.2" and "RequirementsS3ObjectVersion" in update
    env = world.environment()
    assert env["AirflowVersion"] == "3.3.2"
    install = world.standin.installs(world.name)[-1]
    assert install.ok and install.airflow_version == "3.3.2" and install.resolved["apache-airflow"] == "3.3.2"
    assert "/usr/local/airflow/plugins/constraints-3.3.2-py3.12.txt" in install.referenced
    # A rollback restores Airflow 3.3.1 (MWAA changes minor versions in place both ways) with 3.3.1's constraints,
    # in the same update.
    rc, out = _rollback(world)
    assert rc == 0, out
    assert world.environment()["AirflowVersion"] == "3.3.1"
    back = world.standin.installs(world.name)[-1]
    assert back.ok and back.airflow_version == "3.3.1" and back.resolved["apache-airflow"] == "3.3.1"
    assert "/usr/local/airflow/plugins/constraints-3.3.1-py3.12.txt" in back.referenced


def _rollback(world: World, *extra: str) -> tuple[int, str]:
    return run_cli(["deploy", "rollback", "--environment", world.name, "--bucket", world.bucket, "--poll", "0.2",
                    *extra], cwd=world.checkout, env=world.env)


def _sha(world: World, key: str, version: str) -> str:
    return str(world.s3.head_object(Bucket=world.bucket, Key=key, VersionId=version)["Metadata"]["sha256"])


def test_rollback_restores_the_release_with_its_constraints_and_dags(world: World) -> None:
    _assert_ok(world.deploy())
    first_env = world.environment()
    first_install = world.standin.installs(world.name)[-1]
    first_dag = world.dag_body("mlops_drift_monitor.py")
    _add_requirement(world, "six")
    dag = world.checkout / "dags" / "mlops_drift_monitor.py"
    dag.write_text(dag.read_text() + "\n# needs six\n")
    _assert_ok(world.deploy())
    assert world.environment()["RequirementsS3ObjectVersion"] != first_env["RequirementsS3ObjectVersion"]

    rc, out = _rollback(world)
    assert rc == 0, out
    env = world.environment()
    # The first release's content, copied back as the current objects (noncurrent versions expire; `up` re-creates
    # from the latest), so what runs is the latest version of each key.
    for key, field in (("requirements.txt", "RequirementsS3ObjectVersion"), ("plugins.zip", "PluginsS3ObjectVersion")):
        assert _sha(world, key, env[field]) == _sha(world, key, first_env[field])
        assert env[field] == world.s3.head_object(Bucket=world.bucket, Key=key)["VersionId"]
    install = world.standin.installs(world.name)[-1]
    # The first release's requirements again, installed with the constraints that shipped beside them.
    assert install.ok and "six==1.17.0" not in (install.requirements_text or "").splitlines()
    assert install.referenced == first_install.referenced and install.resolved == first_install.resolved
    assert world.dag_body("mlops_drift_monitor.py") == first_dag
    events = world.ledger()
    assert [e["action"] for e in events] == ["deploy", "deploy", "rollback-started", "rollback"]
    assert events[-1]["restores"] == events[0]["release"]
    rc, out = run_cli(["deploy", "releases", "--environment", world.name, "--bucket", world.bucket],
                      cwd=world.checkout, env=world.env)
    assert rc == 0 and out.splitlines()[-1].startswith("* ") and f"rollback of {events[0]['release']}" in out
    # The checkout still holds the second release: the next deploy goes forward again.
    _assert_ok(world.deploy())
    assert "six==1.17.0" in (world.standin.installs(world.name)[-1].requirements_text or "")


def test_rollback_changes_nothing_while_a_sync_holds_the_prefix_and_resumes_when_interrupted(world: World) -> None:
    _assert_ok(world.deploy())
    first = world.ledger()[0]["release"]
    dag = world.checkout / "dags" / "mlops_drift_monitor.py"
    dag.write_text(dag.read_text() + "\n# second\n")
    _add_requirement(world, "six")
    _assert_ok(world.deploy())
    manifest_key = "dags/.airflow-mlops-sync.json"
    saved = world.s3.get_object(Bucket=world.bucket, Key=manifest_key)["Body"].read()
    claim = json.loads(saved)
    claim.update(state="in-progress", owner="github-actions run 99", started_at=time.time())
    world.s3.put_object(Bucket=world.bucket, Key=manifest_key, Body=json.dumps(claim).encode())
    before = len(world.standin.calls)
    rc, out = _rollback(world)
    assert rc == 1 and "github-actions run 99 is syncing" in out and "Nothing was changed" in out
    assert [op for op, _ in world.standin.calls[before:] if op == "UpdateEnvironment"] == []
    world.s3.put_object(Bucket=world.bucket, Key=manifest_key, Body=saved)

    # Sent without waiting (or interrupted): a second run resumes towards the same release, not one further back.
    rc, out = _rollback(world, "--no-wait")
    assert rc == 0 and "run the same rollback again" in out, out
    world.standin.settle(world.name)
    rc, out = _rollback(world)
    assert rc == 0 and f"resuming the interrupted rollback of {world.name} to release {first}" in out, out
    events = world.ledger()
    assert [e["action"] for e in events][-2:] == ["rollback-started", "rollback"] and events[-1]["restores"] == first
    assert b"# second" not in world.dag_body("mlops_drift_monitor.py")


def test_the_old_layout_fails_a_first_deploy_the_way_mwaa_does(world: World) -> None:
    """The regression this design fixes: constraints under dags/ are not in the bucket when the update installs."""
    rc, out = run_cli(["deploy", "bundle", "--out", "build/mwaa"], cwd=world.checkout, env=world.env)
    assert rc == 0, out
    req = world.checkout / "build" / "mwaa" / "requirements.txt"
    req.write_text(req.read_text().replace("/usr/local/airflow/plugins/constraints",
                                           "/usr/local/airflow/dags/constraints"))
    rc, out = run_cli(["deploy", "update", "--bundle", "build/mwaa", "--bucket", world.bucket, "--environment",
                       world.name, "--poll", "0.2"], cwd=world.checkout, env=world.env)
    assert rc == 1 and "update failed (UPDATE_FAILED)" in out and "INCORRECT_CONFIGURATION" in out
    assert "/usr/local/airflow/dags/constraints-3.3.1-py3.12.txt" in out
    env = world.environment()
    assert env["Status"] == "UPDATE_FAILED" and "RequirementsS3ObjectVersion" not in env  # rolled back
