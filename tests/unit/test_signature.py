"""The model input contract (airflow_mlops.steps.signature): one place turns a frame into a signature's input."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_mlops.steps.signature import InputContract, SchemaMismatch


def _frame() -> Any:
    import pandas as pd

    return pd.DataFrame({"b": [1.5, 2.5], "a": [1, 2], "label": ["x", "y"]})


def _signature(frame: Any) -> Any:
    import numpy as np
    from mlflow.models import infer_signature

    return infer_signature(frame, np.zeros((len(frame), 2)))


@pytest.mark.filterwarnings("ignore:Hint. Inferred schema contains integer")
def test_contract_round_trips_through_the_mlflow_signature_the_trainer_logs() -> None:
    frame = _frame()
    contract = InputContract.from_signature(_signature(frame))
    assert contract == InputContract.from_frame(frame)
    assert contract.columns == ("b", "a", "label") and contract.dtypes == ("float64", "int64", "object")
    assert contract.describe() == "3 named columns (float64, int64, object)"
    assert InputContract.from_dict(contract.to_dict()) == contract
    assert InputContract.from_signature(None) is None


def test_conform_selects_orders_and_casts_to_the_signature() -> None:
    import pandas as pd

    contract = InputContract(("a", "b"), ("float64", "float32"))
    given = pd.DataFrame({"extra": ["z"], "b": [2.0], "a": [1]})  # int where float64 is declared, float64 -> 32
    out = contract.conform(given)
    assert list(out.columns) == ["a", "b"]
    assert [str(t) for t in out.dtypes] == ["float64", "float32"]
    assert out.iloc[0].tolist() == [1.0, 2.0]
    assert list(given.columns) == ["extra", "b", "a"] and str(given["a"].dtype) == "int64"  # input untouched


def test_a_frame_missing_signature_columns_fails_naming_every_one() -> None:
    import pandas as pd

    contract = InputContract(("a", "b", "c"), ("float64",) * 3)
    with pytest.raises(SchemaMismatch, match=r"lacks 2 column\(s\) the model's signature requires: a, c") as err:
        contract.conform(pd.DataFrame({"b": [1.0], "z": [0.0]}))
    assert err.value.missing == ("a", "c")


def test_lossy_or_impossible_casts_are_refused() -> None:
    import pandas as pd

    ints = InputContract(("n",), ("int64",))
    assert ints.conform(pd.DataFrame({"n": [1.0, 2.0]}))["n"].tolist() == [1, 2]  # whole numbers: fine
    with pytest.raises(SchemaMismatch, match=r"'n'.*without loss"):
        ints.conform(pd.DataFrame({"n": [1.5]}))
    with pytest.raises(SchemaMismatch, match=r"'n'.*cannot be converted"):
        ints.conform(pd.DataFrame({"n": [float("nan")]}))
    with pytest.raises(SchemaMismatch, match=r"'x'.*cannot be converted"):
        InputContract(("x",), ("float64",)).conform(pd.DataFrame({"x": ["not a number"]}))


def test_request_body_is_what_the_scoring_server_reads() -> None:
    import pandas as pd

    contract = InputContract(("a", "b"), ("float64", "int64"))
    frame = pd.DataFrame({"b": [1, 2, 3], "a": [0.5, float("nan"), 2.0]})
    body = contract.request_body(frame)
    assert body == {"dataframe_split": {"columns": ["a", "b"], "data": [[0.5, 1], [None, 2], [2.0, 3]]}}
    bodies = contract.request_bodies(frame, rows_per_request=2)
    assert [len(json.loads(b)["dataframe_split"]["data"]) for b in bodies] == [2, 1]


def test_legacy_unnamed_tensor_signature_takes_the_frame_in_order() -> None:
    """Models the trainer logged before named columns: a float32 (-1, n) tensor; they still score."""
    import numpy as np
    from mlflow.models import infer_signature

    frame = _frame()[["b", "a"]]
    signature = infer_signature(frame.to_numpy("float32"), np.zeros((2, 2)))
    contract = InputContract.from_signature(signature)
    assert contract is not None and not contract.named and contract.width == 2
    array = contract.conform(frame)
    assert array.dtype == np.float32 and array.shape == (2, 2)
    assert contract.request_body(frame) == {"inputs": [[1.5, 1.0], [2.5, 2.0]]}
    with pytest.raises(SchemaMismatch, match=r"unnamed tensor of 2 columns.*the input has 3"):
        contract.conform(_frame())


def test_schemas_a_frame_cannot_carry_are_refused() -> None:
    import numpy as np
    from mlflow.types import Schema, TensorSpec

    schema = Schema([TensorSpec(np.dtype("float32"), (-1, 2), name="x"), TensorSpec(np.dtype("float32"), (-1, 2),
                                                                                     name="y")])
    with pytest.raises(SchemaMismatch, match="not one unnamed 2-D tensor"):
        InputContract.from_schema(schema)
