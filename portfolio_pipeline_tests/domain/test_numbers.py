"""finite_or_none: the one reading of a value as a finite number."""

from __future__ import annotations

import math
from decimal import Decimal

import numpy as np
import pytest

from portfolio_pipeline.domain.numbers import finite_or_none


@pytest.mark.parametrize(("value", "expected"), [
    (1, 1.0), (-2.5, -2.5), ("3.25", 3.25), (Decimal("0.1"), 0.1), (np.float64(4.0), 4.0), (0, 0.0),
])
def test_finite_values_are_floats(value: object, expected: float) -> None:
    number = finite_or_none(value)
    assert type(number) is float
    assert number == expected


@pytest.mark.parametrize("value", [None, math.nan, math.inf, -math.inf, "nan", "", "n/a", object(), [1.0]])
def test_missing_non_finite_and_non_numbers_are_none(value: object) -> None:
    assert finite_or_none(value) is None
