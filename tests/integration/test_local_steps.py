"""The real trainer and data steps in subprocesses through the local runtime, with real MLflow on SQLite."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from airflow_mlops.core.gpu import GpuSpec
from airflow_mlops.core.podspec import StepContext
from airflow_mlops.core.step import StepSpec
from airflow_mlops.runtime.local import LocalProcess
from airflow_mlops.steps import contract

pytestmark = pytest.mark.slow


def run_step(module: str, env: dict[str, str], args: tuple[str, ...] = (), log=None, timeout: int = 300):
    lines: list[str] = []
    step = StepSpec(name="step", image="unused", module=module, args=args, timeout_seconds=timeout)
    ctx = StepContext(dag_id="d", task_id="t", run_id="r", env=env)
    proc = LocalProcess(step, ctx, log=log or lines.append)
    outcome = proc.run()
    return outcome, lines


@pytest.fixture
def dataset(tmp_path: Path) -> dict:
    result = tmp_path / "prep.json"
    outcome, lines = run_step("airflow_mlops.steps.prepare_data",
                              {contract.ARTIFACT_ROOT: str(tmp_path / "art"), contract.RESULT_URI: str(result)})
    assert outcome.ok, lines
    return json.loads(result.read_text())


def trainer_env(tmp_path: Path, dataset: dict, run_id: str | None = None, **params) -> dict[str, str]:
    env = {
        contract.MLFLOW_TRACKING_URI: f"sqlite:///{tmp_path}/mlflow.db",
        contract.TRAIN_DATA_URI: dataset["train_uri"],
        contract.TEST_DATA_URI: dataset["test_uri"],
        contract.CHECKPOINT_URI: str(tmp_path / "ckpt"),
        contract.OUTPUT_URI: str(tmp_path / "out"),
        contract.RESULT_URI: str(tmp_path / "result.json"),
        contract.PARAMS: json.dumps(params),
    }
    if run_id:
        env[contract.MLFLOW_RUN_ID] = run_id
    return env


def test_prepare_data_is_content_addressed(tmp_path: Path, dataset: dict) -> None:
    assert dataset["rows"] == {"train": 426, "test": 143}
    assert dataset["data_version"] in dataset["train_uri"]
    again = tmp_path / "again.json"
    outcome, _ = run_step("airflow_mlops.steps.prepare_data",
                          {contract.ARTIFACT_ROOT: str(tmp_path / "art"), contract.RESULT_URI: str(again)})
    assert outcome.ok
    assert json.loads(again.read_text())["data_version"] == dataset["data_version"]


def test_sklearn_trainer_logs_run_model_and_predictions(tmp_path: Path, dataset: dict) -> None:
    import mlflow
    import pandas as pd

    env = trainer_env(tmp_path, dataset, framework="sklearn", epochs=5)
    outcome, lines = run_step("airflow_mlops.steps.train", env)
    assert outcome.ok, lines[-20:]
    result = json.loads((tmp_path / "result.json").read_text())
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    run = client.get_run(result["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.metrics["test_accuracy"] > 0.9
    assert run.data.params["epochs"] == "5"
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 5
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    model = mlflow.pyfunc.load_model(result["model_uri"])
    test = pd.read_parquet(dataset["test_uri"])
    proba = model.predict(test.drop(columns="target"))  # the named float64 frame the signature declares
    assert proba.shape == (143, 2)
    predictions = pd.read_parquet(result["predictions"]["test"])
    assert list(predictions.columns) == ["y_true", "y_pred", "proba_0", "proba_1"]
    assert len(predictions) == 143
    assert (predictions["y_true"].to_numpy() == test["target"].to_numpy()).all()


def test_trainer_resumes_from_checkpoint_in_the_same_run(tmp_path: Path, dataset: dict) -> None:
    """A try killed mid-training; the next try resumes from the latest checkpoint and logs into the same run."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.create_experiment("resume", artifact_location=str(tmp_path / "mlruns"))
    run_id = client.create_run(experiment).info.run_id
    env = trainer_env(tmp_path, dataset, run_id=run_id, framework="sklearn", epochs=8)
    holder: dict = {}

    def kill_after_epoch_3(line: str) -> None:
        if line.startswith("epoch 3/8"):
            holder["proc"].kill()

    step = StepSpec(name="train", image="unused", module="airflow_mlops.steps.train")
    proc = LocalProcess(step, StepContext(dag_id="d", task_id="t", run_id="r", env=env), log=kill_after_epoch_3,
                        kill_grace_seconds=1)
    holder["proc"] = proc
    first = proc.run()
    assert first.exit_code != 0
    assert not (tmp_path / "result.json").exists()
    pointer = json.loads((tmp_path / "ckpt" / "latest.json").read_text())
    assert pointer["epoch"] >= 2

    second, lines = run_step("airflow_mlops.steps.train", env)
    assert second.ok, lines[-20:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["mlflow_run_id"] == run_id
    assert result["resumed_from_epoch"] == pointer["epoch"] + 1
    assert any(f"resuming from checkpoint {tmp_path / 'ckpt'}" in line for line in lines)
    steps = sorted(m.step for m in client.get_metric_history(run_id, "train_loss"))
    assert steps[-1] == 7 and set(range(8)) <= set(steps)
    assert client.get_run(run_id).data.tags["mlops.resumed_from_epoch"] == str(pointer["epoch"] + 1)


def test_torch_trainer_path(tmp_path: Path, dataset: dict) -> None:
    import mlflow
    import pandas as pd
    import torch  # noqa: F401 - make test installs the torch extra; a missing torch must fail, not skip

    outcome, lines = run_step("airflow_mlops.steps.train", trainer_env(tmp_path, dataset, framework="torch", epochs=4))
    assert outcome.ok, lines[-20:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["framework"] == "torch" and result["device"] in ("cpu", "cuda:0")
    assert result["metrics"]["test_accuracy"] > 0.85
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    model = mlflow.pyfunc.load_model(result["model_uri"])
    test = pd.read_parquet(dataset["test_uri"]).drop(columns="target")
    proba = model.predict(test.head(4))  # named float64 columns; the served model casts to float32 itself
    assert proba.shape == (4, 2)
    assert abs(float(proba.sum(axis=1).mean()) - 1.0) < 1e-4
    # Checkpoints are torch state dicts: a rerun resumes past the last epoch and only re-evaluates.
    assert json.loads((tmp_path / "ckpt" / "latest.json").read_text())["epoch"] == 3


def test_missing_label_is_bad_input(tmp_path: Path, dataset: dict) -> None:
    env = trainer_env(tmp_path, dataset)
    env[contract.LABEL_COLUMN] = "no_such_column"
    outcome, lines = run_step("airflow_mlops.steps.train", env)
    assert outcome.exit_code == contract.EXIT_BAD_INPUT
    assert any("label column 'no_such_column' is missing" in line for line in lines)


def test_local_runtime_honours_timeout_and_env() -> None:
    step = StepSpec(name="sleepy", image="unused", command=(sys.executable, "-c"),
                    args=("import os, time; print(os.environ['MLOPS_DAG_ID'], os.environ['X']); time.sleep(30)",),
                    env={"X": "from-step"}, timeout_seconds=2, compute=GpuSpec())
    lines: list[str] = []
    outcome = LocalProcess(step, StepContext(dag_id="my_dag", task_id="t", run_id="r"), log=lines.append,
                           kill_grace_seconds=1).run()
    assert outcome.timed_out and not outcome.ok
    assert "my_dag from-step" in lines
    assert outcome.seconds < 15
    assert os.environ.get("X") is None


def test_torch_trainer_runs_distributed_data_parallel_across_two_processes(tmp_path: Path, dataset: dict) -> None:
    """Two real trainer processes rendezvous over torchrun's env (gloo on CPU), as two Indexed Job workers would."""
    import socket
    import subprocess

    import mlflow

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = {**os.environ, **trainer_env(tmp_path, dataset, framework="torch", epochs=3),
            contract.MASTER_ADDR: "127.0.0.1", contract.MASTER_PORT: str(port), contract.WORLD_SIZE: "2"}
    procs = [subprocess.Popen([sys.executable, "-m", "airflow_mlops.steps.train"],
                              env={**base, contract.NODE_RANK: str(rank)}, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert "world size 2" in outputs[0] and "world size 2" in outputs[1]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["metrics"]["test_accuracy"] > 0.8
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs(["0"])
    assert len(runs) == 1, "only rank 0 logs to MLflow"
    assert runs[0].data.tags["mlops.world_size"] == "2"


@pytest.mark.slow
def test_mapped_instances_get_their_own_result_and_output(airflow_db: Path, mlops_home: Path) -> None:
    from tests.dagfiles import load_dag

    run = load_dag("mapped_steps_test").test()
    tis = sorted(run.get_task_instances(), key=lambda ti: ti.map_index)
    assert [(ti.map_index, str(ti.state)) for ti in tis] == [(0, "success"), (1, "success")]
    results = [ti.xcom_pull(task_ids="prepare", map_indexes=ti.map_index) for ti in tis]
    assert results[0]["rows"]["test"] != results[1]["rows"]["test"]  # each instance ran with its own args
    runs_dir = mlops_home / "artifacts" / "runs" / "mapped_steps_test"
    task_dirs = sorted(p.name for p in runs_dir.glob("*/*") if p.is_dir())
    assert task_dirs == ["prepare.0", "prepare.1"], task_dirs
