"""The PyTorch trainer's served model, logged as MLflow "models from code": named columns in, probabilities out.

:class:`airflow_mlops.steps.train.TorchTrainer` logs it with ``mlflow.pyfunc.log_model(python_model=<this file>)``.
MLflow copies this file into the model and runs it on load, so nothing is unpickled: the network is rebuilt from
the ``spec`` artifact (layers, input columns) and its weights are read with ``torch.load(weights_only=True)``.

The model takes what the signature declares (the training frame's named float64 columns), selects the
signature's columns in order and casts them to float32 itself: ``mlflow.pytorch``'s own pyfunc would hand
``torch`` the frame's float64 and refuse it. It returns class probabilities (float64, one column per class),
the output contract batch scoring, the rollout probes and the inference capture rely on.

Self-contained on purpose (mlflow, numpy, pandas, torch): a serving image needs no airflow_mlops.
"""

from __future__ import annotations

import json
from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

#: Artifact names the trainer logs and :meth:`TorchClassifier.load_context` reads.
SPEC_ARTIFACT = "spec"
WEIGHTS_ARTIFACT = "weights"
#: Layer kinds a spec may name, with their torch modules.
LAYERS = ("linear", "relu", "softmax")


def build_network(layers: list[dict[str, Any]]) -> Any:
    """The ``torch.nn.Sequential`` a spec's ``layers`` describe (``{"kind": "linear", "in": 30, "out": 64}``...)."""
    from torch import nn

    modules: list[Any] = []
    for i, layer in enumerate(layers):
        kind = layer.get("kind")
        if kind == "linear":
            modules.append(nn.Linear(int(layer["in"]), int(layer["out"])))
        elif kind == "relu":
            modules.append(nn.ReLU())
        elif kind == "softmax":
            modules.append(nn.Softmax(dim=1))
        else:
            raise ValueError(f"layer {i}: kind {kind!r} is not one of {LAYERS}")
    return nn.Sequential(*modules)


def describe_network(net: Any) -> list[dict[str, Any]]:
    """The spec ``layers`` of a ``Sequential`` of Linear/ReLU/Softmax (the inverse of :func:`build_network`)."""
    from torch import nn

    layers: list[dict[str, Any]] = []
    for i, module in enumerate(net):
        if isinstance(module, nn.Linear):
            layers.append({"kind": "linear", "in": module.in_features, "out": module.out_features})
        elif isinstance(module, nn.ReLU):
            layers.append({"kind": "relu"})
        elif isinstance(module, nn.Softmax):
            layers.append({"kind": "softmax"})
        else:
            raise ValueError(f"layer {i} is a {type(module).__name__}: only {LAYERS} can be served from a spec")
    return layers


class TorchClassifier(PythonModel):  # type: ignore[misc]
    """Serves the spec's network: the signature's columns, in order, as float32; class probabilities out."""

    def __init__(self) -> None:
        self.net: Any = None
        self.columns: list[str] = []

    def load_context(self, context: Any) -> None:
        import torch

        with open(context.artifacts[SPEC_ARTIFACT], encoding="utf-8") as f:
            spec = json.load(f)
        self.columns = list(spec["columns"])
        net = build_network(spec["layers"])
        net.load_state_dict(torch.load(context.artifacts[WEIGHTS_ARTIFACT], map_location="cpu", weights_only=True))
        self.net = net.eval()

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        # The pd.DataFrame hint tells MLflow to validate against the logged signature only (no hint-based schema).
        import numpy as np
        import torch

        missing = [c for c in self.columns if c not in model_input.columns]
        if missing:
            raise ValueError(f"the input lacks the model's columns {missing}")
        x = np.ascontiguousarray(model_input[self.columns].to_numpy(dtype="float32"))
        with torch.no_grad():
            proba = self.net(torch.from_numpy(x))
        return proba.double().numpy()


mlflow.models.set_model(TorchClassifier())
