"""`make demo`: run the reference pipeline end to end on the embedded stack and print where to look.

Airflow runs on SQLite under $AIRFLOW_HOME, MLflow on SQLite under $MLOPS_HOME/mlflow, steps as local
processes. The Makefile sets those variables to a git-ignored folder in the checkout.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DAG_FILE = ROOT / "dags" / "mlops_training_pipeline.py"


def ensure_airflow_db() -> None:
    """Create or upgrade the Airflow metadata DB (SQLite) of the embedded stack."""
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, stdout=subprocess.DEVNULL)


def load_dag(path: Path):
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


def main() -> int:
    home = os.environ.get("MLOPS_HOME")
    if not home:
        print("run this through `make demo` (it sets MLOPS_HOME and AIRFLOW_HOME)", file=sys.stderr)
        return 2
    began = time.monotonic()
    ensure_airflow_db()
    dag = load_dag(DAG_FILE)
    print(f"running {dag.dag_id} with dag.test() on the embedded stack ({home})")
    run = dag.test(run_conf={"framework": os.environ.get("DEMO_FRAMEWORK", "sklearn")})
    tis = {ti.task_id: ti for ti in run.get_task_instances()}
    states = {task_id: str(ti.state) for task_id, ti in tis.items()}
    print("\ntask states: " + ", ".join(f"{k}={v}" for k, v in states.items()))
    if str(run.state) != "success":
        print(f"DAG run {run.run_id} ended {run.state}", file=sys.stderr)
        return 1
    data = tis["prepare_data"].xcom_pull(task_ids="prepare_data")
    train = tis["train"].xcom_pull(task_ids="train")
    version = tis["register"].xcom_pull(task_ids="register")
    metrics = train["metrics"]
    print("\n== airflow-mlops demo: summary ==")
    print(table([
        ("DAG run", f"{run.dag_id} / {run.run_id} ({run.state}) in {time.monotonic() - began:.0f}s"),
        ("data version", f"{data['data_version']} ({data['rows']['train']} train / {data['rows']['test']} test rows)"),
        ("train data", data["train_uri"]),
        ("trainer", f"{train['framework']} on {train['device']}, {train['epochs']} epochs"),
        ("MLflow tracking", train["mlflow_tracking_uri"]),
        ("MLflow run", f"{train['mlflow_run_id']} (experiment {train['mlflow_experiment_id']})"),
        ("MLflow run URL", f"{train.get('mlflow_run_url')} (after `make mlflow-ui`)"),
        ("registered model", f"{version['model_name']} version {version['version']} ({version['model_uri']})"),
        ("predictions", train["predictions"].get("test", "-")),
        *[(f"metric {k}", f"{v:.4f}") for k, v in sorted(metrics.items()) if k.startswith("test_")],
    ]))
    print_checks(tis)
    print_decision(tis)
    print("\nlook at the results:")
    print("  make mlflow-ui    # MLflow UI on http://127.0.0.1:5000 (runs, model versions, lineage tags)")
    print("  make airflow-ui   # Airflow standalone on http://127.0.0.1:8080 with these DAGs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
