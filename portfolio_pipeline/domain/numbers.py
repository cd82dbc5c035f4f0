"""Reading a stored or broker-supplied value as a finite number."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["finite_or_none"]


def finite_or_none(value: Any) -> float | None:
    """``float(value)`` when it is a finite number; None for None, NaN, +-inf and
    anything ``float`` does not take (a missing stored value, a broker's empty field)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
