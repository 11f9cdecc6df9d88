"""Rollout operators under dag.test() on the local target: real MLflow scoring servers, the real router process,
real HTTP traffic, real MLflow registry (SQLite). The bad candidate is a real model whose server fails 30% of
requests with HTTP 500 (``DemoScorer(fail_percent=30)``).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_mlops.rollout.traffic import TrafficGenerator
from tests.dagfiles import load_dag

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
MODEL = "rollout_demo"
PAYLOAD = json.dumps({"dataframe_records": [{"x1": 1.0, "x2": 2.0}]}).encode()


def Traffic(url: str, rate: float = 40.0) -> TrafficGenerator:
    """Requests to the router at a steady rate from a thread; ``counts`` by (backend, status)."""
    return TrafficGenerator(url, [PAYLOAD], rate)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, airflow_db: Path) -> Iterator[dict[str, Any]]:
    """An embedded MLflow store with v1 (good, champion), v2 (good) and v3 (30% HTTP 500) of one model."""
    import mlflow

    from airflow_mlops.steps.demo_model import log_demo_model

    home = tmp_path_factory.mktemp("rollout-mlops")
    saved = {k: os.environ.get(k) for k in ("MLOPS_HOME", "MLFLOW_TRACKING_URI")}
    os.environ["MLOPS_HOME"] = str(home)
    uri = f"sqlite:///{home}/mlflow/mlflow.db"
    (home / "mlflow").mkdir(parents=True)
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    versions = {"good": log_demo_model(MODEL), "good2": log_demo_model(MODEL, bias=0.1),
                "bad": log_demo_model(MODEL, fail_percent=30)}
    mlflow.MlflowClient().set_registered_model_alias(MODEL, "champion", versions["good"])
    yield {"home": home, "uri": uri, "versions": versions}
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def endpoint(stack: dict[str, Any], request: pytest.FixtureRequest) -> Iterator[Any]:
    """A local endpoint serving v1 at 100% through the router; every process stopped afterwards."""
    from airflow_mlops.rollout.targets.local import LocalTarget

    name = request.node.name.replace("[", "-").replace("]", "")[:40]
    target = LocalTarget(name, MODEL, stack["uri"])
    target.deploy_initial(stack["versions"]["good"])
    yield target
    target.cleanup()


def _run(dag_id: str, endpoint: Any, candidate: str, logical_date: dt.datetime | None = None) -> Any:
    dag = load_dag(dag_id)
    conf = {"model": MODEL, "candidate": candidate, "endpoint": endpoint.name, "root": endpoint.root}
    when = logical_date or dt.datetime.now(dt.timezone.utc)
    # run_after fixes the run id (and so the rollout's owner): a second dag.test() with it is a retry of the run
    return dag.test(run_conf=conf, logical_date=when, run_after=when)


def _xcom(dr: Any, task_id: str, key: str = "return_value") -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.query(XComModel).filter_by(dag_id=dr.dag_id, run_id=dr.run_id, task_id=task_id,
                                                 key=key).one_or_none()
        return None if row is None else (json.loads(row.value) if isinstance(row.value, str) else row.value)


def test_good_canary_reaches_100_and_moves_champion(stack: dict[str, Any], endpoint: Any,
                                                    trigger_runs: list[dict[str, Any]]) -> None:
    import mlflow

    candidate = stack["versions"]["good2"]
    with Traffic(endpoint.router_url) as traffic:
        dr = _run("rollout_canary_test", endpoint, candidate)
    assert dr.state == "success"
    record = _xcom(dr, "canary")
    assert record["outcome"] == "promoted"
    assert [h["weight"] for h in record["history"]] == [25, 50, 100, 100]
    assert endpoint.serving_version() == candidate
    # every step was measured 3 times per metric, all successful, against real traffic on both versions
    for step in range(3):
        taken = [m for m in record["measurements"] if m["step"] == step and m["metric"] == "error_rate"]
        assert len(taken) == 3 and all(m["outcome"] == "successful" for m in taken[-2:])
    assert traffic.counts[(f"v{candidate}", 200)] > 0 and traffic.counts[(f"v{stack['versions']['good']}", 200)] > 0
    assert not [k for k in traffic.counts if k[1] >= 500]
    # deferral at every pause: each step's dwell time was spent inside a trigger run, not in the worker
    steps_at = [h["at"] for h in record["history"]]
    for begin, end in itertools.pairwise(steps_at):
        assert any(begin <= r["start"] and r["end"] <= end for r in trigger_runs if not r["wait_ready"]), \
            f"no trigger run between {begin} and {end}: {trigger_runs}"
    assert any(r["wait_ready"] for r in trigger_runs)  # the candidate's start-up was waited out deferred too
    assert record["worker_seconds"] < record["wall_seconds"]
    client = mlflow.MlflowClient()
    tags = client.get_model_version(MODEL, candidate).tags
    assert tags["mlops.rollout.outcome"] == "promoted" and tags["mlops.rollout.weights"] == "25 -> 50 -> 100 -> 100"
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == candidate
    assert str(client.get_model_version_by_alias(MODEL, "champion_previous").version) == stack["versions"]["good"]
    client.set_registered_model_alias(MODEL, "champion", stack["versions"]["good"])  # for the next tests


def test_bad_canary_is_rolled_back_and_stable_serves_everything(stack: dict[str, Any], endpoint: Any) -> None:
    import mlflow

    bad, good = stack["versions"]["bad"], stack["versions"]["good"]
    with Traffic(endpoint.router_url) as traffic:
        dr = _run("rollout_canary_test", endpoint, bad)
        after = Counter(traffic.counts)
        time.sleep(1.0)  # traffic after the rollback: all of it must go to the stable version
        late = traffic.counts - after
    assert dr.state == "failed"
    record = _xcom(dr, "canary", key="rollout")
    assert record["outcome"] == "aborted" and "error_rate" in record["reason"]
    assert record["history"][-1] == {**record["history"][-1], "action": "Abort", "weight": 0}
    assert max(h["weight"] for h in record["history"]) == 25  # never went past the first step
    assert endpoint.serving_version() == good
    assert endpoint.read_state().weight == 0 and endpoint.server_url(bad) is None
    assert sum(late.values()) > 0 and set(late) == {(f"v{good}", 200)}
    assert traffic.counts[(f"v{bad}", 500)] > 0  # the candidate really failed requests before the rollback
    assert mlflow.MlflowClient().get_model_version(MODEL, bad).tags["mlops.rollout.outcome"] == "aborted"
    assert str(mlflow.MlflowClient().get_model_version_by_alias(MODEL, "champion").version) == good


KILL_SCRIPT = """
import datetime as dt, sys
from tests.dagfiles import load_dag
dag = load_dag("rollout_canary_test")
dag.test(run_conf={"model": sys.argv[1], "candidate": sys.argv[2], "endpoint": sys.argv[3], "root": sys.argv[4]},
         logical_date=dt.datetime.fromisoformat(sys.argv[5]), run_after=dt.datetime.fromisoformat(sys.argv[5]))
"""


def test_worker_killed_mid_rollout_then_retried_converges(stack: dict[str, Any], endpoint: Any) -> None:
    candidate = stack["versions"]["good2"]
    when = dt.datetime(2025, 6, 1, tzinfo=dt.timezone.utc)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with Traffic(endpoint.router_url):
        proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, MODEL, candidate, endpoint.name, endpoint.root,
                                 when.isoformat()], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while True:
                state = endpoint.load_state()
                if state is not None and state.step >= 1:
                    break
                assert proc.poll() is None, "the first try ended before reaching step 2"
                assert time.monotonic() < deadline, "the first try never reached step 2"
                time.sleep(0.05)
            os.killpg(proc.pid, signal.SIGKILL)  # the worker dies mid-rollout: no on_kill, no cleanup
            proc.wait()
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        interrupted = endpoint.read_state()
        assert interrupted.phase == "progressing" and interrupted.split  # traffic split, owner recorded
        dr = _run("rollout_canary_test", endpoint, candidate, logical_date=when)  # the retry: same run, same owner
    assert dr.state == "success"
    record = _xcom(dr, "canary")
    assert record["outcome"] == "promoted" and endpoint.serving_version() == candidate
    # resumed where it was: step 0 was entered once, not restarted
    assert [h["step"] for h in record["history"] if h["action"] == "SetWeight"].count(0) == 1
    import mlflow

    mlflow.MlflowClient().set_registered_model_alias(MODEL, "champion", stack["versions"]["good"])


def test_another_owner_is_never_touched(stack: dict[str, Any], endpoint: Any) -> None:
    from dataclasses import replace

    from airflow_mlops.core.rollout import CanaryStrategy, RolloutState

    foreign = RolloutState(owner="other_dag/run/task", model=MODEL, stable=stack["versions"]["good"],
                           candidate=stack["versions"]["good2"], strategy=CanaryStrategy().to_dict())
    endpoint.deploy_candidate(foreign)
    endpoint.apply_weight(replace(foreign, step=0, weight=5))
    dr = _run("rollout_canary_test", endpoint, stack["versions"]["bad"])
    assert dr.state == "failed"
    state = endpoint.read_state()
    assert state.owner == "other_dag/run/task" and state.weight == 5  # untouched


def test_blue_green_preview_probe_then_switch(stack: dict[str, Any], endpoint: Any) -> None:
    candidate = stack["versions"]["good2"]
    with Traffic(endpoint.router_url) as traffic:
        dr = _run("rollout_blue_green_test", endpoint, candidate)
    assert dr.state == "success"
    record = _xcom(dr, "blue_green")
    assert record["outcome"] == "promoted"
    assert [h["weight"] for h in record["history"]] == [0, 100, 100]
    probes = [m for m in record["measurements"] if m["metric"] == "probe"]
    assert len(probes) == 2 and all(m["value"] == 1.0 for m in probes)
    assert endpoint.serving_version() == candidate
    assert not [k for k in traffic.counts if k[1] >= 500]
    import mlflow

    mlflow.MlflowClient().set_registered_model_alias(MODEL, "champion", stack["versions"]["good"])


def test_blue_green_bad_preview_never_gets_traffic(stack: dict[str, Any], endpoint: Any) -> None:
    bad, good = stack["versions"]["bad"], stack["versions"]["good"]
    with Traffic(endpoint.router_url) as traffic:
        dr = _run("rollout_blue_green_test", endpoint, bad)
    assert dr.state == "failed"
    record = _xcom(dr, "blue_green", key="rollout")
    assert record["outcome"] == "aborted" and "probe" in record["reason"]
    assert endpoint.serving_version() == good
    assert not [k for k in traffic.counts if k[0] == f"v{bad}"]  # live traffic never reached the preview


def test_on_kill_rolls_back_and_approval_is_recorded(stack: dict[str, Any], endpoint: Any) -> None:
    from dataclasses import replace

    from airflow_mlops.core.rollout import BlueGreenStrategy, RolloutState
    from airflow_mlops.operators.rollout import ModelRolloutOperator
    from airflow_mlops.rollout.approval import approve_rollout

    good, good2 = stack["versions"]["good"], stack["versions"]["good2"]
    config = {"kind": "local", "name": endpoint.name, "model": MODEL, "tracking_uri": stack["uri"]}
    strategy = BlueGreenStrategy(preview_pause_s=1, auto_promote=False, scale_down_delay_s=1)
    state = RolloutState(owner="d/r/t", model=MODEL, stable=good, candidate=good2, strategy=strategy.to_dict())
    endpoint.deploy_candidate(state)
    endpoint.apply_weight(replace(state, step=1, weight=100))
    with pytest.raises(ValueError, match="no rollout of version 9"):
        approve_rollout(config, "9", "alice")
    assert approve_rollout(config, good2, "alice").history[-1]["by"] == "alice"
    op = ModelRolloutOperator(task_id="t", model_name=MODEL, candidate_version=good2, strategy=strategy,
                              target=config)
    op._target_config, op._owner = config, "d/r/t"  # what execute() sets before the worker is killed
    op.on_kill()
    after = endpoint.read_state()
    assert after.phase == "aborted" and after.weight == 0 and after.approved
    assert endpoint.serving_version() == good


def test_trigger_on_kill_rolls_back_and_trigger_errors_become_events(stack: dict[str, Any], endpoint: Any) -> None:
    """Killed while deferred, the trigger (not the operator) runs: it rolls back what its task owns, nothing else.
    A failure inside the trigger reaches the worker as an error event, so the operator can roll back."""
    import asyncio
    from dataclasses import replace

    from airflow_mlops.core.rollout import CanaryStrategy, RolloutState
    from airflow_mlops.triggers.rollout import RolloutTrigger

    good, good2 = stack["versions"]["good"], stack["versions"]["good2"]
    config = {"kind": "local", "name": endpoint.name, "model": MODEL, "tracking_uri": stack["uri"]}
    state = RolloutState(owner="d/r/t", model=MODEL, stable=good, candidate=good2,
                         strategy=CanaryStrategy(steps=(50, 100), pause_s=5).to_dict())
    endpoint.deploy_candidate(state)
    endpoint.apply_weight(replace(state, step=0, weight=50))
    asyncio.run(RolloutTrigger(config, owner="someone/else/t").on_kill())
    asyncio.run(RolloutTrigger(config, owner="d/r/t", on_kill="leave").on_kill())
    assert endpoint.read_state().weight == 50 and endpoint.read_state().phase == "progressing"
    asyncio.run(RolloutTrigger(config, owner="d/r/t").on_kill())
    after = endpoint.read_state()
    assert after.phase == "aborted" and after.weight == 0 and endpoint.serving_version() == good
    assert "killed while deferred" in (after.reason or "")

    async def first_event(trigger: RolloutTrigger) -> Any:
        async for event in trigger.run():
            return event.payload

    broken = RolloutTrigger({**config, "no_such_option": 1}, owner="d/r/t")
    event = asyncio.run(first_event(broken))
    assert event["status"] == "error" and "rollout trigger failed" in event["message"]
