"""The drift monitor end to end under dag.test(): real MLflow lineage, real deepchecks drift, an Asset event."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_mlops.steps import artifacts
from airflow_mlops.steps.train import write_predictions
from tests.dagfiles import load_dag

pytestmark = pytest.mark.slow
MODEL = "drift_clf"


@pytest.fixture
def champion(airflow_db: Path, mlops_home: Path) -> dict[str, Any]:
    """A champion whose training run carries the lineage the training pipeline records (data, predictions)."""
    import mlflow
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from airflow_mlops.hooks.mlflow import MlflowHook
    from airflow_mlops.steps.prepare_data import prepare

    data = prepare("breast_cancer", str(mlops_home / "artifacts"), 0.25, 42)
    train = artifacts.read_parquet(data["train_uri"])
    x, y = train.drop(columns=["target"]), train["target"]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, y)
    predictions = write_predictions(str(mlops_home / "artifacts" / "trainer-out"), "train", y.to_numpy(),
                                    model.predict_proba(x), model.classes_)
    hook = MlflowHook()
    with hook.active_tracking_uri(), mlflow.start_run(experiment_id=hook.get_or_create_experiment("drift")) as run:
        mlflow.set_tags({"mlops.train_uri": data["train_uri"], "mlops.test_uri": data["test_uri"],
                         "mlops.predictions.train": predictions, "mlops.data_version": data["data_version"]})
        info = mlflow.sklearn.log_model(model, name="model", pyfunc_predict_fn="predict_proba")
    version = hook.register_model_version(MODEL, info.model_uri, run.info.run_id, {})
    hook.get_client().set_registered_model_alias(MODEL, "champion", version.version)
    return {"model": model, "data": data, "version": str(version.version)}


def _traffic(path: Path, champion: dict[str, Any], shift: float) -> None:
    """Router-format inference log of the held-out rows scored by the champion; ``shift`` scales two features."""
    test = artifacts.read_parquet(champion["data"]["test_uri"]).drop(columns=["target"])
    for column in ("mean_radius", "worst_radius"):
        test[column] = test[column] * shift
    proba = champion["model"].predict_proba(test)
    now = time.time()
    lines = []
    for start in range(0, len(test), 10):
        chunk = test.iloc[start:start + 10]
        lines.append(json.dumps({
            "ts": now - 60, "backend": "v1", "status": 200, "latency_s": 0.01,
            "request": {"dataframe_split": {"columns": list(chunk.columns), "data": chunk.to_numpy().tolist()}},
            "response": {"predictions": proba[start:start + 10].tolist()}}))
    lines.append(json.dumps({"ts": now - 86400 * 3, "backend": "v1", "status": 200, "request": {"inputs": [[0]]},
                             "response": {"predictions": [[1, 0]]}}))  # outside the window: ignored
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def _events(dag_id: str) -> list[Any]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                               .where(AssetModel.name == "mlops_retraining_requested")
                               .where(AssetEvent.source_dag_id == dag_id)).scalars().all()
        return [dict(e.extra or {}) for e in rows]


def test_no_drift_then_drift_requests_retraining(champion: dict[str, Any], mlops_home: Path) -> None:
    log = mlops_home / "rollout" / "drift-clf" / "inference.jsonl"  # where the local router writes it by default
    dag = load_dag("mlops_drift_monitor")

    _traffic(log, champion, shift=1.0)
    run = dag.test(run_conf={"model_name": MODEL, "min_rows": 100})
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert states == {"reference": "success", "collect": "success", "drift": "success", "drifted": "success",
                      "request_retraining": "skipped"}, states
    tis = {ti.task_id: ti for ti in run.get_task_instances()}
    collected = tis["collect"].xcom_pull(task_ids="collect")
    assert collected["rows"] == len(artifacts.read_parquet(champion["data"]["test_uri"]))
    assert collected["skipped"] == 1  # the request outside the window
    assert tis["drift"].xcom_pull(task_ids="drift")["passed"] is True
    assert _events("mlops_drift_monitor") == []

    # The same traffic with strict thresholds: sampling noise alone now counts as drift. (A fresh DAG object per
    # run from here: seen here, a second dag.test() on the same DAG object kept the previous run's conf.)
    run = load_dag("mlops_drift_monitor").test(run_conf={"model_name": MODEL, "min_rows": 100,
                                                         "feature_drift_threshold": 0.01,
                                                         "prediction_drift_threshold": 0.01})
    tis = {ti.task_id: ti for ti in run.get_task_instances()}
    strict = tis["drift"].xcom_pull(task_ids="drift")
    assert strict["passed"] is False and "feature_drift" in strict["failed_checks"], strict
    assert strict["drift_conditions"]["feature_drift"] == {"max_allowed_numeric_score": 0.01,
                                                           "max_allowed_categorical_score": 0.01}
    assert str(tis["request_retraining"].state) == "success"
    assert len(_events("mlops_drift_monitor")) == 1

    _traffic(log, champion, shift=3.0)
    run = load_dag("mlops_drift_monitor").test(run_conf={"model_name": MODEL, "min_rows": 100})
    tis = {ti.task_id: ti for ti in run.get_task_instances()}
    assert str(tis["request_retraining"].state) == "success"
    findings = tis["drift"].xcom_pull(task_ids="drift")
    assert findings["passed"] is False and findings["failed_checks"]
    assert findings["drift_conditions"] == {  # the DAG's defaults, passed explicitly
        "feature_drift": {"max_allowed_numeric_score": 0.2, "max_allowed_categorical_score": 0.2},
        "prediction_drift": {"max_allowed_drift_score": 0.15}}
    assert Path(findings["report_uri"]).is_file()
    event = _events("mlops_drift_monitor")[-1]
    assert event["model_version"] == champion["version"]
    assert event["failed_checks"] == findings["failed_checks"]
    assert event["reason"].startswith("drift in ") and event["report_uri"] == findings["report_uri"]


def test_unknown_alias_fails_clearly(champion: dict[str, Any]) -> None:
    run = load_dag("mlops_drift_monitor").test(run_conf={"model_name": MODEL, "alias": "nobody"})
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert states["reference"] == "failed"


@pytest.mark.parametrize("value", [0, -0.1, 1.5, "high"])
@pytest.mark.parametrize("param", ["feature_drift_threshold", "prediction_drift_threshold"])
def test_threshold_params_reject_out_of_range_values(airflow_db: Path, param: str, value: Any) -> None:
    from airflow.sdk.definitions.param import ParamValidationError

    params = copy.deepcopy(load_dag("mlops_drift_monitor").params)
    assert params.get_param(param).description
    with pytest.raises(ParamValidationError, match=f"Invalid input for param {param}"):
        params[param] = value


def _rendered_drift_task(**params: Any) -> Any:
    dag = load_dag("mlops_drift_monitor")
    task = dag.get_task("drift")  # a fresh DAG object per load: setting rendered values here is harmless
    context = {"params": {**copy.deepcopy(dag.params).validate(), **params}}
    for name in ("feature_drift_threshold", "prediction_drift_threshold"):
        setattr(task, name, task.render_template(getattr(task, name), context))
    return task


def test_threshold_params_reach_the_step_as_drift_conditions(airflow_db: Path) -> None:
    args = _rendered_drift_task(feature_drift_threshold=0.05, prediction_drift_threshold=0.3).check_args()
    assert json.loads(args[args.index("--drift-conditions") + 1]) == {
        "feature_drift": {"max_allowed_categorical_score": 0.05, "max_allowed_numeric_score": 0.05},
        "prediction_drift": {"max_allowed_drift_score": 0.3}}


def test_a_bad_threshold_that_bypassed_the_form_fails_at_task_start(airflow_db: Path) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException, match=r"feature_drift_threshold: a drift score threshold: a number > 0 "
                                                   r"and <= 1.*\(got '1.5'\)"):
        _rendered_drift_task(feature_drift_threshold=1.5).check_args()


def test_a_bad_literal_threshold_fails_at_parse_time() -> None:
    from airflow_mlops.core.errors import SpecError
    from airflow_mlops.operators.checks import DriftChecksOperator

    with pytest.raises(SpecError, match="prediction_drift_threshold"):
        DriftChecksOperator(task_id="drift", reference_data_uri="a", current_data_uri="b",
                            prediction_drift_threshold=2)
    with pytest.raises(SpecError, match="suite must include 'drift'"):
        DriftChecksOperator(task_id="drift", reference_data_uri="a", current_data_uri="b",
                            suite="train_test_validation", feature_drift_threshold=0.1)
