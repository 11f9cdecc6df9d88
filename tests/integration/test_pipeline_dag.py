"""The reference pipeline end to end under dag.test() on embedded defaults (local runtime, MLflow on SQLite)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.dagfiles import load_dag

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_training_pipeline_registers_a_version_with_lineage(airflow_db: Path, mlops_home: Path) -> None:
    import mlflow
    from sklearn.datasets import load_breast_cancer

    # Data that landed in the artifact store, with its own label name: the dataset_uri param points at it.
    landed = mlops_home / "landing" / "breast-cancer-2026-11.parquet"
    landed.parent.mkdir(parents=True)
    frame = load_breast_cancer(as_frame=True).frame.rename(columns={"target": "diagnosis"})
    frame.to_parquet(landed)
    dag = load_dag("mlops_training_pipeline")
    # A two-point hyperparameter fan-out: two mapped training jobs, the better one goes on.
    run = dag.test(run_conf={"model_name": "pipeline_test_model", "epochs": 5, "dataset_uri": str(landed),
                             "label_column": "diagnosis",
                             "hp_grid": [{"learning_rate": 0.0001}, {"learning_rate": 0.05}]})
    states = sorted((ti.task_id, ti.map_index, str(ti.state)) for ti in run.get_task_instances())
    assert states == sorted([(t, -1, s) for t, s in {
        "prepare_data": "success", "data_checks": "success", "hp_grid": "success", "select_best": "success",
        "model_checks": "success", "register": "success", "compare": "success", "route": "success",
        "approve": "skipped", "promote": "success"}.items()] + [("train", 0, "success"), ("train", 1, "success")])
    tis = {ti.task_id: ti for ti in run.get_task_instances() if ti.map_index < 1}
    data = tis["prepare_data"].xcom_pull(task_ids="prepare_data")
    runs = [tis["train"].xcom_pull(task_ids="train", map_indexes=i) for i in (0, 1)]
    train = tis["select_best"].xcom_pull(task_ids="select_best")
    assert len({r["mlflow_run_id"] for r in runs}) == 2  # each grid point has its own MLflow run
    scores = [r["metrics"]["test_accuracy"] for r in runs]
    assert train["fanout"] == {"runs": 2, "picked": scores.index(max(scores)), "metric": "test_accuracy"}
    assert train["mlflow_run_id"] == runs[train["fanout"]["picked"]]["mlflow_run_id"]
    registered = tis["register"].xcom_pull(task_ids="register")
    # No champion yet and both checks passed: the policy promotes the first version to the challenger alias.
    decision = tis["compare"].xcom_pull(task_ids="compare")
    assert decision["promote"] and decision["challenger_version"] == registered["version"], decision["reasons"]
    assert registered["checks"] == {"data_checks": True, "model_checks": True}
    assert tis["promote"].xcom_pull(task_ids="promote")["version"] == registered["version"]

    # Everything lives in the embedded stack under MLOPS_HOME.
    assert data["source_uri"] == str(landed) and data["label"] == "diagnosis"
    assert data["dataset"] == "breast-cancer-2026-11" and data["rows"] == {"train": 426, "test": 143}
    assert data["train_uri"].startswith(str(mlops_home / "artifacts"))
    assert train["mlflow_tracking_uri"] == f"sqlite:///{mlops_home}/mlflow/mlflow.db"
    assert Path(train["predictions"]["test"]).is_file()
    assert train["checkpoint_uri"].endswith(f"/train.{train['fanout']['picked']}/checkpoints")
    assert train["mlflow_run_url"].endswith(f"/runs/{train['mlflow_run_id']}")

    client = mlflow.MlflowClient(train["mlflow_tracking_uri"])
    run_info = client.get_run(train["mlflow_run_id"])
    assert run_info.data.params["epochs"] == "5"
    assert run_info.data.params["learning_rate"] == str([0.0001, 0.05][train["fanout"]["picked"]])
    assert run_info.data.tags["mlops.airflow.dag_id"] == "mlops_training_pipeline"
    assert run_info.data.tags["mlops.airflow.run_id"] == run.run_id
    assert run_info.data.tags["mlops.data_version"] == data["data_version"]
    assert run_info.info.experiment_id == train["mlflow_experiment_id"]
    assert client.get_experiment(run_info.info.experiment_id).name == "pipeline_test_model"

    version = client.get_model_version("pipeline_test_model", registered["version"])
    assert version.status == "READY" and version.run_id == train["mlflow_run_id"]
    for key in ("mlops.data_version", "mlops.params_hash", "mlops.airflow.dag_id", "mlops.airflow.run_id",
                "mlops.training_run_id"):
        assert version.tags.get(key), f"lineage tag {key} missing: {version.tags}"
    assert version.tags["mlops.data_version"] == data["data_version"]
    assert "mlops.git_sha" in version.tags  # this checkout is a git repository

    # A retry of the register task reuses the version this run made, never a second one.
    from airflow_mlops.hooks.mlflow import MlflowHook

    again = MlflowHook().register_model_version("pipeline_test_model", train["model_uri"], train["mlflow_run_id"],
                                                registered["tags"])
    assert again.version == version.version
    assert len(client.search_model_versions("name = 'pipeline_test_model'")) == 1
