"""The model input contract: what a model's logged signature says its input is, and data made to match it.

One place decides it (DESIGN 3.9): the trainer logs the training frame's column names and dtypes as the model's
signature, and every consumer that builds model input (batch scoring, scoring requests for the traffic generator
and probes, the inference capture read back for drift) goes through :class:`InputContract`, so what reaches
``predict`` or a scoring server is what the signature declares: these columns, in this order, with these dtypes.

Never imports Airflow; pandas, numpy and mlflow only inside functions (the rollout layer imports this module).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Rows per scoring request the traffic helpers send unless told otherwise.
DEFAULT_ROWS_PER_REQUEST = 1


class SchemaMismatch(ValueError):
    """The data cannot be made to match the model's input schema; the message names what is wrong.

    :param missing: the signature's columns the data lacks (empty for other mismatches).
    """

    def __init__(self, message: str, missing: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.missing = missing


@dataclass(frozen=True)
class InputContract:
    """A model's input: named columns with their dtypes, or (models logged before named columns) one unnamed tensor.

    :param columns: input column names in the signature's order; empty for an unnamed tensor.
    :param dtypes: numpy dtype names (``float64``, ``int64``, ``bool``, ``object``...), one per column; one for a
        tensor.
    :param width: an unnamed tensor's number of columns (its shape's last dimension); None for named columns.
    """

    columns: tuple[str, ...]
    dtypes: tuple[str, ...]
    width: int | None = None

    def __post_init__(self) -> None:
        if self.columns and len(self.columns) != len(self.dtypes):
            raise ValueError(f"{len(self.columns)} columns but {len(self.dtypes)} dtypes")
        if not self.columns and (self.width is None or len(self.dtypes) != 1):
            raise ValueError("an unnamed tensor input needs one dtype and a width")

    @property
    def named(self) -> bool:
        """Whether the model takes named columns (a column-based signature)."""
        return bool(self.columns)

    # -- building one ------------------------------------------------------------------------------

    @classmethod
    def from_frame(cls, frame: Any) -> InputContract:
        """The contract a frame defines: its column names, in order, with its dtypes (what the trainer logs)."""
        return cls(tuple(str(c) for c in frame.columns), tuple(_dtype_name(t) for t in frame.dtypes))

    @classmethod
    def from_schema(cls, schema: Any) -> InputContract | None:
        """From an MLflow input :class:`~mlflow.types.Schema` (``signature.inputs``); None when there is none.

        Column-based schemas give named columns; a single unnamed 2-D tensor (what the trainer logged before
        named columns) gives a width and a dtype. Anything else (several tensors, nested types) is refused.
        """
        if schema is None:
            return None
        if not schema.is_tensor_spec():
            names = schema.input_names()
            if not schema.has_input_names() or any(not isinstance(n, str) for n in names):
                raise SchemaMismatch(f"the model's input schema has unnamed columns ({schema}): not a column "
                                     "contract")
            dtypes = []
            for spec in schema.inputs:
                to_pandas = getattr(spec.type, "to_pandas", None)
                if to_pandas is None:  # Array/Object/Map column types: no single dtype to cast to
                    raise SchemaMismatch(f"column {spec.name!r} has type {spec.type}, which a flat frame cannot "
                                         "carry")
                dtypes.append(_dtype_name(to_pandas()))
            return cls(tuple(names), tuple(dtypes))
        specs = schema.inputs
        shape = tuple(specs[0].shape) if len(specs) == 1 else ()
        if len(specs) != 1 or specs[0].name or len(shape) != 2 or shape[1] < 1:
            raise SchemaMismatch(f"the model's input schema {schema} is not one unnamed 2-D tensor or named "
                                 "columns: a frame cannot be made to match it")
        return cls((), (str(specs[0].type),), width=int(shape[1]))

    @classmethod
    def from_signature(cls, signature: Any) -> InputContract | None:
        """From an MLflow :class:`~mlflow.models.ModelSignature` (None: the model has none)."""
        return None if signature is None else cls.from_schema(signature.inputs)

    @classmethod
    def from_model(cls, model_uri: str) -> InputContract | None:
        """The contract logged with ``model_uri`` (``models:/<name>@<alias>``, ``runs:/``...), read from its MLmodel."""
        from mlflow.models import get_model_info

        return cls.from_signature(get_model_info(model_uri).signature)

    # -- using one ---------------------------------------------------------------------------------

    def missing(self, frame: Any) -> list[str]:
        """The contract's columns that ``frame`` lacks (always empty for an unnamed tensor)."""
        present = {str(c) for c in frame.columns}
        return [c for c in self.columns if c not in present]

    def conform(self, frame: Any) -> Any:
        """``frame`` as the model's input: the signature's columns in its order with its dtypes (extra columns
        dropped); for an unnamed tensor, the frame's columns (all of them, in order) as one array of its dtype.

        :raises SchemaMismatch: a column is missing (the message names every one), a value cannot take the
            declared dtype without loss, or a tensor's width differs.
        """
        import numpy as np

        if not self.named:
            assert self.width is not None
            if frame.shape[1] != self.width:
                raise SchemaMismatch(f"the model takes an unnamed tensor of {self.width} columns (a signature logged "
                                     f"before named columns), the input has {frame.shape[1]}: "
                                     f"{', '.join(map(str, list(frame.columns)[:12]))}")
            try:
                return frame.to_numpy(dtype=self.dtypes[0])
            except (TypeError, ValueError) as err:
                raise SchemaMismatch(f"the input cannot be converted to the model's {self.dtypes[0]} tensor: "
                                     f"{err}") from None
        missing = self.missing(frame)
        if missing:
            have = ", ".join(map(str, list(frame.columns)[:12])) + ("..." if frame.shape[1] > 12 else "")
            raise SchemaMismatch(f"the input lacks {len(missing)} column(s) the model's signature requires: "
                                 f"{', '.join(missing)} (it has {frame.shape[1]}: {have})", tuple(missing))
        out = frame.loc[:, list(self.columns)]
        casts = {c: t for c, t in zip(self.columns, self.dtypes, strict=True) if str(out[c].dtype) != t}
        for name, dtype in casts.items():
            out[name] = _cast(name, out[name], np.dtype(dtype))
        return out

    def request_body(self, frame: Any) -> dict[str, Any]:
        """A scoring-server request for ``frame``'s rows: ``dataframe_split`` with the signature's columns, or
        ``inputs`` for an unnamed tensor. JSON-able (numpy scalars as Python numbers, NaN as null)."""
        conformed = self.conform(frame)
        if not self.named:
            return {"inputs": [[_plain(v) for v in row] for row in conformed.tolist()]}
        rows = [[_plain(v) for v in row] for row in conformed.itertuples(index=False, name=None)]
        return {"dataframe_split": {"columns": list(self.columns), "data": rows}}

    def request_bodies(self, frame: Any, rows_per_request: int = DEFAULT_ROWS_PER_REQUEST) -> list[bytes]:
        """``frame`` cut into scoring requests of ``rows_per_request`` rows each, as JSON bytes."""
        if rows_per_request < 1:
            raise ValueError(f"rows_per_request: >= 1, got {rows_per_request}")
        return [json.dumps(self.request_body(frame.iloc[start:start + rows_per_request])).encode()
                for start in range(0, len(frame), rows_per_request)]

    def describe(self) -> str:
        """``30 named columns (float64)`` style summary for logs."""
        if not self.named:
            return f"an unnamed {self.dtypes[0]} tensor of {self.width} columns (signature without names)"
        kinds = sorted(set(self.dtypes))
        return f"{len(self.columns)} named columns ({', '.join(kinds)})"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"columns": list(self.columns), "dtypes": list(self.dtypes), "width": self.width}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InputContract:
        return cls(tuple(data.get("columns") or ()), tuple(data["dtypes"]), data.get("width"))


def _dtype_name(dtype: Any) -> str:
    """A numpy dtype's name for numbers, booleans and datetimes; ``object`` for text and everything else."""
    import numpy as np

    if isinstance(dtype, np.dtype) and dtype.kind in "biufcmM":
        return str(dtype)
    return "object"


def _cast(name: str, series: Any, dtype: Any) -> Any:
    """``series`` as ``dtype``; refuses a lossy change of kind (1.5 into an integer column), allows float64 -> 32."""
    import numpy as np

    try:
        out = series.astype(dtype)
    except (TypeError, ValueError) as err:
        raise SchemaMismatch(f"column {name!r}: its {series.dtype} values cannot be converted to {dtype}, the "
                             f"signature's dtype: {err}") from None
    if dtype.kind in "iub" and getattr(series.dtype, "kind", "O") not in "iub":
        try:
            same = bool(np.array_equal(out.to_numpy(), series.to_numpy(), equal_nan=False))
        except (TypeError, ValueError):
            same = False
        if not same:
            raise SchemaMismatch(f"column {name!r}: its {series.dtype} values do not all fit {dtype}, the "
                                 "signature's dtype, without loss")
    return out


def _plain(value: Any) -> Any:
    """A JSON-able scalar: numpy types as Python ones, NaN/NaT as null."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
