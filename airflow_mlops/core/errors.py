"""The one error type specs raise: it names the field, the allowed values and what was given."""

from __future__ import annotations

from typing import Any


class SpecError(ValueError):
    """An invalid value in a spec, raised at construction (DAG parse time, or task start for templates).

    :param field: dotted name of the offending field, e.g. ``GpuSpec.gpus``.
    :param allowed: human-readable description of the allowed values.
    :param got: the value that was given.
    """

    def __init__(self, field: str, allowed: str, got: Any) -> None:
        self.field = field
        self.allowed = allowed
        self.got = got
        super().__init__(f"{field}: {allowed} (got {got!r})")
