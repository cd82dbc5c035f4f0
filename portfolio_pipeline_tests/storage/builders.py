"""Row builders for storage tests (one place, so tests state only what they vary)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

DAY = date(2018, 2, 5)
NEXT_DAY = date(2018, 2, 6)
AS_OF = datetime(2018, 2, 5, 21, 0, tzinfo=UTC)


def position_row(
    key: str, *, session_date: date = DAY, broker: str = "demo", **overrides: Any
) -> dict[str, Any]:
    """A short SPX put position row (all NOT NULL columns filled)."""
    row: dict[str, Any] = {
        "session_date": session_date,
        "broker": broker,
        "account_id": "DU123",
        "position_key": key,
        "underlying": "SPX",
        "sec_type": "OPT",
        "expiry": date(2018, 3, 16),
        "strike": 2500.0,
        "right": "P",
        "multiplier": 100.0,
        "trading_class": "SPX",
        "currency": "USD",
        "quantity": -2.0,
        "avg_price": 12.35,
        "mark": 0.1 + 0.2,  # a float that does not round-trip through a decimal literal
        "market_value": -2.0 * 100.0 * (0.1 + 0.2),
        "underlying_price": 2648.94,
        "as_of": AS_OF,
    }
    row.update(overrides)
    return row


def stock_row(key: str, *, session_date: date = DAY, **overrides: Any) -> dict[str, Any]:
    """A long SPY stock position (option fields NULL)."""
    fields: dict[str, Any] = {
        "underlying": "SPY",
        "sec_type": "STK",
        "expiry": None,
        "strike": None,
        "right": None,
        "multiplier": 1.0,
        "trading_class": None,
        "quantity": 100.0,
        "avg_price": 270.1,
        "mark": 263.93,
        "market_value": 26393.0,
        "underlying_price": None,
    }
    fields.update(overrides)
    return position_row(key, session_date=session_date, **fields)
