"""Kubernetes resource quantities (``500m``, ``16Gi``, ``1.5``) parsed to exact Decimals for comparison."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from airflow_mlops.core.errors import SpecError

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
            "k": Decimal(10**3), "M": Decimal(10**6), "G": Decimal(10**9), "T": Decimal(10**12),
            "P": Decimal(10**15), "E": Decimal(10**18)}
_QUANTITY = re.compile(r"^(?P<num>[+]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?)(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]?)$")


def parse_quantity(value: str | int | float, field: str) -> Decimal:
    """Return the quantity as a Decimal in base units; raise SpecError naming ``field`` if malformed."""
    if isinstance(value, bool):
        raise SpecError(field, "a Kubernetes quantity such as '4', '500m' or '16Gi'", value)
    if isinstance(value, (int, float)):
        if value != value or value in (float("inf"), float("-inf")) or value < 0:
            raise SpecError(field, "a non-negative Kubernetes quantity", value)
        return Decimal(str(value))
    match = _QUANTITY.match(str(value).strip())
    if not match:
        raise SpecError(field, "a Kubernetes quantity such as '4', '500m' or '16Gi'", value)
    try:
        number = Decimal(match["num"])
    except InvalidOperation as err:  # pragma: no cover - the regex already guards this
        raise SpecError(field, "a Kubernetes quantity", value) from err
    suffix = match["suffix"]
    scale = Decimal(_BINARY[suffix]) if suffix in _BINARY else _DECIMAL[suffix]
    return number * scale


def format_quantity(value: str | int | float) -> str:
    """Render a quantity the way a manifest expects it (strings pass through, numbers become strings)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
