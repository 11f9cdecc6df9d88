"""Analysis providers: where a metric's value comes from. One measurement = candidate value (+ stable baseline).

A provider that cannot be reached, or has no data, makes the measurement **inconclusive**; the analysis
spec's ``inconclusive_limit`` and ``on_inconclusive`` policy decide what that means.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any, Protocol

from airflow_mlops.core.rollout import Measurement, MetricCheck, judge
from airflow_mlops.rollout.targets.base import Backend


class ProviderUnavailable(RuntimeError):
    """The provider could not be asked (connection refused, timeout, 5xx, missing metric)."""


class Provider(Protocol):
    """Returns one value for a rendered query about one backend (None: no data)."""

    def query(self, metric: MetricCheck, backend: Backend, variables: Mapping[str, str]) -> float | None: ...


def render(template: str, variables: Mapping[str, str]) -> str:
    """Fill ``{backend}``, ``{version}``, ``{model}``, ``{window}``, ``{role}`` into a query template."""
    try:
        return template.format_map(dict(variables))
    except (KeyError, IndexError, ValueError) as err:
        raise ProviderUnavailable(f"query template {template!r}: unknown placeholder {err}; "
                                  f"known: {sorted(variables)}") from err


def make_provider(name: str, settings: Mapping[str, Any]) -> Provider:
    """The provider called ``name``, configured from ``settings`` (router_url, prometheus_url, aws...)."""
    if name == "router":
        from airflow_mlops.rollout.analysis.router import RouterMetrics

        return RouterMetrics(settings["router_url"])
    if name == "prometheus":
        from airflow_mlops.rollout.analysis.prometheus import PrometheusQuery

        return PrometheusQuery(settings.get("prometheus_url") or "")
    if name == "cloudwatch":
        from airflow_mlops.rollout.analysis.cloudwatch import CloudWatchMetrics

        return CloudWatchMetrics(settings.get("aws") or {})
    if name == "http_probe":
        from airflow_mlops.rollout.analysis.http_probe import HttpProbe

        return HttpProbe()
    raise ValueError(f"unknown analysis provider {name!r}")


def measure(metric: MetricCheck, provider: Provider, backends: Mapping[str, Backend], model: str, step: int,
            background: bool = False, now: float | None = None,
            fallback_baseline: float | None = None, endpoint: str = "") -> Measurement:
    """Take one measurement of ``metric``: the candidate's value, the stable baseline if a condition needs it.

    Query templates may use ``{backend}``, ``{version}``, ``{model}``, ``{role}``, ``{window}`` (seconds),
    ``{url}`` and ``{endpoint}`` (the target's name: SageMaker endpoint, Kubernetes service, local router).

    :param fallback_baseline: the stable value to compare with when the stable version has no data now (at
        100% or in a blue-green preview it serves no traffic): its last measured value.
    """
    at = time.time() if now is None else now

    def one(role: str) -> float | None:
        backend = backends.get(role)
        if backend is None:
            raise ProviderUnavailable(f"no {role} backend to measure")
        variables = {"backend": backend.name, "version": backend.version, "model": model, "role": role,
                     "window": f"{metric.interval_s:g}", "window_s": f"{metric.interval_s:g}",
                     "url": backend.url or "", "endpoint": endpoint}
        value = provider.query(metric, backend, variables)
        return None if value is None or math.isnan(value) else float(value)

    try:
        value = one("candidate")
        baseline = None
        if metric.needs_baseline:
            try:
                baseline = one("stable")
            except ProviderUnavailable:
                if fallback_baseline is None:
                    raise
    except ProviderUnavailable as err:
        return Measurement(metric.name, -1 if background else step, None, None, "inconclusive", at,
                           f"{metric.provider} unavailable: {err}", background)
    carried = metric.needs_baseline and baseline is None and fallback_baseline is not None
    if carried:
        baseline = fallback_baseline
    outcome, message = judge(metric, value, baseline)
    if carried:
        message = (message + "; " if message else "") + "stable has no traffic now: its last measured value"
    return Measurement(metric.name, -1 if background else step, value, baseline, outcome, at, message, background)
