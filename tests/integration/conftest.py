"""Integration fixtures: the fake Kubernetes cluster from tests/kube, and a spy on the rollout trigger."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.kube.conftest import airflow_kubernetes_conn, fake_cluster, fake_kubeconfig

__all__ = ["airflow_kubernetes_conn", "fake_cluster", "fake_kubeconfig"]


@pytest.fixture
def trigger_runs(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Records each RolloutTrigger run (start, end, event) and keeps its real behaviour (a spy, not a mock):
    the tests use it to prove that every pause was waited out in the triggerer, not in a worker."""
    from airflow_mlops.triggers.rollout import RolloutTrigger

    runs: list[dict[str, Any]] = []
    real = RolloutTrigger.run

    async def spy(self: RolloutTrigger) -> Any:
        entry: dict[str, Any] = {"start": time.time(), "wait_ready": self.wait_ready}
        async for event in real(self):
            entry.update(end=time.time(), event=event.payload)
            runs.append(entry)
            yield event

    monkeypatch.setattr(RolloutTrigger, "run", spy)
    return runs
