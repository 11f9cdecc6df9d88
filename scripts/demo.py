"""`make demo`: the whole model lifecycle on the embedded stack, then a summary and where to look.

1. train (data checks, training, model checks, register, compare, promote @challenger) -> first deployment;
2. train again with a small hyperparameter fan-out -> a canary rollout under live traffic reaches 100%;
3. train a candidate with an injected serving fault (offline checks pass) -> the canary catches the 5xx and
   rolls back automatically; @champion stays where it was;
4. the drift monitor compares the traffic the router logged with the champion's training data;
5. batch inference scores the held-out rows with @champion (pinned to its version) and publishes the scores.

Airflow runs on SQLite under $AIRFLOW_HOME, MLflow on SQLite under $MLOPS_HOME/mlflow, steps as local
processes, the rollout target is the local router with MLflow scoring servers. The Makefile sets those
variables to a git-ignored folder in the checkout. Each `make demo` starts from a fresh MLflow store.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DAGS = ROOT / "dags"
MODEL = "breast_cancer_classifier"  # the reference rollout DAG's model
# Short pauses and analysis windows so the demo takes minutes; the DAG's defaults are production-like.
CANARY = {"canary_steps": [20, 50, 100], "pause_seconds": 8, "analysis": {"local": {"metrics": [
    {"name": "error_rate", "provider": "router", "query": "error_ratio", "interval_s": 2, "count": 3,
     "success_condition": "result <= stable * 1.5 + 0.01", "failure_limit": 0, "inconclusive_limit": 2},
    {"name": "p95_latency", "provider": "router", "query": "latency_p95_seconds", "interval_s": 2, "count": 3,
     "success_condition": "result <= stable * 3 + 0.25", "failure_limit": 1, "inconclusive_limit": 2}]}}}


def ensure_airflow_db() -> None:
    """Create or upgrade the Airflow metadata DB (SQLite) of the embedded stack."""
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, stdout=subprocess.DEVNULL)


def load_dag(name: str):
    path = DAGS / f"{name}.py"
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


def table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def print_checks(tis: dict) -> None:
    """The data and model checks: each task's result table (from its result JSON) and its report."""
    import json

    from airflow_mlops.core.checks import format_table

    for task_id in ("data_checks", "model_checks"):
        if task_id not in tis:
            continue
        xcom = tis[task_id].xcom_pull(task_ids=task_id) or {}
        if not xcom.get("json_uri"):
            continue
        with open(xcom["json_uri"], encoding="utf-8") as fh:
            result = json.load(fh)
        verdict = "passed" if xcom["passed"] else f"FAILED: {', '.join(xcom['failed_checks'])}"
        print(f"\n== {task_id}: {' + '.join(result['suites'] + result['checks_requested'])} ({verdict}, "
              f"gate {xcom['gate']}) ==")
        print(format_table(result["checks"], fail_on_warning=bool(result.get("fail_on_warning"))))
        print(f"  report  {xcom['report_uri']}")
        print(f"  result  {xcom['json_uri']}")


def print_decision(tis: dict) -> None:
    """The promotion decision (challenger vs champion), every reason, and the alias it moved."""
    decision = tis["compare"].xcom_pull(task_ids="compare") if "compare" in tis else None
    if not decision:
        return
    champion = decision.get("champion_version")
    print(f"\n== compare: {decision['model_name']} v{decision['challenger_version']} vs "
          f"{'champion v' + champion if champion else 'no champion'}: "
          f"{'PROMOTE' if decision['promote'] else 'REJECT'}")
    for reason in decision["reasons"]:
        print(f"  - {reason}")
    promoted = tis["promote"].xcom_pull(task_ids="promote") if str(tis["promote"].state) == "success" else None
    if promoted:
        print(f"  {promoted['name']}@{promoted['alias']} -> v{promoted['version']}"
              + (f" (previous v{promoted['previous_version']} kept as @{promoted['rollback_alias']})"
                 if promoted.get("previous_version") else "")
              + f"; Asset event x-mlflow://{promoted['name']}@{promoted['alias']}")
    else:
        print(f"  promote: {tis['promote'].state}")


def live_traffic(url: str, test_uri: str, rate: float = 25.0):
    """Live traffic for the rollout: real held-out rows, one per request, at a steady rate, from a thread.

    Requests take the shape the serving @champion's signature declares (its columns, in order, its dtypes).
    """
    import pandas as pd

    from airflow_mlops.hooks.mlflow import MlflowHook
    from airflow_mlops.rollout.traffic import TrafficGenerator
    from airflow_mlops.steps.signature import InputContract

    with MlflowHook().active_tracking_uri():
        model_input = InputContract.from_model(f"models:/{MODEL}@champion")
    if model_input is None:
        raise SystemExit(f"{MODEL}@champion has no signature: the trainer always logs one")
    rows = pd.read_parquet(test_uri).drop(columns=["target"])
    return TrafficGenerator.from_frame(url, rows, model_input, rate=rate)


def tis_of(run) -> dict:
    return {ti.task_id: ti for ti in run.get_task_instances() if ti.map_index < 1}


def train(conf: dict, label: str) -> tuple[dict, dict]:
    """One training pipeline run; returns (task instances, summary)."""
    print(f"\n#### {label}: mlops_training_pipeline {json.dumps(conf)}")
    run = load_dag("mlops_training_pipeline").test(run_conf=conf)
    tis = tis_of(run)
    states = {task_id: str(ti.state) for task_id, ti in tis.items()}
    print("task states: " + ", ".join(f"{k}={v}" for k, v in states.items()))
    if str(run.state) != "success":
        raise SystemExit(f"training run {run.run_id} ended {run.state}")
    print_checks(tis)
    print_decision(tis)
    best = tis["select_best"].xcom_pull(task_ids="select_best")
    version = tis["register"].xcom_pull(task_ids="register")
    promoted = str(tis["promote"].state) == "success"
    verdicts = {task_id: (tis[task_id].xcom_pull(task_ids=task_id) or {}).get("passed")
                for task_id in ("data_checks", "model_checks") if task_id in tis}
    checks = ("checks passed" if verdicts and all(verdicts.values())
              else "checks " + ", ".join(f"{k} {'passed' if v else 'FAILED'}" for k, v in verdicts.items()))
    return tis, {"version": version["version"], "best": best, "promoted": promoted, "checks": checks,
                 "accuracy": best["metrics"]["test_accuracy"]}


def rollout(conf: dict, label: str, test_uri: str | None) -> dict:
    """One rollout run, under live traffic when something already serves; returns the record."""
    from airflow_mlops.core.lineage import endpoint_name
    from airflow_mlops.hooks.mlflow import MlflowHook
    from airflow_mlops.rollout.targets.local import LocalTarget

    print(f"\n#### {label}: mlops_progressive_rollout")
    dag = load_dag("mlops_progressive_rollout")
    target = LocalTarget(endpoint_name(MODEL), MODEL, MlflowHook().tracking_uri)
    if target.serving_version() and test_uri:
        with live_traffic(target.router_url, test_uri) as traffic:
            run = dag.test(run_conf={**CANARY, **conf})
        print(f"traffic during the rollout: {traffic.describe()}")
    else:
        run, traffic = dag.test(run_conf={**CANARY, **conf}), None
    tis = tis_of(run)
    record = tis["rollout"].xcom_pull(task_ids="rollout") or tis["rollout"].xcom_pull(task_ids="rollout",
                                                                                       key="rollout") or {}
    return {"state": str(tis["rollout"].state), "record": record, "traffic": traffic, "target": target}


def champion() -> str | None:
    from airflow_mlops.hooks.mlflow import MlflowHook

    return MlflowHook().get_alias_version(MODEL, "champion")


def stop_serving(target) -> None:
    """Stop the router and scoring servers the demo started; routing table and inference log stay on disk."""
    root = Path(target.root)
    for record in (root / "servers").glob("*.json"):
        target.stop_server(record.stem)
    router = root / "router.json"
    if router.is_file():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(json.loads(router.read_text())["pid"], signal.SIGTERM)


def describe_alerts(path: Path) -> str:
    """What the laptop's file notifier received (the mlops_alerts default channel)."""
    if not path.is_file():
        return f"none ({path} not written)"
    events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    kinds = ", ".join(sorted({str(e.get("event")) for e in events}))
    last = events[-1] if events else {}
    return (f"{len(events)} in {path} ({kinds}); last: {last.get('event')} v{last.get('version')}: "
            f"{str(last.get('reason', ''))[:90]}")


def main() -> int:
    home = os.environ.get("MLOPS_HOME")
    if not home:
        print("run this through `make demo` (it sets MLOPS_HOME and AIRFLOW_HOME)", file=sys.stderr)
        return 2
    began = time.monotonic()
    ensure_airflow_db()
    fresh_stack(Path(home))
    framework = os.environ.get("DEMO_FRAMEWORK", "sklearn")
    rows: list[tuple[str, str]] = []

    tis, first = train({"framework": framework}, "1/7 train a first model")
    data = tis["prepare_data"].xcom_pull(task_ids="prepare_data")
    rows.append(("train #1", f"v{first['version']} test_accuracy {first['accuracy']:.4f}, {first['checks']}, "
                             f"{'@challenger' if first['promoted'] else 'rejected'}"))
    deployed = rollout({}, "2/7 first deployment of @challenger", None)
    rows.append(("rollout #1", f"first deployment: v{deployed['target'].serving_version()} serves 100%, "
                               f"@champion = v{champion()}"))

    grid = [{"learning_rate": 0.01}, {"learning_rate": 0.03}]
    _, second = train({"framework": framework, "hp_grid": grid}, "3/7 retrain with a hyperparameter fan-out")
    picked = grid[second["best"]["fanout"]["picked"]]
    rows.append(("train #2 (fan-out of 2)", f"v{second['version']}: best of {len(grid)} is {picked}, test_accuracy "
                                            f"{second['accuracy']:.4f}, "
                                            f"{'@challenger' if second['promoted'] else 'rejected'}"))
    good = rollout({}, "4/7 canary of the new @challenger under live traffic", data["test_uri"])
    rows.append(("rollout #2 (canary)", outcome(good)))

    _, third = train({"framework": framework, "hp_grid": [picked], "fault_percent": 30},
                     "5/7 train a candidate with an injected serving fault (30% HTTP 500; offline it is fine)")
    rows.append(("train #3 (fault 30%)", f"v{third['version']}: test_accuracy {third['accuracy']:.4f}, "
                                          f"{third['checks']}, {'@challenger' if third['promoted'] else 'rejected'}"))
    bad = rollout({}, "6/7 canary of the faulty @challenger under live traffic", data["test_uri"])
    rows.append(("rollout #3 (canary)", outcome(bad)))

    print("\n#### 7/7 drift monitor on the traffic the router logged, then batch inference with @champion")
    drift_run = load_dag("mlops_drift_monitor").test(run_conf={"model_name": MODEL, "min_rows": 50})
    drift_tis = tis_of(drift_run)
    drift = drift_tis["drift"].xcom_pull(task_ids="drift") if "drift" in drift_tis else None
    collected = drift_tis["collect"].xcom_pull(task_ids="collect") if "collect" in drift_tis else None
    rows.append(("drift monitor", (f"{collected['rows']} logged requests vs training data: "
                                   + ("no drift" if drift["passed"] else f"DRIFT in {drift['failed_checks']}")
                                   + f" (report {drift['report_uri']})") if drift and collected
                 else f"run {drift_run.state}"))
    target = bad["target"]
    stop_serving(target)
    batch = batch_inference(data["test_uri"])
    rows.append(("batch inference", describe_batch(batch)))
    rows.append(("alerts", describe_alerts(Path(home) / "alerts" / "alerts.jsonl")))

    print("\n== airflow-mlops demo: summary ==")
    print(table([("wall time", f"{time.monotonic() - began:.0f}s"),
                 ("data", f"{data['data_version']} ({data['rows']['train']} train / {data['rows']['test']} test)"),
                 *rows,
                 ("@champion now", f"v{champion()} (MLflow {MODEL})"),
                 ("MLflow tracking", first["best"]["mlflow_tracking_uri"])]))
    print("\nlook at the results:")
    print("  make mlflow-ui    # MLflow UI on http://127.0.0.1:5000: runs, check reports, versions, aliases, "
          "mlops.rollout.* tags")
    print("  make airflow-ui   # Airflow standalone on http://127.0.0.1:8080 with these DAGs and their runs")
    print(f"  rollout target    {target.root} (routes.json, state.json, inference.jsonl, server logs)")
    print(f"  check reports     {home}/artifacts/runs/mlops_training_pipeline/*/*checks/outputs/")
    ok = good["state"] == "success" and bad["state"] == "failed" and champion() == second["version"]
    if not ok:
        print("demo outcome unexpected: the good canary should reach 100% and the faulty one roll back",
              file=sys.stderr)
    if batch["state"] != "success" or (batch["score"] or {}).get("current", {}).get("version") != champion():
        print("demo outcome unexpected: batch inference should score the held-out rows with @champion",
              file=sys.stderr)
        ok = False
    return 0 if ok else 1


def batch_inference(input_uri: str) -> dict:
    """The batch-inference DAG against @champion on the held-out rows; prints what it scored and where it went."""
    print(f"\n#### batch inference: mlops_batch_inference with {MODEL}@champion on {input_uri}")
    run = load_dag("mlops_batch_inference").test(run_conf={"model_name": MODEL, "input_uri": input_uri,
                                                            "mode": "champion"})
    tis = tis_of(run)
    score = tis["score"].xcom_pull(task_ids="score") if "score" in tis else None
    published = tis["publish"].xcom_pull(task_ids="publish") if "publish" in tis else None
    print("task states: " + ", ".join(f"{k}={ti.state}" for k, ti in tis.items()))
    if score:
        current = score["current"]
        print(f"  {current['model_uri']} -> version {current['version']} ({current['pinned_uri']}), input "
              f"{current.get('input') or 'as the batch has it'}")
        print(f"  {current['rows']} rows scored, predicted classes {current['prediction_counts']}")
        print(f"  scores   {current['output_uri']}")
    if published:
        print(f"  pointer  {published['pointer_uri']} -> version {published['version']} (consumers read this)")
    return {"state": str(run.state), "score": score, "published": published}


def describe_batch(batch: dict) -> str:
    current = (batch["score"] or {}).get("current")
    if batch["state"] != "success" or not current:
        return f"run {batch['state']}"
    pointer = (batch["published"] or {}).get("pointer_uri", "?")
    return (f"{current['rows']} held-out rows scored by @champion = v{current['version']}: {current['output_uri']}"
            f" (consumers: {pointer})")


def outcome(result: dict) -> str:
    record = result["record"]
    weights = " -> ".join(str(h.get("weight")) for h in record.get("history", []))
    served = result["target"].serving_version()
    if record.get("outcome") == "promoted":
        return f"v{record['candidate']} PROMOTED ({weights}%): serves 100%, @champion = v{champion()}"
    return (f"v{record.get('candidate')} ROLLED BACK ({weights}%): {record.get('reason')}; v{served} serves 100%, "
            f"@champion = v{champion()}")


def fresh_stack(home: Path) -> None:
    """A fresh MLflow store, artifacts and rollout target: stop what a previous demo left running, then wipe."""
    import shutil

    from airflow_mlops.rollout.targets.local import LocalTarget

    rollout_root = home / "rollout"
    if rollout_root.is_dir():
        for endpoint in rollout_root.iterdir():
            LocalTarget(endpoint.name, MODEL, "sqlite://", root=str(endpoint)).cleanup()
    for part in ("mlflow", "artifacts", "rollout"):
        shutil.rmtree(home / part, ignore_errors=True)
    print(f"fresh embedded stack under {home}")


if __name__ == "__main__":
    sys.exit(main())
