"""Reserved keys and symbols every layer shares (one definition each).

- :data:`AGGREGATE`: the ``"*"`` that stands for "all of them" in a key column of a
  stored row (``broker``, ``account_id``, ``underlying``, ``position_key``,
  ``group_key``...): the book-wide or cross-account total row.
- :data:`VIX` and :data:`VIX3M`: the volatility indices the regime is read from; every
  snapshot quotes them (:data:`VOLATILITY_INDEX_SYMBOLS`).
"""

from __future__ import annotations

from typing import Final

__all__ = ["AGGREGATE", "VIX", "VIX3M", "VOLATILITY_INDEX_SYMBOLS"]

AGGREGATE: Final = "*"
"""Key value of an aggregate row: the total over every value of that column."""

VIX: Final = "VIX"
"""CBOE 30-day volatility index."""

VIX3M: Final = "VIX3M"
"""CBOE 3-month volatility index (the term-structure ratio VIX / VIX3M)."""

VOLATILITY_INDEX_SYMBOLS: Final[tuple[str, str]] = (VIX, VIX3M)
"""The volatility indices every snapshot and the market history carry."""
