"""A tiny MLflow pyfunc model for rollout demos and tests, with a switch that makes a share of requests fail.

``fail_percent`` makes exactly that share of predict calls raise an MLflow INTERNAL_ERROR (HTTP 500 from the
scoring server): a real bad candidate, served by the real MLflow scoring server.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import mlflow.pyfunc


class DemoScorer(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined,misc]
    """Scores rows as sigmoid(sum(features) * scale + bias).

    :param scale: multiplier of the feature sum.
    :param bias: added before the sigmoid.
    :param fail_percent: share (0-100) of predict calls that fail with HTTP 500.
    """

    def __init__(self, scale: float = 0.1, bias: float = 0.0, fail_percent: int = 0) -> None:
        self.scale = scale
        self.bias = bias
        self.fail_percent = int(fail_percent)
        self._calls: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_calls": None}  # the call counter is per serving process

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]  # MLflow reads hints
        if self._calls is None:
            self._calls = itertools.count(1)
        n = next(self._calls)  # atomic in CPython: safe across the server's threads
        # Exactly fail_percent of every 100 calls, spread evenly (n * p mod 100 < p).
        if self.fail_percent and (n * self.fail_percent) % 100 < self.fail_percent:
            from mlflow.exceptions import MlflowException
            from mlflow.protos.databricks_pb2 import INTERNAL_ERROR

            raise MlflowException(f"injected failure (fail_percent={self.fail_percent})", error_code=INTERNAL_ERROR)
        rows = model_input.to_dict(orient="records") if hasattr(model_input, "to_dict") else list(model_input)
        out = []
        for row in rows:
            values = row.values() if isinstance(row, dict) else row
            total = sum(float(v) for v in values)
            out.append(1.0 / (1.0 + math.exp(-(total * self.scale + self.bias))))
        return out


def log_demo_model(name: str, fail_percent: int = 0, scale: float = 0.1, bias: float = 0.0) -> str:
    """Log and register a DemoScorer under ``name`` in the current MLflow tracking store; returns the version."""
    import pandas as pd

    example = pd.DataFrame({"x1": [1.0, 2.0], "x2": [0.5, -0.5]})
    with mlflow.start_run(run_name=f"demo-scorer-fail{fail_percent}"):
        info = mlflow.pyfunc.log_model(name="model", python_model=DemoScorer(scale, bias, fail_percent),
                                       input_example=example, registered_model_name=name)
    return str(info.registered_model_version)
