"""Batch inference end to end: real MLflow models on SQLite, the real scoring step, the DAG under dag.test()."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.dagfiles import load_dag

pytestmark = pytest.mark.slow
MODEL = "batch_clf"


def _frame() -> Any:
    from sklearn import datasets

    frame = datasets.load_breast_cancer(as_frame=True).frame
    frame.columns = [str(c).replace(" ", "_") for c in frame.columns]
    return frame


def _register(flip_labels: bool, alias: str, max_iter: int = 500) -> str:
    """Train a real scikit-learn model (optionally on inverted labels: a bad candidate), register it, alias it."""
    import mlflow
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from airflow_mlops.hooks.mlflow import MlflowHook

    frame = _frame()
    x, y = frame.drop(columns=["target"]), frame["target"]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter)).fit(x, 1 - y if flip_labels else y)
    hook = MlflowHook()
    experiment_id = hook.get_or_create_experiment("batch_inference_test")
    with hook.active_tracking_uri(), mlflow.start_run(experiment_id=experiment_id):
        info = mlflow.sklearn.log_model(model, name="model", pyfunc_predict_fn="predict_proba",
                                        input_example=x.head(3))
    client = hook.get_client()
    version = hook.register_model_version(MODEL, info.model_uri, info.run_id, {"test.alias": alias})
    client.set_registered_model_alias(MODEL, alias, version.version)
    return str(version.version)


@pytest.fixture(scope="module")
def stack(airflow_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One embedded stack (MLflow store, artifacts) for the module: registering real models takes seconds each."""
    home = tmp_path_factory.mktemp("batch-mlops")
    saved = {k: os.environ.get(k) for k in ("MLOPS_HOME", "MLFLOW_TRACKING_URI")}
    os.environ["MLOPS_HOME"] = str(home)
    os.environ["MLFLOW_TRACKING_URI"] = ""
    yield home
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def models(stack: Path) -> dict[str, str]:
    """champion: a good model; challenger: a near-identical retrain; rogue: trained on inverted labels."""
    return {"champion": _register(False, "champion"), "challenger": _register(False, "challenger", max_iter=400),
            "rogue": _register(True, "rogue")}


@pytest.fixture
def mlops_home(stack: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This module's stack (overrides the per-test one from tests/conftest.py)."""
    monkeypatch.setenv("MLOPS_HOME", str(stack))
    return stack


def _step(args: list[str], env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **env_extra}
    return subprocess.run([sys.executable, "-m", "airflow_mlops.steps.batch_score", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def test_step_pins_aliases_scores_and_compares(models: dict[str, str], mlops_home: Path, tmp_path: Path) -> None:
    from airflow_mlops.hooks.mlflow import MlflowHook

    batch = tmp_path / "batch.parquet"
    frame = _frame().reset_index().rename(columns={"index": "row_id"})
    frame.to_parquet(batch)
    env = {**MlflowHook().process_env(), "MLOPS_OUTPUT_URI": str(tmp_path / "out"),
           "MLOPS_RESULT_URI": str(tmp_path / "result.json")}
    proc = _step(["--model-uri", f"models:/{MODEL}@champion", "--candidate-uri", f"models:/{MODEL}@rogue",
                  "--input-uri", str(batch), "--label", "target", "--id-column", "row_id"], env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["current"]["version"] == models["champion"]
    assert result["current"]["pinned_uri"] == f"models:/{MODEL}/{models['champion']}"
    assert result["candidate"]["version"] == models["rogue"]
    import pandas as pd

    scores = pd.read_parquet(result["current"]["output_uri"])
    assert list(scores.columns) == ["row_id", "prediction", "proba_0", "proba_1"]
    assert len(scores) == len(frame) and scores["row_id"].tolist() == frame["row_id"].tolist()
    accuracy = (scores["prediction"].astype(int) == frame["target"]).mean()
    assert accuracy > 0.95, accuracy
    # The rogue model was trained on inverted labels: it disagrees on nearly every row.
    assert result["comparison"]["agreement"] < 0.1
    assert result["comparison"]["mean_abs_proba_diff"] > 0.5


@pytest.mark.parametrize(("args", "message"), [
    (["--model-uri", f"models:/{MODEL}@nobody"], "has no alias 'nobody'"),
    (["--model-uri", "runs:/abc/model"], "must be models:/<name>@<alias>"),
    (["--model-uri", f"models:/{MODEL}@champion", "--input-uri", "/nonexistent/batch.parquet"], "does not exist"),
    (["--model-uri", f"models:/{MODEL}@champion", "--input-uri", "EMPTY"], "has no rows"),
    (["--model-uri", f"models:/{MODEL}@champion", "--input-uri", "NARROW"], "input schema"),
])
def test_step_rejects_bad_input_with_exit_2(models: dict[str, str], tmp_path: Path, args: list[str],
                                            message: str, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """The step's entry point in-process (a subprocess per case would only add interpreter start-ups)."""
    from airflow_mlops.hooks.mlflow import MlflowHook
    from airflow_mlops.steps import batch_score

    frame = _frame()
    frame.head(0).to_parquet(tmp_path / "empty.parquet")
    frame[["mean_radius", "target"]].to_parquet(tmp_path / "narrow.parquet")
    args = [{"EMPTY": str(tmp_path / "empty.parquet"), "NARROW": str(tmp_path / "narrow.parquet")}.get(a, a)
            for a in args]
    if "--input-uri" not in args:
        args += ["--sample-dataset", "breast_cancer"]
    for key, value in {**MlflowHook().process_env(), "MLOPS_OUTPUT_URI": str(tmp_path / "out")}.items():
        monkeypatch.setenv(key, value)
    assert batch_score.main(args) == 2
    assert message in capsys.readouterr().err


def _run(conf: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    dag = load_dag("mlops_batch_inference")
    run = dag.test(run_conf={"model_name": MODEL, **conf})
    tis = {ti.task_id: ti for ti in run.get_task_instances()}
    return run, tis


def test_dag_champion_then_blue_green_switch_and_hold_back(models: dict[str, str], mlops_home: Path) -> None:
    pointer = mlops_home / "artifacts" / "serving" / "batch" / MODEL / "current.json"

    run, tis = _run({"mode": "champion"})
    assert {k: str(v.state) for k, v in tis.items()} == {"score": "success", "publish": "success"}
    first = json.loads(pointer.read_text())
    assert first["version"] == models["champion"] and first["previous"] is None
    assert Path(first["output_uri"]).is_file()

    # A near-identical retrain agrees: consumers switch to its output; the old pointer is kept for rollback.
    run, tis = _run({"mode": "blue_green", "candidate_alias": "challenger"})
    assert str(run.state) == "success"
    published = tis["publish"].xcom_pull(task_ids="publish")
    assert published["switched"] is True and published["version"] == models["challenger"]
    second = json.loads(pointer.read_text())
    assert second["version"] == models["challenger"]
    assert second["previous"]["version"] == models["champion"]

    # A candidate that disagrees is held back: consumers keep the champion's output of this batch.
    run, tis = _run({"mode": "blue_green", "candidate_alias": "rogue"})
    assert str(run.state) == "success"
    published = tis["publish"].xcom_pull(task_ids="publish")
    assert published["switched"] is False and published["version"] == models["champion"]
    assert any("agreement" in r for r in published["reasons"])
    assert json.loads(pointer.read_text())["version"] == models["champion"]

    # on_disagreement=fail: same publication, and the run fails so someone looks.
    run, tis = _run({"mode": "blue_green", "candidate_alias": "rogue", "on_disagreement": "fail"})
    assert str(tis["publish"].state) == "failed"
    assert json.loads(pointer.read_text())["version"] == models["champion"]
