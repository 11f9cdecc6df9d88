"""``deploy set-images``: image Variables by digest, through Secrets Manager (moto) or the REST API (MWAA stand-in).

Real boto3 over HTTP against a moto server (Secrets Manager, S3) and the MWAA stand-in's InvokeRestApi, which
answers as Airflow 3's ``/variables`` API does (404, 409, PATCH).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_mlops.deploy import DeployError
from airflow_mlops.deploy.variables import SECRETS_BACKEND, check_image_ref, set_variables
from tests.integration.deploy_workflow import run_cli

DIGEST = "123456789012.dkr.ecr.us-east-1.amazonaws.com/airflow-mlops/trainer@sha256:" + "d" * 64


@pytest.fixture
def available(moto_url: str) -> Iterator[tuple[Any, Any, str]]:
    """An AVAILABLE environment on the stand-in (an empty install: no requirements), and its name."""
    import boto3

    from tests.mwaa.standin import MwaaStandIn

    s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=moto_url, aws_access_key_id="x",
                      aws_secret_access_key="x")
    bucket, name = f"b-{uuid.uuid4().hex[:8]}", f"env-{uuid.uuid4().hex[:6]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    with MwaaStandIn(moto_url, update_seconds=0.1, with_airflow=False) as standin:
        mwaa = standin.client()
        for env_name, options in ((name, {}), (f"{name}-sm", {
                "secrets.backend": SECRETS_BACKEND,
                "secrets.backend_kwargs": '{"connections_prefix": "airflow/connections", '
                                          '"variables_prefix": "airflow/staging/variables"}'})):
            mwaa.create_environment(
                Name=env_name, SourceBucketArn=f"arn:aws:s3:::{bucket}", DagS3Path="dags",
                ExecutionRoleArn="arn:aws:iam::123456789012:role/x", AirflowConfigurationOptions=options,
                NetworkConfiguration={"SubnetIds": ["subnet-a", "subnet-b"], "SecurityGroupIds": ["sg-1"]})
            assert standin.settle(env_name) == "AVAILABLE"
        yield standin, mwaa, name


def test_rest_api_backend_creates_then_patches_only_what_differs(available: tuple[Any, Any, str]) -> None:
    standin, mwaa, name = available
    lines: list[str] = []
    first = set_variables({"mlops_image": DIGEST}, backend="rest-api", environment=name, mwaa=mwaa, log=lines.append)
    assert [c.changed for c in first] == [True] and standin.variables(name) == {"mlops_image": DIGEST}
    before = len(standin.calls)
    again = set_variables({"mlops_image": DIGEST}, backend="rest-api", environment=name, mwaa=mwaa,
                          log=lines.append)
    assert not again[0].changed
    methods = [c[1]["Method"] for c in standin.calls[before:] if c[0] == "InvokeRestApi"]
    assert methods == ["GET"]  # read, compare, no write
    newer = DIGEST.replace("d" * 64, "e" * 64)
    (change,) = set_variables({"mlops_image": newer}, backend="rest-api", environment=name, mwaa=mwaa,
                              log=lines.append)
    assert change.old == DIGEST and standin.variables(name)["mlops_image"] == newer
    assert "unchanged" in lines[1] and f"{DIGEST} -> {newer}" in lines[2]


def test_secrets_manager_backend_through_the_cli(moto_url: str, available: tuple[Any, Any, str]) -> None:
    """Secrets are written only where the environment's secrets backend reads them."""
    import boto3

    standin, _, name = available
    env = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL_SECRETS_MANAGER": moto_url, "AWS_ENDPOINT_URL_MWAA": standin.endpoint}
    prefix = "airflow/staging/variables"
    images = ["--mlops-image", DIGEST, "--serving-image", DIGEST.replace("trainer", "serving")]
    from pathlib import Path

    # An environment with no secrets backend would never read them; a wrong prefix neither.
    rc, out = run_cli(["deploy", "set-images", "--environment", name, "--variables-prefix", prefix, *images],
                      cwd=Path.cwd(), env=env)
    assert rc == 1 and "secrets.backend=(none)" in out
    rc, out = run_cli(["deploy", "set-images", "--environment", f"{name}-sm", *images], cwd=Path.cwd(), env=env)
    assert rc == 1 and "reads Variables under 'airflow/staging/variables'" in out
    argv = ["deploy", "set-images", "--environment", f"{name}-sm", "--variables-prefix", prefix, *images]
    rc, out = run_cli(argv, cwd=Path.cwd(), env=env)
    assert rc == 0, out
    sm = boto3.client("secretsmanager", region_name="us-east-1", endpoint_url=moto_url, aws_access_key_id="x",
                      aws_secret_access_key="x")
    assert sm.get_secret_value(SecretId=f"{prefix}/mlops_image")["SecretString"] == DIGEST
    assert sm.get_secret_value(SecretId=f"{prefix}/mlops_serving_image")["SecretString"].endswith("d" * 64)
    rc, out = run_cli(argv, cwd=Path.cwd(), env=env)
    assert rc == 0 and out.count("unchanged") == 2
    # A tag instead of a digest is refused before anything is written, naming the flag.
    rc, out = run_cli(["deploy", "set-images", "--environment", "e", "--checks-image", "repo/checks:latest"],
                      cwd=Path.cwd(), env=env)
    assert rc == 1 and "--checks-image: 'repo/checks:latest' is not pinned by digest" in out


@pytest.mark.parametrize("ref", ["repo/x:1.0", "repo/x@sha256:abc", "REPO@sha256:" + "a" * 64, ""])
def test_image_refs_must_be_pinned_by_digest(ref: str) -> None:
    with pytest.raises(DeployError, match=r"--mlops-image: .* is not pinned by digest"):
        check_image_ref("--mlops-image", ref)
