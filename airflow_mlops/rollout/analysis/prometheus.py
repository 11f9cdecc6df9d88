"""Prometheus HTTP API provider: an instant query (``/api/v1/query``) rendered from the metric's template."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping

from airflow_mlops.core.rollout import MetricCheck
from airflow_mlops.rollout.analysis import ProviderUnavailable, render
from airflow_mlops.rollout.targets.base import Backend


class PrometheusQuery:
    """Runs the rendered PromQL (e.g. ``sum(rate(errors{version="{version}"}[{window}s])) / ...``).

    One series: its value; no series: no data (inconclusive); several series: an error (the query must
    aggregate). Unreachable or an error status: ProviderUnavailable (inconclusive).

    :param base_url: Prometheus base URL, e.g. ``http://prometheus:9090``.
    """

    def __init__(self, base_url: str, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def query(self, metric: MetricCheck, backend: Backend, variables: Mapping[str, str]) -> float | None:
        base = str(metric.params.get("url") or self.base_url)
        if not base:
            raise ProviderUnavailable("no Prometheus URL (set params.url or the operator's prometheus_url)")
        promql = render(metric.query, variables)
        url = f"{base.rstrip('/')}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as err:
            raise ProviderUnavailable(f"Prometheus answered {err.code} to {promql!r}: {err.read()[:200]!r}") from err
        except (urllib.error.URLError, OSError, ValueError) as err:
            raise ProviderUnavailable(f"Prometheus at {base}: {err}") from err
        if body.get("status") != "success":
            raise ProviderUnavailable(f"Prometheus error for {promql!r}: {body.get('error')}")
        data = body.get("data", {})
        result = data.get("result")
        if data.get("resultType") == "scalar":
            return float(result[1])
        if not result:
            return None
        if len(result) > 1:
            raise ProviderUnavailable(f"query {promql!r} returned {len(result)} series; aggregate it to one")
        return float(result[0]["value"][1])
