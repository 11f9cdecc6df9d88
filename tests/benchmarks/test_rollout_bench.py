"""Rollout benchmarks (``make bench``), real processes and traffic on the local target, under dag.test():

- P2: time the rollout held a worker / rollout wall time (target <= 5%);
- P3: requests a failing canary served before rollback / interval x (failure_limit+1) x rate x weight
  (target <= 1.2x);
- good rollout: wall time from the first weight change to the end / sum of its pauses (target <= 1.1x).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest

from tests.dagfiles import load_dag
from tests.integration.conftest import trigger_runs
from tests.integration.test_rollout_local import MODEL, Traffic, _xcom, endpoint, stack

__all__ = ["endpoint", "stack", "trigger_runs"]
RATE = 40.0


def _run(ep: Any, candidate: str, strategy: dict[str, Any]) -> Any:
    when = dt.datetime.now(dt.timezone.utc)
    conf = {"model": MODEL, "candidate": candidate, "endpoint": ep.name, "root": ep.root, "strategy": strategy}
    return load_dag("rollout_param_test").test(run_conf=conf, logical_date=when, run_after=when)


def _errors(interval: float, count: int, failure_limit: int) -> dict[str, Any]:
    return {"metrics": [{"name": "error_rate", "provider": "router", "query": "error_ratio", "interval_s": interval,
                         "count": count, "failure_limit": failure_limit, "inconclusive_limit": 1,
                         "success_condition": "result <= stable * 1.5 + 0.05"}]}


def test_good_rollout_wall_and_worker_share(stack: dict[str, Any], endpoint: Any,
                                            trigger_runs: list[dict[str, Any]]) -> None:
    pauses = [8.0, 8.0, 8.0]
    strategy = {"kind": "canary", "steps": [10, 50, 100], "pause_s": pauses, "analysis": _errors(1.0, 4, 0)}
    started = time.time()
    with Traffic(endpoint.router_url, RATE):
        dr = _run(endpoint, stack["versions"]["good2"], strategy)
    wall_total = time.time() - started
    assert dr.state == "success"
    record = _xcom(dr, "rollout")
    first_weight = record["history"][0]["at"]
    rollout_wall = record["finished_at"] - first_weight
    # Held = every moment of the rollout (first weight change to the end) not spent deferred in a trigger:
    # our code plus Airflow's task start-up on each resume.
    begin, end = record["started_at"], record["finished_at"]
    deferred = sum(max(0.0, min(r["end"], end) - max(r["start"], begin)) for r in trigger_runs)
    held = rollout_wall - deferred
    print(f"\n[rollout good] steps {strategy['steps']} pauses {pauses}: rollout wall {rollout_wall:.2f}s "
          f"/ sum of pauses {sum(pauses):.1f}s = {rollout_wall / sum(pauses):.3f}x (target <= 1.1x)")
    print(f"[rollout P2] operator code in a worker {record['worker_seconds']:.2f}s / rollout wall "
          f"{record['wall_seconds']:.2f}s = {record['worker_seconds'] / record['wall_seconds']:.3%}; "
          f"incl. Airflow's task resumes {held:.2f}s / {record['wall_seconds']:.2f}s = "
          f"{held / record['wall_seconds']:.3%} (target <= 5%); {len(trigger_runs)} deferrals; dag.test wall "
          f"{wall_total:.1f}s")


@pytest.mark.parametrize(("weight", "interval", "failure_limit"), [(20, 1.0, 1)])
def test_failing_canary_requests_before_rollback(stack: dict[str, Any], endpoint: Any, weight: int, interval: float,
                                                 failure_limit: int) -> None:
    bad = stack["versions"]["bad"]
    strategy = {"kind": "canary", "steps": [weight, 100], "pause_s": 30, "analysis": _errors(interval, 5,
                                                                                             failure_limit)}
    with Traffic(endpoint.router_url, RATE) as traffic:
        dr = _run(endpoint, bad, strategy)
    assert dr.state == "failed"
    record = _xcom(dr, "rollout", key="rollout")
    assert record["outcome"] == "aborted"
    served = sum(n for (backend, _), n in traffic.counts.items() if backend == f"v{bad}")
    theory = interval * (failure_limit + 1) * RATE * weight / 100
    exposure = record["history"][-1]["at"] - record["history"][0]["at"]
    print(f"\n[rollout P3] failing canary at {weight}% ({RATE:g} req/s, interval {interval:g}s, failure_limit "
          f"{failure_limit}): served {served} requests before rollback / theoretical minimum {theory:.0f} = "
          f"{served / theory:.2f}x (target <= 1.2x); exposed {exposure:.2f}s vs "
          f"{interval * (failure_limit + 1):.1f}s")
