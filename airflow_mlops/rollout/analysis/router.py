"""Router metrics provider: the local router's own Prometheus text, windowed over the metric's interval."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Mapping

from airflow_mlops.core.rollout import MetricCheck
from airflow_mlops.rollout.analysis import ProviderUnavailable, render
from airflow_mlops.rollout.analysis.prom_text import parse
from airflow_mlops.rollout.targets.base import Backend

PREFIX = "mlops_router_window_"


class RouterMetrics:
    """Reads ``GET <router>/metrics?window=<interval>``.

    The query names a windowed gauge, with or without its prefix: ``error_ratio``, ``latency_p95_seconds``,
    ``request_rate``, ``requests``, ``errors`` (or ``mlops_router_window_error_ratio``). The sample of the
    measured backend is the value.

    :param router_url: the router's base URL.
    """

    def __init__(self, router_url: str, timeout_s: float = 5.0) -> None:
        self.router_url = router_url.rstrip("/")
        self.timeout_s = timeout_s

    def query(self, metric: MetricCheck, backend: Backend, variables: Mapping[str, str]) -> float | None:
        name = render(metric.query, variables).strip()
        family = name if name.startswith("mlops_router_") else PREFIX + name
        url = f"{self.router_url}/metrics?window={metric.interval_s:g}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as response:
                text = response.read().decode()
        except (urllib.error.URLError, OSError) as err:
            raise ProviderUnavailable(f"router metrics at {url}: {err}") from err
        samples = [v for n, labels, v in parse(text) if n == family and labels.get("backend") == backend.name]
        if not any(n == family for n, _, _ in parse(text)):
            raise ProviderUnavailable(f"router exposes no metric {family!r}")
        return samples[0] if samples else None
