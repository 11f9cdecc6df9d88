"""Demo switch: serve a trained model through a wrapper that fails a share of requests (HTTP 500).

A real model with real predictions, served by the real MLflow scoring server, that misbehaves only at serving
time: exactly what offline checks cannot see and a progressive rollout's analysis must catch. Used by the
trainer when its ``fault_percent`` hyperparameter is set (``make demo`` uses it for the rollback scenario).
"""

from __future__ import annotations

import itertools
import tempfile
from typing import Any

import mlflow.pyfunc


class FaultInjectingModel(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined,misc]
    """Delegates to the wrapped model; exactly ``fail_percent`` of every 100 predict calls raise (HTTP 500).

    :param fail_percent: share of predict calls that fail, 1-100.
    """

    def __init__(self, fail_percent: int) -> None:
        if not 0 < int(fail_percent) <= 100:
            raise ValueError(f"fail_percent must be in 1..100, got {fail_percent!r}")
        self.fail_percent = int(fail_percent)
        self._calls: Any = None
        self._inner: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_calls": None, "_inner": None}  # per serving process

    def load_context(self, context: Any) -> None:
        self._inner = mlflow.pyfunc.load_model(context.artifacts["inner"])

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]  # MLflow reads hints
        if self._calls is None:
            self._calls = itertools.count(1)
        n = next(self._calls)
        if (n * self.fail_percent) % 100 < self.fail_percent:  # evenly spread: n*p mod 100 < p
            from mlflow.exceptions import MlflowException
            from mlflow.protos.databricks_pb2 import INTERNAL_ERROR

            raise MlflowException(f"injected serving fault (fail_percent={self.fail_percent})",
                                  error_code=INTERNAL_ERROR)
        return self._inner.predict(model_input)


def log_fault_injecting_model(model_uri: str, fail_percent: int) -> str:
    """Log, in the active run, a ``model`` that wraps ``model_uri`` and fails ``fail_percent``% of calls."""
    with tempfile.TemporaryDirectory() as tmp:
        inner = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp)
        signature = mlflow.models.get_model_info(model_uri).signature
        info = mlflow.pyfunc.log_model(name="model_with_fault", python_model=FaultInjectingModel(fail_percent),
                                       artifacts={"inner": inner}, signature=signature)
    mlflow.set_tag("mlops.demo.fault_percent", str(fail_percent))
    print(f"DEMO: serving model wraps {model_uri} and fails {fail_percent}% of requests ({info.model_uri})")
    return str(info.model_uri)
