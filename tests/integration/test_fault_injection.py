"""The demo fault switch: a real model, loaded the way the scoring server loads it, fails exactly its share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def tracking(mlops_home: Path) -> Iterator[None]:
    """This test's own MLflow store as the process-global tracking URI, restored afterwards."""
    import mlflow
    from mlflow.tracking._tracking_service import utils as tracking_utils

    previous = tracking_utils._tracking_uri
    mlflow.set_tracking_uri(f"sqlite:///{mlops_home}/mlflow.db")
    yield
    mlflow.set_tracking_uri(previous)  # type: ignore[arg-type]


def test_wrapped_model_fails_its_share_and_otherwise_predicts_like_the_inner_model(tracking: None) -> None:
    import mlflow
    import numpy as np
    from mlflow.exceptions import MlflowException
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from airflow_mlops.steps.fault_injection import FaultInjectingModel, log_fault_injecting_model

    x, y = load_iris(return_X_y=True, as_frame=True)
    model = LogisticRegression(max_iter=300).fit(x, y)
    # An explicit experiment, never mlflow.set_experiment(): that sets a process-global active experiment id
    # which later tests in other stores would inherit.
    experiment_id = mlflow.MlflowClient().create_experiment("faults")
    with mlflow.start_run(experiment_id=experiment_id):
        inner = mlflow.sklearn.log_model(model, name="model", pyfunc_predict_fn="predict_proba",
                                         input_example=x.head(2)).model_uri
        wrapped = log_fault_injecting_model(inner, 30)
    served = mlflow.pyfunc.load_model(wrapped)
    outcomes = []
    for _ in range(20):
        try:
            outcomes.append(served.predict(x.head(3)))
        except MlflowException as err:
            assert "injected serving fault" in str(err)
            outcomes.append(None)
    assert sum(o is None for o in outcomes) == 6  # exactly 30% of 20
    ok = next(o for o in outcomes if o is not None)
    np.testing.assert_allclose(np.asarray(ok), model.predict_proba(x.head(3)))
    with pytest.raises(ValueError, match="fail_percent"):
        FaultInjectingModel(0)
