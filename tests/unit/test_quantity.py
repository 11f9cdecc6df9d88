"""Kubernetes quantity parsing (exact Decimals) and rendering."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_mlops.core.errors import SpecError
from airflow_mlops.core.gpu import GpuSpec
from airflow_mlops.core.quantity import format_quantity, parse_quantity

BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


@pytest.mark.parametrize(("value", "expected"), [
    ("500m", Decimal("0.5")),
    ("16Gi", Decimal(16 * 2**30)),
    ("1.5", Decimal("1.5")),
    ("2", Decimal(2)),
    (4, Decimal(4)),
    (0.25, Decimal("0.25")),
    (0, Decimal(0)),
    ("0", Decimal(0)),
    ("1k", Decimal(1000)),
    ("1Ki", Decimal(1024)),
    ("1M", Decimal(10**6)),
    ("1Mi", Decimal(2**20)),
    ("0.5Gi", Decimal(2**29)),
    ("1e3", Decimal(1000)),
    ("1E", Decimal(10**18)),  # exa, not a dangling exponent
    ("2E3", Decimal(2000)),
    ("100n", Decimal("1E-7")),
    (".5", Decimal("0.5")),
    ("+3", Decimal(3)),
    (" 2Gi ", Decimal(2 * 2**30)),
])
def test_parse(value: str | int | float, expected: Decimal) -> None:
    assert parse_quantity(value, "GpuSpec.cpu_request") == expected


@pytest.mark.parametrize("value", ["", "abc", "-1", "-500m", "1.5.5", "16GB", "16gi", "Gi", "1 Gi", "1Kii",
                                   "1m1", "0x10", "1,5", -1, -0.5, True, False])
def test_parse_errors_name_the_field(value: Any) -> None:
    with pytest.raises(SpecError) as exc:
        parse_quantity(value, "GpuSpec.memory_request")
    assert exc.value.field == "GpuSpec.memory_request"
    assert str(exc.value).startswith("GpuSpec.memory_request: ")
    assert "Kubernetes quantity" in str(exc.value)
    assert exc.value.got == value


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_parse_rejects_non_finite_floats(value: float) -> None:
    """Regression: NaN used to escape as decimal.InvalidOperation from GpuSpec, and inf rendered cpu: "inf"."""
    with pytest.raises(SpecError) as exc:
        parse_quantity(value, "GpuSpec.cpu_request")
    assert exc.value.field == "GpuSpec.cpu_request"
    with pytest.raises(SpecError) as exc:
        GpuSpec(cpu_request=value)
    assert exc.value.field == "GpuSpec.cpu_request"


@given(st.integers(0, 10**6), st.sampled_from(sorted(BINARY)))
def test_binary_suffixes(n: int, suffix: str) -> None:
    assert parse_quantity(f"{n}{suffix}", "f") == Decimal(n) * 2 ** BINARY[suffix]


@given(st.integers(0, 10**6), st.sampled_from(sorted(DECIMAL)))
def test_decimal_suffixes(n: int, suffix: str) -> None:
    assert parse_quantity(f"{n}{suffix}", "f") == Decimal(n).scaleb(DECIMAL[suffix])


@given(st.integers(0, 10**9))
def test_millis_and_plain_agree(millis: int) -> None:
    assert parse_quantity(f"{millis}m", "f") * 1000 == millis
    if millis % 1000 == 0:
        assert parse_quantity(f"{millis}m", "f") == parse_quantity(str(millis // 1000), "f")
        assert parse_quantity(millis // 1000, "f") == parse_quantity(f"{millis}m", "f")


@given(st.integers(1, 10**6))
def test_binary_is_larger_than_decimal(n: int) -> None:
    assert parse_quantity(f"{n}Gi", "f") > parse_quantity(f"{n}G", "f")
    assert parse_quantity(f"{n}Ki", "f") > parse_quantity(f"{n}k", "f")


def test_parse_is_exact_not_float() -> None:
    assert parse_quantity("0.1", "f") + parse_quantity("0.2", "f") == parse_quantity("300m", "f")
    assert isinstance(parse_quantity(4, "f"), Decimal)


@pytest.mark.parametrize(("value", "expected"), [
    (4, "4"), (4.0, "4"), (0.5, "0.5"), ("500m", "500m"), ("16Gi", "16Gi"), (1.25, "1.25"),
])
def test_format(value: str | int | float, expected: str) -> None:
    assert format_quantity(value) == expected


@given(st.integers(0, 10**6) | st.floats(min_value=0, max_value=1e6, allow_nan=False))
def test_format_round_trips_through_parse(value: int | float) -> None:
    rendered = format_quantity(value)
    assert isinstance(rendered, str)
    assert parse_quantity(rendered, "f") == parse_quantity(value, "f")
