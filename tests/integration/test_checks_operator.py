"""The checks operator's gate modes under dag.test(), with the real step in the pinned checks venv and MLflow."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from tests.dagfiles import load_dag
from tests.integration.test_checks_step import clean_frame

pytestmark = pytest.mark.slow


@pytest.fixture
def dirty_uri(tmp_path: Path) -> str:
    frame = clean_frame()
    path = tmp_path / "dirty.parquet"
    pd.concat([frame, frame.iloc[:80]], ignore_index=True).to_parquet(path, index=False)  # 17% duplicates
    return str(path)


def run_gate(gate: str, data_uri: str, **conf: str):
    run = load_dag("checks_gate_test").test(run_conf={"gate": gate, "data_uri": data_uri, **conf})
    tis = {ti.task_id: ti for ti in run.get_task_instances()}
    return run, {k: str(v.state) for k, v in tis.items()}, tis["checks"].xcom_pull(task_ids="checks")


def test_gate_fail_fails_the_task_listing_failed_conditions(airflow_db: Path, mlops_home: Path, dirty_uri: str,
                                                           capfd: pytest.CaptureFixture[str]) -> None:
    _, states, xcom = run_gate("fail", dirty_uri)
    assert states == {"checks": "failed", "after": "upstream_failed", "last": "upstream_failed"}
    out = capfd.readouterr().out
    assert "1 check(s) failed: data_duplicates: Duplicate data ratio is less or equal to 5%" in out
    assert re.search(r"check\s+\| status\s+\| conditions\s+\| key values", out)  # the log table
    assert re.search(r"data_duplicates\s+\| FAILED", out)
    assert xcom["passed"] is False and xcom["failed_checks"] == ["data_duplicates"]
    assert Path(xcom["report_uri"]).is_file()


def test_gate_skip_downstream_skips_and_records_its_xcom(airflow_db: Path, mlops_home: Path, dirty_uri: str) -> None:
    _, states, xcom = run_gate("skip_downstream", dirty_uri)
    assert states == {"checks": "success", "after": "skipped", "last": "skipped"}
    assert xcom["passed"] is False and xcom["failed_checks"] == ["data_duplicates"]
    assert xcom["gate"] == "skip_downstream" and Path(xcom["json_uri"]).is_file()


def test_gate_warn_succeeds_with_warnings(airflow_db: Path, mlops_home: Path, dirty_uri: str,
                                          capfd: pytest.CaptureFixture[str]) -> None:
    _, states, xcom = run_gate("warn", dirty_uri)
    assert states == {"checks": "success", "after": "success", "last": "success"}
    assert "check failed (gate warn, not blocking): data_duplicates" in capfd.readouterr().out
    assert xcom["passed"] is False


def test_passing_checks_attach_the_report_to_the_mlflow_run(airflow_db: Path, mlops_home: Path,
                                                            tmp_path: Path) -> None:
    import mlflow

    from airflow_mlops.hooks.mlflow import MlflowHook

    clean = tmp_path / "clean.parquet"
    clean_frame().to_parquet(clean, index=False)
    hook = MlflowHook()
    client = hook.get_client()
    experiment = hook.get_or_create_experiment("checks-test")
    run_id = client.create_run(experiment).info.run_id
    run, states, xcom = run_gate("fail", str(clean), mlflow_run_id=run_id)
    assert states == {"checks": "success", "after": "success", "last": "success"}
    assert xcom["passed"] is True and xcom["failed_checks"] == []
    assert {c["name"] for c in xcom["checks"]} == {"data_duplicates", "mixed_nulls", "is_single_value"}
    artifacts = {a.path for a in client.list_artifacts(run_id, "checks/checks")}
    assert artifacts == {"checks/checks/report.html", "checks/checks/result.json"}
    assert client.get_run(run_id).data.tags["mlops.checks.checks"] == "passed"
    ti = next(t for t in run.get_task_instances() if t.task_id == "checks")
    assert ti.xcom_pull(task_ids="checks", key="check_report_url") == f"file://{xcom['report_uri']}"
    assert mlflow.__version__


def drift_inputs(tmp_path: Path, reference: pd.DataFrame, current: pd.DataFrame) -> dict[str, str]:
    """Reference and current data as Parquet, each with the predictions of a fixed model of f0 (run conf)."""
    import numpy as np

    paths = {}
    for name, frame in (("reference", reference), ("current", current)):
        paths[name] = str(tmp_path / f"{name}.parquet")
        frame.to_parquet(paths[name], index=False)
        p1 = 1 / (1 + np.exp(-frame["f0"].to_numpy()))
        paths[f"{name}_predictions"] = str(tmp_path / f"{name}_pred.parquet")
        pd.DataFrame({"y_pred": (p1 > 0.5).astype(int), "proba_0": 1 - p1, "proba_1": p1}).to_parquet(
            paths[f"{name}_predictions"], index=False)
    return paths


def test_drift_operator_flags_shifted_features_and_predictions(airflow_db: Path, mlops_home: Path,
                                                               tmp_path: Path) -> None:

    reference, current = clean_frame(seed=5), clean_frame(seed=6).drop(columns=["target"])
    current["f0"] = current["f0"] + 2.5  # inputs moved, and with them the model's outputs
    paths = drift_inputs(tmp_path, reference, current)
    run = load_dag("checks_drift_test").test(run_conf=paths)
    (ti,) = run.get_task_instances()
    assert str(ti.state) == "success"  # gate warn
    xcom = ti.xcom_pull(task_ids="drift")
    assert xcom["suites"] == ["drift"] and xcom["passed"] is False
    assert xcom["failed_checks"] == ["feature_drift", "prediction_drift"]


def test_a_run_where_no_check_could_run_fails_even_with_gate_warn(airflow_db: Path, mlops_home: Path,
                                                                 tmp_path: Path,
                                                                 capfd: pytest.CaptureFixture[str]) -> None:
    """A crash is not a verdict: the drift DAG's gate is warn, and a drift run in which neither drift check could
    run (5 current rows: deepchecks needs 10) must fail the task, not report "failed checks" to act on."""

    reference, current = clean_frame(seed=5), clean_frame(rows=5, seed=6).drop(columns=["target"])
    paths = drift_inputs(tmp_path, reference, current)
    run = load_dag("checks_drift_test").test(run_conf=paths)
    (ti,) = run.get_task_instances()
    assert str(ti.state) == "failed"  # not success (gate warn), not up_for_retry (the DAG has retries=1)
    out = capfd.readouterr().out
    assert "none of the 2 checks could run, so there is no verdict" in out
    assert 'feature_drift: "Not enough samples to calculate drift score. Minimum 10 samples required.' in out
    assert 'prediction_drift: "Not enough samples to calculate drift score. Minimum 10 samples required.' in out
    xcom = ti.xcom_pull(task_ids="drift")
    assert xcom["passed"] is False and xcom["failed_checks"] == [] and len(xcom["not_run"]) == 2
    assert Path(xcom["report_uri"]).is_file()
