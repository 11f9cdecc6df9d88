"""The checks step on an s3:// artifact store: real pyarrow S3 I/O in the checks venv against a moto server."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
from collections.abc import Iterator
from html.parser import HTMLParser

import pytest

from airflow_mlops.runtime.checks_env import step_pythonpath
from airflow_mlops.steps import contract
from tests.integration.test_checks_step import checks_python, clean_frame

pytestmark = pytest.mark.slow
__all__ = ["checks_python"]
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def test_step_reads_and_writes_s3(moto_endpoint: str, checks_python: str) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket="mlops")
    buffer = io.BytesIO()
    clean_frame().to_parquet(buffer, index=False)
    s3.put_object(Bucket="mlops", Key="data/train.parquet", Body=buffer.getvalue())
    env = {**os.environ, **AWS, "AWS_ENDPOINT_URL": moto_endpoint, "PYTHONPATH": step_pythonpath(),
           contract.OUTPUT_URI: "s3://mlops/runs/checks/outputs", contract.RESULT_URI: "s3://mlops/runs/result.json"}

    def run(train_uri: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([checks_python, "-m", "airflow_mlops.steps.checks", "--checks",
                               '[{"name": "data_duplicates"}]', "--train-uri", train_uri, "--cat-features", "color"],
                              env=env, capture_output=True, text=True, timeout=300)

    proc = run("s3://mlops/data/train.parquet")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    result = json.loads(s3.get_object(Bucket="mlops", Key="runs/result.json")["Body"].read())
    assert result["passed"] and result["report_uri"] == "s3://mlops/runs/checks/outputs/report.html"
    html = s3.get_object(Bucket="mlops", Key="runs/checks/outputs/report.html")["Body"].read().decode()
    HTMLParser().feed(html)
    assert "<html" in html and "Data Duplicates" in html
    stored = json.loads(s3.get_object(Bucket="mlops", Key="runs/checks/outputs/result.json")["Body"].read())
    assert stored["checks"] == result["checks"]

    missing = run("s3://mlops/data/nothing.parquet")
    assert missing.returncode == contract.EXIT_BAD_INPUT
    assert "train dataset URI not found: s3://mlops/data/nothing.parquet" in missing.stderr
