"""Pytest fixtures for the fake Kubernetes cluster: the cluster, a client for it, the Airflow connection."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from .cluster import FakeCluster


@pytest.fixture
def fake_cluster() -> Iterator[FakeCluster]:
    """A running ``FakeCluster`` (0.2s between pod phases); fails the test if the harness itself errored."""
    with FakeCluster(phase_delay=0.2) as cluster:
        yield cluster
        assert not cluster.errors, f"The fake cluster had internal errors: {cluster.errors!r}"


@pytest.fixture
def fake_kubeconfig(fake_cluster: FakeCluster, tmp_path: Path) -> Path:
    """A kubeconfig file pointing at ``fake_cluster`` (context ``fake``, namespace ``default``)."""
    return fake_cluster.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def kube_api(fake_kubeconfig: Path) -> Iterator[client.ApiClient]:
    """A ``kubernetes`` ApiClient for ``fake_cluster`` (not touching the client's global default config)."""
    api_client = config.new_client_from_config(config_file=str(fake_kubeconfig))
    with api_client:
        yield api_client


@pytest.fixture
def airflow_kubernetes_conn(
    fake_cluster: FakeCluster, fake_kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> FakeCluster:
    """Point Airflow's ``kubernetes_default`` connection at ``fake_cluster`` via ``AIRFLOW_CONN_*``.

    ``KUBECONFIG`` is unset: a deferrable KubernetesPodOperator turns it into the trigger's
    ``config_dict``, which AsyncKubernetesHook rejects next to the connection's ``kube_config_path``.
    """
    for name, value in fake_cluster.airflow_conn_env(fake_kubeconfig).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    return fake_cluster
