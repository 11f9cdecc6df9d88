"""Models the pipeline's own trainer logs, scored by every consumer: an outside pyfunc client, the batch_score
step against ``@champion``, and a real ``mlflow models serve`` scoring server (issue 12, "one signature contract").

The bug this guards: the trainer logged a signature inferred from a float32 array (an unnamed tensor spec, both
flavours), while batch scoring passes the named float64 frame the Parquet holds, so ``@champion`` refused every
batch ("dtype of input float64 does not match expected dtype float32"). Nothing scored a model the trainer made.
Real parts: the trainer step as a local process (as the pipeline runs it), MLflow on SQLite, the batch_score
step's entry point, and the scoring server the local rollout target starts.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_mlops.steps import contract
from airflow_mlops.steps.signature import InputContract
from tests.integration.test_local_steps import run_step, trainer_env

pytestmark = pytest.mark.slow
FRAMEWORKS = ("sklearn", "torch")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The bundled dataset as the pipeline prepares it, and one MLflow store (the process-global tracking URI)."""
    import mlflow
    from mlflow.tracking._tracking_service import utils as tracking_utils

    from airflow_mlops.steps.prepare_data import prepare

    root = tmp_path_factory.mktemp("trained-scoring")
    data = prepare("breast_cancer", str(root / "art"), test_size=0.25, seed=42)
    previous = tracking_utils._tracking_uri
    uri = f"sqlite:///{root}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.MlflowClient(uri).search_experiments()  # create the tables once, before two trainers share the store
    yield {"root": root, "uri": uri, "data": data}
    mlflow.set_tracking_uri(previous)  # type: ignore[arg-type]


def _train_and_register(store: dict[str, Any], framework: str) -> dict[str, Any]:
    """The real trainer step (a process, like the pipeline's train task); its model registered as ``@champion``."""
    import mlflow

    work = store["root"] / framework
    work.mkdir()
    env = {**trainer_env(work, store["data"], framework=framework, epochs=3),
           contract.MLFLOW_TRACKING_URI: store["uri"]}
    outcome, lines = run_step("airflow_mlops.steps.train", env)
    assert outcome.ok, lines[-30:]
    result = json.loads((work / "result.json").read_text())
    name = f"scored_{framework}"
    client = mlflow.MlflowClient(store["uri"])
    client.create_registered_model(name)
    version = client.create_model_version(name, result["model_uri"], run_id=result["mlflow_run_id"])
    client.set_registered_model_alias(name, "champion", version.version)
    return {"framework": framework, "name": name, "version": str(version.version), "result": result, "work": work}


@pytest.fixture(scope="module")
def models(store: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Both flavours trained side by side: two trainer processes at once, as two mapped train tasks would run."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(FRAMEWORKS)) as pool:
        return dict(zip(FRAMEWORKS, pool.map(lambda fw: _train_and_register(store, fw), FRAMEWORKS), strict=True))


@pytest.fixture(params=FRAMEWORKS)
def trained(request: pytest.FixtureRequest, models: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return models[request.param]


def _features(store: dict[str, Any]) -> Any:
    import pandas as pd

    return pd.read_parquet(store["data"]["test_uri"]).drop(columns="target")


def test_signature_names_the_training_columns_and_dtypes(trained: dict[str, Any], store: dict[str, Any]) -> None:
    import mlflow

    signature = mlflow.models.get_model_info(f"models:/{trained['name']}@champion").signature
    features = _features(store)
    assert signature.inputs.has_input_names()
    assert signature.inputs.input_names() == list(features.columns)
    assert {t.name for t in signature.inputs.input_types()} == {"double"}  # float64, as the Parquet has them
    assert InputContract.from_signature(signature) == InputContract.from_frame(features)
    # Class probabilities out, float64 for both flavours (what batch scoring and the probes read).
    [output] = signature.outputs.inputs
    assert (str(output.type), tuple(output.shape)) == ("float64", (-1, 2))


def test_outside_client_scores_a_named_float64_frame(trained: dict[str, Any], store: dict[str, Any]) -> None:
    import mlflow
    import numpy as np

    features = _features(store)
    assert set(features.dtypes.astype(str)) == {"float64"}
    model = mlflow.pyfunc.load_model(f"models:/{trained['name']}@champion")
    proba = np.asarray(model.predict(features))
    assert proba.shape == (len(features), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    # The same scores the trainer wrote for its checks (the served model is the trained one).
    import pandas as pd

    written = pd.read_parquet(trained["result"]["predictions"]["test"])
    np.testing.assert_allclose(proba, written[["proba_0", "proba_1"]].to_numpy(), atol=1e-4)
    # Column order is the signature's business, not the caller's.
    shuffled = features[list(reversed(features.columns))]
    np.testing.assert_allclose(np.asarray(model.predict(shuffled)), proba, atol=1e-6)


def test_batch_score_step_scores_champion(trained: dict[str, Any], store: dict[str, Any],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The step's entry point in-process (the batch-inference tests run it as a process and under the DAG)."""
    import pandas as pd

    from airflow_mlops.steps import batch_score

    out = trained["work"] / "batch"
    monkeypatch.setenv(contract.MLFLOW_TRACKING_URI, store["uri"])
    monkeypatch.setenv(contract.RESULT_URI, str(out / "result.json"))
    code = batch_score.main(["--model-uri", f"models:/{trained['name']}@champion", "--input-uri",
                             store["data"]["test_uri"], "--label", "target", "--output-uri", str(out)])
    assert code == 0
    result = json.loads((out / "result.json").read_text())
    assert result["current"]["version"] == trained["version"] and result["rows"] == 143
    scores = pd.read_parquet(result["current"]["output_uri"])
    truth = pd.read_parquet(store["data"]["test_uri"])["target"]
    assert (scores["prediction"].astype(int) == truth).mean() > 0.85


def test_scoring_server_answers_requests_the_contract_builds(models: dict[str, dict[str, Any]],
                                                             store: dict[str, Any]) -> None:
    """One request per flavour to the real MLflow scoring server, started the way the local rollout target starts
    it, with the body the traffic generator sends (built from the model's logged signature)."""
    import numpy as np

    from airflow_mlops.rollout.targets.local import LocalTarget

    features = _features(store).head(3)
    targets = {fw: LocalTarget(f"scoring-{fw}", m["name"], store["uri"], root=str(m["work"] / "serving"))
               for fw, m in models.items()}
    try:
        for fw, target in targets.items():  # both load at once; then wait for each
            target.start_server(models[fw]["version"])
        for fw, target in targets.items():
            model = models[fw]
            url = target.wait_ready(model["version"])
            body = InputContract.from_model(f"models:/{model['name']}@champion").request_body(features)
            assert body["dataframe_split"]["columns"] == list(features.columns)
            request = urllib.request.Request(f"{url}/invocations", data=json.dumps(body).encode(),
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as response:
                predictions = np.asarray(json.loads(response.read())["predictions"])
            assert predictions.shape == (3, 2), (fw, predictions)
            np.testing.assert_allclose(predictions.sum(axis=1), 1.0, atol=1e-5)
    finally:
        for fw, target in targets.items():
            target.stop_server(models[fw]["version"])
