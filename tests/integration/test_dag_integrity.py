"""Every DAG file imports cleanly, follows the house rules and imports nothing heavy at parse time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAG_FILES = sorted((ROOT / "dags").glob("*.py"))
HEAVY = ("mlflow", "deepchecks", "sklearn", "torch", "pandas", "boto3", "pyarrow", "kubernetes")

PROBE = """
import importlib.util, json, sys
path = sys.argv[1]
spec = importlib.util.spec_from_file_location("dag_under_test", path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
from airflow.sdk import DAG
dags = [v for v in vars(module).values() if isinstance(v, DAG)]
heavy = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
out = []
for dag in dags:
    tasks = [{"task_id": t.task_id, "owner": t.owner, "retries": t.retries} for t in dag.tasks]
    out.append({"dag_id": dag.dag_id, "tags": sorted(dag.tags), "doc_md": bool(dag.doc_md), "tasks": tasks})
print(json.dumps({"dags": out, "heavy": heavy}))
"""


def test_there_are_dags() -> None:
    assert DAG_FILES, "dags/ is empty"


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_imports_and_follows_rules(path: Path) -> None:
    code = f"HEAVY = {HEAVY!r}\n" + PROBE
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{path.name} failed to import:\n{proc.stderr[-3000:]}"
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["dags"], f"{path.name} defines no DAG"
    assert report["heavy"] == [], f"{path.name} imports heavy modules at parse time: {report['heavy'][:10]}"
    for dag in report["dags"]:
        assert dag["tags"], f"{dag['dag_id']} has no tags"
        assert dag["doc_md"], f"{dag['dag_id']} has no doc_md"
        for task in dag["tasks"]:
            assert task["owner"] and task["owner"] != "airflow", f"{dag['dag_id']}.{task['task_id']}: set an owner"
            assert task["retries"] >= 1, f"{dag['dag_id']}.{task['task_id']}: set retries"


def test_dagbag_has_no_import_errors(airflow_db: Path) -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    assert "mlops_training_pipeline" in bag.dag_ids


def test_operator_modules_import_nothing_heavy() -> None:
    code = ("import sys\nimport airflow_mlops.operators.step, airflow_mlops.operators.training, "
            "airflow_mlops.operators.registry, airflow_mlops.links.mlflow, airflow_mlops.hooks.mlflow, "
            "airflow_mlops.operators.checks, airflow_mlops.links.checks, airflow_mlops.runtime.checks_env\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
