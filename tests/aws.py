"""Point boto3 and an Airflow AWS connection at a local moto server (the ``moto_url`` fixture)."""

from __future__ import annotations

import json

import pytest


def use_moto(monkeypatch: pytest.MonkeyPatch, moto_url: str, conn_id: str, region: str = "us-east-1") -> None:
    """Dummy credentials for boto3, and ``conn_id`` as an Airflow AWS connection (env var) whose endpoint is moto.

    :param monkeypatch: the test's monkeypatch (the variables are undone after the test)
    :param moto_url: the moto server
    :param conn_id: the Airflow connection id
    :param region: the region both use
    """
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": region}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({
        "conn_type": "aws", "login": "testing", "password": "testing",
        "extra": {"endpoint_url": moto_url, "region_name": region}}))
