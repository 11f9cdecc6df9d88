"""Integration fixtures: the fake Kubernetes cluster from tests/kube."""

from tests.kube.conftest import airflow_kubernetes_conn, fake_cluster, fake_kubeconfig

__all__ = ["airflow_kubernetes_conn", "fake_cluster", "fake_kubeconfig"]
