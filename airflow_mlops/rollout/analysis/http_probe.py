"""HTTP probe provider: sample requests straight to a version's server; status, latency and a sanity rule."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from airflow_mlops.core.rollout import Condition, MetricCheck, MissingValue
from airflow_mlops.rollout.analysis import ProviderUnavailable
from airflow_mlops.rollout.targets.base import Backend

QUERIES = ("success_ratio", "error_ratio", "sanity_ratio", "latency_p95_seconds", "latency_mean_seconds")


class HttpProbe:
    """Sends ``params.samples`` requests (default 5) of ``params.payload`` to ``<url><params.path>``.

    ``params.payload`` is a scoring request that matches the model's signature (``InputContract.request_body``
    in ``airflow_mlops.steps.signature`` builds one from a frame). Query: ``success_ratio`` (2xx share),
    ``error_ratio`` (5xx and unreachable share), ``sanity_ratio`` (share whose every prediction satisfies
    ``params.sanity``, a condition over ``prediction``, e.g. ``0 <= prediction <= 1``; for a model that returns
    class probabilities, every probability of every row), ``latency_p95_seconds``, ``latency_mean_seconds``.
    """

    def query(self, metric: MetricCheck, backend: Backend, variables: Mapping[str, str]) -> float | None:
        kind = metric.query.strip()
        if kind not in QUERIES:
            raise ProviderUnavailable(f"http_probe query must be one of {QUERIES}, got {kind!r}")
        if not backend.url:
            raise ProviderUnavailable(f"backend {backend.name} has no URL to probe")
        params = metric.params
        samples = int(params.get("samples", 5))
        payload = json.dumps(params["payload"]).encode()  # MetricCheck requires one that matches the signature
        url = backend.url.rstrip("/") + str(params.get("path", "/invocations"))
        sanity = Condition.parse(str(params["sanity"]), f"MetricCheck[{metric.name}].params.sanity") \
            if params.get("sanity") else None
        ok = errors = sane = 0
        latencies = []
        for _ in range(samples):
            started = time.perf_counter()
            status, body = self._send(url, payload, float(params.get("timeout_s", 10)))
            latencies.append(time.perf_counter() - started)
            if 200 <= status < 300:
                ok += 1
                if sanity is None or _sane(body, sanity):
                    sane += 1
            elif status >= 500 or status == 0:
                errors += 1
        if kind == "success_ratio":
            return ok / samples
        if kind == "error_ratio":
            return errors / samples
        if kind == "sanity_ratio":
            return sane / samples
        latencies.sort()
        if kind == "latency_mean_seconds":
            return sum(latencies) / len(latencies)
        return latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]

    @staticmethod
    def _send(url: str, payload: bytes, timeout: float) -> tuple[int, Any]:
        request = urllib.request.Request(url, data=payload, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, None
        except (urllib.error.URLError, OSError, ValueError):
            return 0, None


def _sane(body: Any, rule: Condition) -> bool:
    predictions = body.get("predictions") if isinstance(body, dict) else body
    if not isinstance(predictions, list) or not predictions:
        return False
    # One score per row, or one row of class probabilities per row (the trainer's models): every value counts.
    values = [v for p in predictions for v in (p if isinstance(p, list) and p else [p])]
    try:
        return all(isinstance(v, (int, float)) and rule.evaluate({"prediction": float(v)}) for v in values)
    except MissingValue:
        return False
