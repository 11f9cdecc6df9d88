"""Fixtures for the MWAA stand-in: a real moto S3 server (HTTP), a fresh versioned bucket, the stand-in, a client."""

from __future__ import annotations

import io
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.mwaa.standin import MwaaStandIn


@dataclass
class Bucket:
    """A versioned bucket on the moto server, with the few writes the tests make."""

    s3: Any
    name: str

    @property
    def arn(self) -> str:
        return f"arn:aws:s3:::{self.name}"

    def put(self, key: str, body: bytes | str) -> str:
        """Upload; return the new object's VersionId."""
        data = body.encode() if isinstance(body, str) else body
        return str(self.s3.put_object(Bucket=self.name, Key=key, Body=data)["VersionId"])

    def delete(self, key: str) -> None:
        """Delete (a delete marker: older versions stay readable by VersionId)."""
        self.s3.delete_object(Bucket=self.name, Key=key)


def zip_bytes(files: dict[str, str]) -> bytes:
    """A plugins.zip holding ``files`` at its root."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return buf.getvalue()


@pytest.fixture
def bucket(moto_url: str) -> Iterator[Bucket]:
    """A fresh versioned bucket per test, emptied and removed afterwards."""
    import boto3

    s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=moto_url, aws_access_key_id="testing",
                      aws_secret_access_key="testing")
    name = f"mwaa-standin-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=name)
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    yield Bucket(s3, name)
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=name):
        for v in page.get("Versions", []) + page.get("DeleteMarkers", []):
            s3.delete_object(Bucket=name, Key=v["Key"], VersionId=v["VersionId"])
    s3.delete_bucket(Bucket=name)


@pytest.fixture
def make_standin(moto_url: str) -> Iterator[Callable[..., MwaaStandIn]]:
    """Start stand-ins with test settings (fast clocks, resolver without Airflow unless asked); each is stopped
    afterwards, and a stand-in bug (an answer off the service model, a crash) fails the test."""
    started: list[MwaaStandIn] = []

    def make(**kwargs: Any) -> MwaaStandIn:
        kwargs.setdefault("with_airflow", False)
        kwargs.setdefault("update_seconds", 0.3)
        kwargs.setdefault("run_seconds", 0.3)
        standin = MwaaStandIn(moto_url, **kwargs)
        standin.start()
        started.append(standin)
        return standin

    yield make
    for standin in started:
        standin.stop()
    errors = [e for s in started for e in s.server_errors]
    assert not errors, "the stand-in failed internally:\n" + "\n".join(errors)


@pytest.fixture
def standin(make_standin: Callable[..., MwaaStandIn]) -> MwaaStandIn:
    """The default stand-in: supports Airflow 3.3.1, resolver without Airflow (see the module docstring)."""
    return make_standin()


@pytest.fixture
def mwaa(standin: MwaaStandIn) -> Any:
    """A real boto3 mwaa client on the stand-in."""
    return standin.client()


def wait_status(mwaa: Any, name: str, until: set[str], timeout: float = 120.0) -> tuple[list[str], dict[str, Any]]:
    """Poll GetEnvironment (real boto3) until the status is in ``until``; return the statuses seen (deduplicated
    in order) and the final environment."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        env = mwaa.get_environment(Name=name)["Environment"]
        if not seen or seen[-1] != env["Status"]:
            seen.append(env["Status"])
        if env["Status"] in until:
            return seen, env
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}: still {env['Status']} after {timeout}s (seen {seen})")
        time.sleep(0.05)
