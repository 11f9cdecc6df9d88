"""CloudWatch provider: GetMetricData over the metric's interval (boto3 is imported inside methods)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from airflow_mlops.core.rollout import MetricCheck
from airflow_mlops.rollout.analysis import ProviderUnavailable, render
from airflow_mlops.rollout.targets.base import Backend

STATS = ("Average", "Sum", "Maximum", "Minimum", "SampleCount", "p50", "p90", "p95", "p99")


class CloudWatchMetrics:
    """Queries one metric statistic, or a metric math expression, for the last interval.

    The query is either ``Namespace/MetricName`` (with ``params``: ``dimensions`` as a templated dict,
    ``stat``, ``period``) or a JSON list of GetMetricData queries (the one with ``ReturnData`` true counts).
    Datapoints in the window are averaged; none is no data (inconclusive).

    :param aws: ``region_name``, ``endpoint_url``, ``aws_access_key_id``... for ``boto3.client`` (or a ready
        ``client``).
    """

    def __init__(self, aws: Mapping[str, Any]) -> None:
        self.aws = dict(aws)

    def _client(self) -> Any:
        if "client" in self.aws:
            return self.aws["client"]
        import boto3

        return boto3.client("cloudwatch", **{k: v for k, v in self.aws.items() if v is not None})

    def query(self, metric: MetricCheck, backend: Backend, variables: Mapping[str, str]) -> float | None:
        rendered = render(metric.query, variables)
        period = int(metric.params.get("period", 60))
        if rendered.lstrip().startswith("["):
            queries = json.loads(rendered)
        else:
            namespace, _, name = rendered.rpartition("/")
            if not namespace or not name:
                raise ProviderUnavailable(f"CloudWatch query {rendered!r}: expected Namespace/MetricName")
            dims = {k: render(str(v), variables) for k, v in dict(metric.params.get("dimensions") or {}).items()}
            queries = [{"Id": "m", "ReturnData": True, "MetricStat": {
                "Metric": {"Namespace": namespace, "MetricName": name,
                           "Dimensions": [{"Name": k, "Value": v} for k, v in dims.items()]},
                "Period": period, "Stat": str(metric.params.get("stat", "Average"))}}]
        now = dt.datetime.now(dt.timezone.utc)
        # EndTime is exclusive and bucketed by period: end one period ahead so the newest datapoints count.
        end = now + dt.timedelta(seconds=period)
        start = now - dt.timedelta(seconds=max(metric.interval_s, float(metric.params.get("lookback_s", period))))
        try:
            from botocore.exceptions import BotoCoreError, ClientError

            response = self._client().get_metric_data(MetricDataQueries=queries, StartTime=start, EndTime=end)
        except (BotoCoreError, ClientError) as err:
            raise ProviderUnavailable(f"CloudWatch GetMetricData: {err}") from err
        # GetMetricData returns only the queries with ReturnData true, in any order: match them by Id.
        wanted = {q["Id"] for q in queries if q.get("ReturnData", True)}
        results = [r for r in response.get("MetricDataResults", []) if r.get("Id") in wanted]
        values = [float(v) for r in results for v in r.get("Values", [])]
        return sum(values) / len(values) if values else None
